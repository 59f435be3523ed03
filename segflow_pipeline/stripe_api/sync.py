"""The sync: one Stripe account -> the raw tables, full or incremental, into a sink. No Dagster, no storage.

What belongs here: which lists and objects a sync reads, and when it is full or incremental. Reading them
concurrently is `crawler.py`; turning objects into rows is `objects.py`; storing rows (staging, swap, upsert, cursor)
is the sink's (`sink.py`; DuckDB: `warehouse/raw_sink.py`); HTTP, rate limits and retries are `client.py`.

Full sync. Every list is read whole in `created` windows (`windows.py`, `crawler.py`); rows stream into the sink,
which makes them visible all at once with the new cursor (`FullLoad.publish`).

Incremental sync. Events after the stored cursor (Stripe keeps 30 days) say which objects changed (`changes.py`);
their `data.object` is in the API version of the event, so the objects themselves are read again
(https://docs.stripe.com/api/events): objects created since the last sync with one windowed list per kind,
older ones by id, all concurrently, then upserted with the new cursor at once (`RawSink.apply_changes`).
Invoices are read with their customer and subscription expanded: a customer or subscription that came that way, as
it is now, is not read again by id (most changes create an invoice, so this saves about a request per change).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from segflow_pipeline.raw_tables import DELETABLE, TABLES, SyncState
from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.changes import changed_objects, read_plan
from segflow_pipeline.stripe_api.client import MAX_PAGES, StripeReader
from segflow_pipeline.stripe_api.crawler import Crawler, Task
from segflow_pipeline.stripe_api.keys import empty_account_warning
from segflow_pipeline.stripe_api.lists import BY_KIND, EVENTS, INVOICE_ITEMS, INVOICES_EXPANDED, LISTS
from segflow_pipeline.stripe_api.sink import DuplicateCounts, RawSink
from segflow_pipeline.stripe_api.tally import Progress, Tally

Mode = Literal["auto", "full", "incremental"]

EVENT_RETENTION_S = 30 * 86400  # https://docs.stripe.com/api/events: events of the last 30 days only
# A cursor this close to the retention limit is not trusted: events may expire while we page.
RETENTION_MARGIN_S = 3600
# Full-sync windows end this far after "now", so a clock ahead of ours does not hide recent objects.
CLOCK_SKEW_S = 86400


@dataclass
class SyncReport:
    """What a sync did: per table rows written, objects quarantined and seconds until its last page arrived."""

    mode: str
    tables: dict[str, dict[str, Any]]
    requests: int = 0
    retried_429: int = 0
    retried_5xx: int = 0
    retried_network: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def objects(self) -> int:
        """Rows written to every table but quarantine (the quarantine entry's rows are the quarantined objects)."""
        return sum(t["rows"] for name, t in self.tables.items() if name != "quarantine")


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def _epoch(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.timezone.utc).timestamp())


def choose_mode(mode: Mode, state: SyncState | None, now: float,
                source: str | None = None) -> Literal["full", "incremental"]:
    """`auto`: incremental from the stored cursor, full on first run, when events since may have expired, or
    when the cursor came from another account or key (`source`, see `SyncState`)."""
    fresh = (state is not None and state.last_sync_at is not None and state.last_event_created is not None
             and now - _epoch(state.last_sync_at) < EVENT_RETENTION_S - RETENTION_MARGIN_S
             and (source is None or state.source == source))
    if mode == "full":
        return "full"
    if mode == "incremental":
        if not fresh:
            raise ValueError(
                "An incremental sync needs a previous sync of this integration with the same key less than 30 "
                "days ago (Stripe keeps events for 30 days); run a full sync (mode='full' or 'auto') first.")
        return "incremental"
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'full' or 'incremental', not {mode!r}")
    return "incremental" if fresh else "full"


def source_of(reader: StripeReader) -> str:
    """The account a reader reads, as stored with the cursor: key mode and masked key (never the key)."""
    return f"{reader.key_info.mode}:{reader.key_info.masked}"


