"""A Stripe sync into DuckDB: `stripe_api.sync` reads, `warehouse.raw_sink` stores. No Dagster."""

from __future__ import annotations

import duckdb

from segflow_pipeline.stripe_api import client, sync
from segflow_pipeline.stripe_api.client import MAX_PAGES, StripeReader
from segflow_pipeline.stripe_api.tally import Progress
from segflow_pipeline.warehouse.raw import ConflictingVersions
from segflow_pipeline.warehouse.raw_sink import DuckDBRawSink


def sync_account(reader: StripeReader, con: duckdb.DuckDBPyConnection, integration: str = "default",
                 mode: sync.Mode = "auto", progress: Progress | None = None, concurrency: int = 32,
                 now: float | None = None, max_pages: int = MAX_PAGES) -> sync.SyncReport:
    """`stripe_api.sync.sync_account` into the raw tables of schema `stripe` on `con` (`raw.ensure_tables` first)."""
    return sync.sync_account(reader, DuckDBRawSink(con), integration, mode=mode, progress=progress,
                             concurrency=concurrency, now=now, max_pages=max_pages)


def heals_on_retry(exc: BaseException) -> bool:
    """Whether running the same sync again later can succeed: the one place that decides what a sync retries.

    Yes for what Stripe or the network does for a while (`client.heals_on_retry`: 429, 5xx, failed connections),
    and for two versions of one object read while it changed (`ConflictingVersions`: the next sync reads it again).
    No for everything else.
    """
    return client.heals_on_retry(exc) or isinstance(exc, ConflictingVersions)
