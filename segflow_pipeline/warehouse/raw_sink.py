"""The DuckDB sink of a Stripe sync (`stripe_api/sink.py`): rows into schema `stripe` through `raw.py`. No Dagster.

A full sync's rows stream into staging tables that `raw.swap_full` renames into place with the new cursor, in one
transaction: written once, never copied. The appends are committed in groups of about WRITE_TRANSACTION_BYTES
while they load, so what DuckDB holds in memory stays bounded; the staging tables are invisible to readers
(`files.publish` skips them) until the swap. A failed load drops them; a killed one leaves them to the next sync,
which drops them (`raw.begin_staging`). An incremental sync's rows are upserted with the new cursor in one
transaction (`raw.apply_changes`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa

from segflow_pipeline.raw_tables import SyncState
from segflow_pipeline.warehouse import raw

# Rows buffered per table before an Arrow batch goes to DuckDB: bounds memory on very large accounts.
FLUSH_ROWS = 5_000
FLUSH_BYTES = 16 << 20
# Arrow batches (each at most FLUSH_ROWS rows or about FLUSH_BYTES) waiting for the DuckDB writer thread.
WRITE_QUEUE = 8
# Staged bytes per DuckDB transaction: larger writes faster, but DuckDB holds a transaction's rows in memory until
# it commits (benchmarks/bench_sync.py --rss-lines measures the peak).
WRITE_TRANSACTION_BYTES = 96 << 20


# DuckDB memory while a full sync loads, at most. Its writes go to the file and what it caches of them is read
# back only by the swap, but a smaller cache makes its commits pause longer: this bounds a large sync's memory
# without slowing it (benchmarks/bench_sync.py measures both; the README has the figures).
LOAD_MEMORY_LIMIT_MIB = 320.0
_UNITS = {"B": 1 / 2**20, "KB": 1000 / 2**20, "KIB": 1 / 1024, "MB": 1e6 / 2**20, "MIB": 1.0, "GB": 1e9 / 2**20,
          "GIB": 1024.0, "TB": 1e12 / 2**20, "TIB": 2.0**20}


def _mib(setting: str) -> float | None:
    """'488.2 MiB' (as DuckDB shows a size) → 488.2; None if not understood."""
    number, _, unit = setting.strip().partition(" ")
    try:
        return float(number) * _UNITS[unit.strip().upper()]
    except (ValueError, KeyError):
        return None


@contextlib.contextmanager
def bulk_loading(con: duckdb.DuckDBPyConnection, wal_limit: str = "256MB") -> Iterator[None]:
    """Settings for loading a large sync, restored after: fewer checkpoints (DuckDB checkpoints whenever its WAL
    passes 16 MB, which stalls appends of a large sync for most of a second), no insertion order, text storage,
    and at most LOAD_MEMORY_LIMIT_MIB of DuckDB memory."""
    previous = con.execute("select current_setting('checkpoint_threshold'), "
                           "current_setting('preserve_insertion_order'), current_setting('memory_limit')").fetchone()
    con.execute("set checkpoint_threshold = ?", [wal_limit])
    # Row order means nothing in these tables; keeping it makes large INSERT ... SELECTs hold more in memory.
    con.execute("set preserve_insertion_order = false")
    limit = _mib(previous[2])
    if limit is None or limit > LOAD_MEMORY_LIMIT_MIB:
        con.execute(f"set memory_limit = '{LOAD_MEMORY_LIMIT_MIB:.0f}MiB'")
    try:
        with raw.text_storage(con):
            yield
    finally:
        con.execute("set checkpoint_threshold = ?", [previous[0]])
        con.execute("set preserve_insertion_order = ?", [previous[1]])
        con.execute("set memory_limit = ?", [previous[2]])


class DuckDBRawSink:
    """The raw tables of schema `stripe` on one connection (`raw.ensure_tables` must have run)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def read_state(self, integration: str) -> SyncState | None:
        return raw.read_state(self.con, integration)

    def event_ids_since(self, integration: str, since: dt.datetime) -> set[str]:
        return raw.event_ids_since(self.con, integration, since)

    def table_counts(self, integration: str) -> dict[str, int]:
        return raw.table_counts(self.con, integration)

    def stored_ids(self, table: str, integration: str) -> set[str]:
        return raw.stored_ids(self.con, table, integration)

    def begin_full(self, integration: str) -> StagingLoad:
        return StagingLoad(self.con, integration)

    def apply_changes(self, integration: str, rows: Mapping[str, Sequence[pa.Table]],
                      reread: Mapping[str, Sequence[str]], deleted: Mapping[str, Sequence[str]],
                      period_from_items: Sequence[str], state: SyncState) -> raw.Duplicates:
        duplicates = raw.Duplicates()
        raw.apply_changes(self.con, integration, raw.Changes(rows=rows, reread=reread, deleted=deleted,
                                                             period_from_items=period_from_items),
                          state, duplicates)
        return duplicates