def sync_account(reader: StripeReader, sink: RawSink, integration: str = "default",
                 mode: Mode = "auto", progress: Progress | None = None, concurrency: int = 32,
                 now: float | None = None, max_pages: int = MAX_PAGES) -> SyncReport:
    """Bring the integration's raw tables in `sink` up to date with the account `reader` reads.

    `StripeSetupError` (bad key, missing permission) propagates unchanged; a sync that fails or is killed leaves
    the sink as the last successful sync left it. `now` (epoch seconds, default: the current time) is the run's
    moment: the event window and the end of the `created` windows are counted from it, and it is stored as the time
    of this sync. Paging stops with `PagingError` when it would not end, or after `max_pages` pages that say
    has_more.
    """
    started_wall = time.time() if now is None else float(now)
    started = time.monotonic()
    before = reader.stats.as_dict()
    source = source_of(reader)
    chosen = choose_mode(mode, sink.read_state(integration), started_wall, source)
    if chosen == "full":
        tally, duplicates, warnings = _full(reader, sink, integration, progress, concurrency, started_wall, started,
                                            max_pages)
    else:
        tally, duplicates, warnings = _incremental(reader, sink, integration, progress, concurrency, started_wall,
                                                   started, max_pages)
    after = reader.stats.as_dict()
    report = SyncReport(
        mode=chosen,
        tables={table: {"rows": tally.rows.get(table, 0), "quarantined": tally.quarantined.get(table, 0),
                        "seconds": round(tally.seconds.get(table, 0.0), 3),
                        "duplicates_dropped": duplicates.dropped.get(table, 0),
                        "duplicates_resolved": duplicates.resolved.get(table, 0)}
                for table in TABLES},
        warnings=warnings,
        seconds=time.monotonic() - started,
        **{name: after[name] - before[name] for name in before},
    )
    resolved = sum(duplicates.resolved.values())
    if resolved:
        report.warnings.append(
            f"{resolved} object(s) came back in two versions; kept the newer one (later created, else fetched "
            f"later) of each: {', '.join(duplicates.examples)}")
    for table, count in sorted(tally.quarantined.items()):
        reasons = "; ".join(tally.reasons.get(table, []))
        report.warnings.append(f"{count} {table} object(s) could not be read and are in stripe.quarantine "
                               f"(e.g. {reasons})")
    return report


def _full(reader: StripeReader, sink: RawSink, integration: str, progress: Progress | None, concurrency: int,
          started_wall: float, started: float, max_pages: int) -> tuple[Tally, DuplicateCounts, list[str]]:
    hi = int(started_wall) + CLOCK_SKEW_S
    # Stripe drops events older than 30 days itself; a day more tolerates clocks that disagree.
    events_lo = int(started_wall) - EVENT_RETENTION_S - CLOCK_SKEW_S
    load = sink.begin_full(integration)
    tally = Tally(progress, started, load.write)
    crawler = Crawler(reader, integration, concurrency, tally, max_pages)
    crawler.keep_events = False
    crawler.offload = True
    tasks = [crawler.window(spec, 0, hi, None) for spec in LISTS]
    tasks.append(crawler.window(EVENTS, events_lo, hi, None))
    try:
        try:
            crawler.run(tasks)
        finally:
            crawler.close()
        load.finish(crawler.paged_items)
    except BaseException:
        load.abort()  # the first error is the one to report
        raise
    for spec in (*LISTS, EVENTS):
        tally.report_progress(spec.kind)
    newest = crawler.newest_event
    state = SyncState(
        integration=integration,
        last_event_id=newest[1] if newest else None,
        # Without events yet, start the next incremental a little before this sync started.
        last_event_created=_utc(newest[0]) if newest else _utc(started_wall - 300),
        last_full_sync_at=_utc(started_wall), last_sync_at=_utc(started_wall), last_mode="full",
        source=source_of(reader),
    )
    duplicates = load.publish(state)
    warnings: list[str] = list(crawler.notes)
    if not tally.rows.get("subscriptions") and not tally.quarantined.get("subscriptions"):
        warnings.append(empty_account_warning(reader.key_info))
    return tally, duplicates, warnings


