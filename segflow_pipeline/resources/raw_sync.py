"""A Stripe sync into DuckDB: `stripe_api.sync` reads, `warehouse.raw_sink` stores. No Dagster."""

from __future__ import annotations

from typing import Any

import duckdb

from segflow_pipeline.stripe_api import client
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.stripe_api.sync import SyncReport
from segflow_pipeline.stripe_api.sync import sync_account as sync_into
from segflow_pipeline.warehouse.raw import ConflictingVersions
from segflow_pipeline.warehouse.raw_sink import DuckDBRawSink


def sync_account(reader: StripeReader, con: duckdb.DuckDBPyConnection, integration: str = "default",
                 **options: Any) -> SyncReport:
    """`stripe_api.sync.sync_account` into the raw tables of schema `stripe` on `con` (`raw.ensure_tables` first)."""
    return sync_into(reader, DuckDBRawSink(con), integration, **options)


def heals_on_retry(exc: BaseException) -> bool:
    """Whether running the same sync again later can succeed: the one place that decides what a sync retries.

    Yes for what Stripe or the network does for a while (`client.heals_on_retry`: 429, 5xx, failed connections),
    and for two versions of one object read while it changed (`ConflictingVersions`: the next sync reads it again).
    No for everything else.
    """
    return client.heals_on_retry(exc) or isinstance(exc, ConflictingVersions)
