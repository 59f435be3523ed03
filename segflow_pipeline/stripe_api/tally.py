"""What a sync has read so far, per table and kind, and its progress callbacks. No I/O, no Dagster.

Every page's rows pass through `Tally.add`, which counts them, tags them with when they were fetched
(`raw_tables.FETCHED`) and hands them on to `write` (a full sync's sink, or an incremental sync's memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from segflow_pipeline.raw_tables import FETCHED
from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.lists import MAIN_TABLE

Progress = Callable[[str, int, int, float, "float | None"], None]
PROGRESS_EVERY_S = 2.0


class Tally:
    """Rows, quarantined objects and pages per table and kind; reports progress every PROGRESS_EVERY_S per kind."""

    def __init__(self, progress: Progress | None, started: float, write: Callable[[str, pa.Table], None]) -> None:
        self.progress = progress
        self.started = started
        self.write = write
        self.rows: dict[str, int] = {}
        self.quarantined: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.pages: dict[str, int] = {}
        self.objects_by_kind: dict[str, int] = {}
        self.reasons: dict[str, list[str]] = {}
        self._last_progress: dict[str, float] = {}

    def add(self, kind: str, rows: objects.Rows, pages: int, fetched: int | None = None) -> None:
        now = time.monotonic()
        self.pages[kind] = self.pages.get(kind, 0) + pages
        for table, data in rows.tables.items():
            self.rows[table] = self.rows.get(table, 0) + data.num_rows
            self.seconds[table] = now - self.started
            tag = pa.repeat(pa.scalar(fetched, pa.int64()), data.num_rows)
            self.write(table, data.append_column(FETCHED, tag))
        if rows.quarantined:
            main = MAIN_TABLE[kind]
            self.quarantined[main] = self.quarantined.get(main, 0) + rows.quarantined
            reasons = rows.tables["quarantine"].column("reason").to_pylist()
            self.reasons.setdefault(main, []).extend(reasons[: max(0, 3 - len(self.reasons.get(main, [])))])
        main_rows = rows.count(MAIN_TABLE[kind])
        self.objects_by_kind[kind] = self.objects_by_kind.get(kind, 0) + main_rows
        if self.progress is not None and now - self._last_progress.get(kind, 0.0) >= PROGRESS_EVERY_S:
            self._last_progress[kind] = now
            self.report_progress(kind, now)

    def report_progress(self, kind: str, now: float | None = None) -> None:
        if self.progress is None:
            return
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        done = self.objects_by_kind.get(kind, 0)
        self.progress(kind, done, self.pages.get(kind, 0), done / elapsed, None)