def _incremental(reader: StripeReader, sink: RawSink, integration: str, progress: Progress | None,
                 concurrency: int, started_wall: float, started: float,
                 max_pages: int) -> tuple[Tally, DuplicateCounts, list[str]]:
    state = sink.read_state(integration)
    assert state is not None and state.last_event_created is not None
    rows: dict[str, list[pa.Table]] = {}  # everything re-read, upserted at once at the end
    tally = Tally(progress, started, lambda table, data: rows.setdefault(table, []).append(data))
    crawler = Crawler(reader, integration, concurrency, tally, max_pages)
    hi = int(started_wall) + CLOCK_SKEW_S
    since = _epoch(state.last_event_created)
    # created[gte] the cursor's second: events of that second we already saw are read again, harmlessly.
    crawler.run([crawler.window(EVENTS, since, hi, None)])
    # Events already stored were acted on by the sync that stored them (it read the objects after listing them).
    known = sink.event_ids_since(integration, state.last_event_created)
    changes = changed_objects(e for e in crawler.events if e[1] not in known)

    # Invoices first, with their customers and subscriptions expanded; customers and subscriptions that came that
    # way need no read of their own, so they are planned once those invoices are in.
    listed: dict[str, int] = {}
    stored = sink.table_counts(integration)

    def read_again(kinds: Iterable[str]) -> list[Task]:
        tasks: list[Task] = []
        for kind in kinds:
            spec = INVOICES_EXPANDED if kind == "invoices" else BY_KIND[kind]
            have = crawler.embedded.get(kind, set())
            ids = {object_id: created for object_id, created in changes.reread[kind].items() if object_id not in have}
            plan = read_plan(ids, since, stored.get(kind, 0))
            if plan is not None:
                listed[kind] = plan
                tasks.append(crawler.window(spec, plan, hi, None))
            tasks.extend(Task(spec, spec.retrieve_path(object_id), dict(spec.retrieve_params), retrieve=object_id,
                              context=dict(spec.context))
                         for object_id, created in ids.items() if plan is None or created is None or created < plan)
        return tasks

    try:
        crawler.run(read_again(kind for kind in changes.reread if kind not in objects.EXPANDED_KINDS))
        crawler.run(read_again(kind for kind in changes.reread if kind in objects.EXPANDED_KINDS))
        crawler.run([crawler.window(INVOICE_ITEMS, 0, hi, None)])
    finally:
        crawler.close()

    warnings: list[str] = []
    reread = {kind: set(ids) for kind, ids in changes.reread.items()}
    for kind, ids in crawler.embedded.items():
        reread.setdefault(kind, set()).update(ids)
    for kind in listed:
        reread[kind].update(id_ for t in rows.get(kind, []) for id_ in t.column("id").to_pylist())
    deleted = {kind: set(ids) for kind, ids in changes.deleted.items()}
    # Pending invoice items listed before and not now were invoiced (or deleted): no longer pending.
    pending_now = {id_ for t in rows.get(INVOICE_ITEMS.kind, []) for id_ in t.column("id").to_pylist()}
    deleted[INVOICE_ITEMS.kind] = sink.stored_ids(INVOICE_ITEMS.kind, integration) - pending_now
    for kind, ids in crawler.deleted.items():
        if kind == "subscriptions":
            # Subscriptions are never deleted, only canceled; keep what we have and say so.
            warnings.append(f"{len(ids)} subscription(s) could not be read again (404), kept as last synced: "
                            f"{sorted(ids)[:5]}")
            reread[kind] -= ids
            continue
        deleted.setdefault(kind, set()).update(ids)
    for kind, ids in deleted.items():
        if kind in DELETABLE:
            # A deleted object is flagged on the row we have; its last known fields stay.
            reread.get(kind, set()).difference_update(ids)
    newest = crawler.newest_event
    if newest is not None and newest[0] >= since:
        cursor_id, cursor_created = newest[1], _utc(newest[0])
    else:
        cursor_id, cursor_created = state.last_event_id, state.last_event_created
    new_state = SyncState(
        integration=integration, last_event_id=cursor_id, last_event_created=cursor_created,
        last_full_sync_at=state.last_full_sync_at, last_sync_at=_utc(started_wall), last_mode="incremental",
        source=state.source,
    )
    duplicates = sink.apply_changes(
        integration, rows, reread={k: sorted(v) for k, v in reread.items()},
        deleted={k: sorted(v) for k, v in deleted.items()}, period_from_items=crawler.paged_items, state=new_state)
    for kind in {*reread, *deleted, "events"}:
        tally.report_progress(kind)
    return tally, duplicates, warnings