class StagingLoad:
    """A full sync's rows streamed into the staging tables (`raw.begin_staging`), under `bulk_loading`'s
    settings until `publish` or `abort`. One Arrow batch per table every FLUSH_ROWS rows.

    The appends run on a writer thread of their own, so the sync keeps folding results in (and requests keep
    flowing) while DuckDB writes or checkpoints; at most WRITE_QUEUE batches wait for it (bounded memory). The
    connection belongs to that thread until `finish` or `abort`.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, integration: str) -> None:
        self.con = con
        self.integration = integration
        self._settings = contextlib.ExitStack()
        self._settings.enter_context(bulk_loading(con))
        try:
            raw.begin_staging(con)
        except BaseException:
            self._settings.close()
            raise
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered_rows: dict[str, int] = {}
        self.buffered_bytes = 0
        self._writes: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="stripe-sync-writer", daemon=True)
        self._writer.start()

    def write(self, table: str, rows: pa.Table) -> None:
        self.buffers.setdefault(table, []).append(rows)
        self.buffered_rows[table] = self.buffered_rows.get(table, 0) + rows.num_rows
        self.buffered_bytes += rows.get_total_buffer_size()
        if self.buffered_rows[table] >= FLUSH_ROWS:
            self._flush_table(table)
        if self.buffered_bytes >= FLUSH_BYTES:
            self._flush()

    def finish(self, paged_items: Iterable[str]) -> None:
        """Write what is buffered, wait for the writer (raising its error), then fill the periods of subscriptions
        whose items were paged (`raw.fill_subscription_periods`)."""
        self._flush()
        self._close_writer()
        raw.fill_subscription_periods(self.con, self.integration, paged_items, in_staging=True)

    def abort(self) -> None:
        """Stop the writer, drop the staging tables and restore the connection's settings."""
        try:
            self._close_writer(check=False)
            with contextlib.suppress(duckdb.Error):  # else the next sync drops them (`raw.begin_staging`)
                raw.drop_staging(self.con)
        finally:
            self._settings.close()

    def publish(self, state: SyncState) -> raw.Duplicates:
        """`raw.swap_full`: the staged rows and `state` in place, in one transaction. On failure nothing changes
        and the staging tables are left to the next sync."""
        try:
            return raw.swap_full(self.con, self.integration, state)
        finally:
            self._settings.close()

    def _flush_table(self, table: str) -> None:
        parts = self.buffers.pop(table, [])
        self.buffered_rows.pop(table, None)
        if parts:
            self.buffered_bytes -= sum(p.get_total_buffer_size() for p in parts)
            if self._error is not None:
                raise self._error
            self._writes.put((table, parts))

    def _flush(self) -> None:
        for table in list(self.buffers):
            self._flush_table(table)
        self.buffered_bytes = 0

    def _write_loop(self) -> None:
        # Appends are grouped in transactions of about WRITE_TRANSACTION_BYTES: DuckDB then writes a group's rows
        # straight into the file once, instead of into its write-ahead log first and again at each checkpoint,
        # while what a transaction holds in memory until its commit stays bounded.
        pending_bytes = 0
        in_transaction = False
        while True:
            item = self._writes.get()
            if item is None or self._error is not None:
                if item is None:
                    if in_transaction and self._error is None:
                        self._end(commit=True)
                    return
                continue
            try:
                if not in_transaction:
                    self.con.execute("begin transaction")
                    in_transaction = True
                raw.append_staging(self.con, *item)
                pending_bytes += sum(part.get_total_buffer_size() for part in item[1])
                if pending_bytes >= WRITE_TRANSACTION_BYTES:
                    in_transaction, pending_bytes = False, 0
                    self._end(commit=True)
            except BaseException as exc:  # raised on the sync's thread at its next flush or at `finish`
                self._error = exc
                if in_transaction:
                    in_transaction = False
                    self._end(commit=False)

    def _end(self, commit: bool) -> None:
        try:
            self.con.execute("commit" if commit else "rollback")
        except BaseException as exc:
            if self._error is None:
                self._error = exc

    def _close_writer(self, check: bool = True) -> None:
        """Wait until everything handed to the writer is written; the connection is the caller's again."""
        if self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()
        if check and self._error is not None:
            raise self._error
