"""Where a sync's rows go: the interface a store implements (`warehouse/raw_sink.py` for DuckDB). No I/O here.

A sync hands the sink Arrow tables shaped as `raw_tables.TABLES` says, each with a `raw_tables.FETCHED` column, and
asks it what the last sync left (`raw_tables.SyncState`, stored ids). A full sync's rows become visible all at once
(`FullLoad.publish`); an incremental sync's in one upsert (`RawSink.apply_changes`). Either way the cursor advances
with the rows, and a sync that fails or is killed leaves what the last successful sync left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import pyarrow as pa

from segflow_pipeline.raw_tables import SyncState


class DuplicateCounts(Protocol):
    """Objects that came back more than once, per table: identical copies dropped, keys whose versions differed
    (and a few of those keys, `"subscriptions sub_123"`)."""

    @property
    def dropped(self) -> Mapping[str, int]: ...

    @property
    def resolved(self) -> Mapping[str, int]: ...

    @property
    def examples(self) -> Sequence[str]: ...


class FullLoad(Protocol):
    """A full sync's rows on their way into the store: nothing of them is visible until `publish`."""

    def write(self, table: str, rows: pa.Table) -> None:
        """Take rows of `table` (the caller may not touch them again)."""

    def finish(self, paged_items: Iterable[str]) -> None:
        """Every row is written: store them, and derive the period of each subscription whose items were paged
        beyond the embedded ones (`paged_items`) from those items. Raises what storing failed with."""

    def abort(self) -> None:
        """Drop what was written (after a failure); the store stays as the last successful sync left it."""

    def publish(self, state: SyncState) -> DuplicateCounts:
        """At once: the integration's rows become the loaded ones and `state` the stored cursor."""


class RawSink(Protocol):
    """The store of one account's raw tables and its sync cursor."""

    def read_state(self, integration: str) -> SyncState | None: ...

    def event_ids_since(self, integration: str, since: dt.datetime) -> set[str]:
        """Ids of the stored events created at or after `since`."""

    def table_counts(self, integration: str) -> Mapping[str, int]:
        """Rows per raw table."""

    def stored_ids(self, table: str, integration: str) -> set[str]: ...

    def begin_full(self, integration: str) -> FullLoad: ...

    def apply_changes(self, integration: str, rows: Mapping[str, Sequence[pa.Table]],
                      reread: Mapping[str, Sequence[str]], deleted: Mapping[str, Sequence[str]],
                      period_from_items: Sequence[str], state: SyncState) -> DuplicateCounts:
        """At once: upsert an incremental sync's `rows` by primary key and store `state`. `reread`: ids per table of
        every object read again (their old rows, children and quarantine rows are replaced). `deleted`: ids per
        table Stripe reports deleted (flagged where the table keeps deleted objects, `raw_tables.DELETABLE`,
        removed elsewhere). `period_from_items`: as `FullLoad.finish`'s `paged_items`."""
