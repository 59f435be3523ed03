"""The sync engine: one Stripe account → the raw tables of schema `stripe`, full or incremental. No Dagster.

What belongs here: which lists and objects to read, in what order and how concurrently, and when a sync is full
or incremental. Turning objects into rows is `objects.py`; storing them (staging, swap, upsert, cursor) is
`warehouse/raw.py`; HTTP, rate limits and retries are `client.py`.

Full sync. Every list is split into half-open `created` windows [a, b) (`created[gte]=a&created[lt]=b`), so
objects sharing one second at a boundary fall in exactly one window. A window pages with `starting_after`; when the
rest of a window looks larger than a couple of pages (or workers are idle), it is split into windows growing
geometrically back in time: the part holding the cursor continues paging, the others start fresh. A page ending in
a crowded second (an import, a batch of renewals) makes that second a window of its own: it can only be paged one
page after another, so it goes ahead of other work (`_Pending`). Children beyond what a parent embeds (invoice
lines past the 10 embedded, subscription items past the embedded ones) are paged as tasks of their own.
Threads of this process only fetch: response bodies become rows in helper processes (`_HelperPool`), and a writer
thread appends them in Arrow batches to staging tables, inside the one transaction that ends with the swap
(`raw.begin_staging`, `raw.swap_full`).

Incremental sync. Events after the stored cursor (Stripe keeps 30 days) say which objects changed; their
`data.object` is in the API version of the event, so the objects themselves are read again
(https://docs.stripe.com/api/events): objects created since the last sync with one windowed list per kind,
older ones by id, all concurrently, then upserted with the new cursor in one transaction (`raw.apply_changes`).
Invoices are read with their customer and subscription expanded: a customer or subscription that came that way, as
it is now, is not read again by id (most changes create an invoice, so this saves about a request per change).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import itertools
import os
import pickle
import struct
import subprocess
import sys
import queue
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import orjson
import pyarrow as pa

from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.client import MAX_PAGES, PageGuard, PagingError, StripeAPIFailure, StripeReader
from segflow_pipeline.stripe_api.errors import UnexpectedBody
from segflow_pipeline.stripe_api.keys import empty_account_warning
from segflow_pipeline.stripe_api.row_helper import serve_conversions  # noqa: F401  (the helper's entry point)
from segflow_pipeline.stripe_api.tables import TABLES
from segflow_pipeline.warehouse import raw

Progress = Callable[[str, int, int, float, "float | None"], None]
Mode = Literal["auto", "full", "incremental"]

EVENT_RETENTION_S = 30 * 86400  # https://docs.stripe.com/api/events: events of the last 30 days only
# A cursor this close to the retention limit is not trusted: events may expire while we page.
RETENTION_MARGIN_S = 3600
PAGE_SIZE = 100
# Rows buffered per table before an Arrow batch goes to DuckDB: bounds memory on very large accounts.
FLUSH_ROWS = 5_000
FLUSH_BYTES = 16 << 20
PROGRESS_EVERY_S = 2.0
# Full-sync windows end this far after "now", so a clock ahead of ours does not hide recent objects.
CLOCK_SKEW_S = 86400
# At most this many windows from one split; more come from splitting those windows later.
MAX_SPLIT = 8
# The rest of a window is split when it looks larger than this many pages, whether or not workers are idle.
SPLIT_ABOVE_PAGES = 2
# A page whose last this many objects share one second ends in a crowded second: paged on as a window of its own.
DENSE_SECOND = 20
# A full sync that reaches this many pages starts the row-building helper process.
OFFLOAD_AFTER_PAGES = 50
# Helper processes started then. Every page then waits for a helper: the sync process only fetches and writes,
# so its GIL is no longer the limit. One is enough at 100 req/s (about 0.25 of a core); a second one cost 128 MiB
# and gave no measurable speed (benchmarks/bench_sync.py measures both throughput and peak RSS).
HELPERS = 1
# Pages fetched but not yet written to DuckDB, at most. Writing is the slower side of a large sync, so workers
# wait here whatever the bound; a larger one only holds more rows in memory (about 0.5 MB per 100-invoice page).
MAX_QUEUED_RESULTS = 16
# Arrow batches (each at most FLUSH_ROWS rows or about FLUSH_BYTES) waiting for the DuckDB writer thread.
WRITE_QUEUE = 8
# Staged rows per DuckDB transaction: larger writes faster, but DuckDB holds a transaction's rows in memory until it
# commits (one transaction for a 250k-line sync took 2 GiB; see benchmarks/bench_sync.py --rss-lines).
WRITE_TRANSACTION_BYTES = 96 << 20


@dataclass(frozen=True)
class ListSpec:
    """One Stripe list the full sync reads completely."""

    kind: str                      # key of objects.EXTRACTORS; also the main table
    path: str
    params: dict[str, Any]
    resource: str                  # what a restricted key needs to read it (error messages)
    retrieve_params: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)   # handed to `objects.page_rows` with every page

    def retrieve_path(self, object_id: str) -> str:
        return f"{self.path}/{urllib.parse.quote(object_id, safe='')}"


# Prorations a subscription update created that no invoice holds yet (https://docs.stripe.com/api/invoiceitems/list):
# they date a change until the next renewal invoices them. The pending set is small and shrinks when items are
# invoiced (no event says so), so every sync, full or incremental, lists it whole.
INVOICE_ITEMS = ListSpec("invoice_items", "/v1/invoiceitems", {"pending": "true"}, "invoices")
# Expansion depth is at most 4 and `data.` counts as one level (https://docs.stripe.com/expand#lists):
# data.items.data.discounts is the deepest we may ask for. Tiers only come when expanded.
LISTS: tuple[ListSpec, ...] = (
    ListSpec("customers", "/v1/customers", {}, "customers"),
    ListSpec("products", "/v1/products", {}, "products"),
    ListSpec("prices", "/v1/prices", {"expand": ["data.tiers"]}, "prices", {"expand": ["tiers"]}),
    ListSpec("coupons", "/v1/coupons", {}, "coupons"),
    # Without status, canceled and incomplete_expired subscriptions are hidden.
    ListSpec("subscriptions", "/v1/subscriptions",
             {"status": "all", "expand": ["data.discounts", "data.items.data.discounts"]}, "subscriptions",
             {"expand": ["discounts", "items.data.discounts"]}),
    ListSpec("invoices", "/v1/invoices", {}, "invoices"),
    INVOICE_ITEMS,
)
EVENTS = ListSpec("events", "/v1/events", {}, "events")
# An incremental sync reads invoices with their customer and subscription expanded: invoices are what most
# changes create, and their customers and subscriptions changed with them (`objects.take_expanded`).
INVOICES_EXPANDED = ListSpec(
    "invoices", "/v1/invoices", {"expand": [f"data.{path}" for path in objects.INVOICE_EXPANSIONS]}, "invoices",
    {"expand": list(objects.INVOICE_EXPANSIONS)}, context={"expanded": True})
BY_KIND = {spec.kind: spec for spec in (*LISTS, EVENTS)}
ITEMS = ListSpec("subscription_items", "/v1/subscription_items", {"expand": ["data.discounts"]}, "subscriptions")
LINES = ListSpec("invoice_lines", "/v1/invoices/{}/lines", {}, "invoices")
# Table each kind's quarantine rows are counted under.
MAIN_TABLE = {**{spec.kind: spec.kind for spec in (*LISTS, EVENTS)},
              "subscription_items": "subscription_items", "invoice_lines": "invoice_lines"}


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


# ---------------------------------------------------------------------------------------------------------------
# Windows


def split_window(lo: int, hi: int, parts: int = 2) -> list[tuple[int, int]]:
    """Split the half-open window [lo, hi) into at most `parts` adjacent, non-empty half-open windows.

    Together they cover [lo, hi) exactly once, so an object created at second s (lo <= s < hi) is in exactly one.
    """
    if hi <= lo:
        return []
    parts = max(1, min(parts, hi - lo))
    bounds = [lo + (hi - lo) * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def remaining_window(lo: int, last_created: int) -> tuple[int, int]:
    """After a page whose last (oldest) object was created at `last_created`, what is left of [lo, hi).

    Lists are newest first, so the rest is older than or as old as that object: [lo, last_created + 1), paged on
    with `starting_after` (objects of the same second not yet returned come after the cursor).
    """
    return lo, last_created + 1


def split_remaining(lo: int, last_created: int, newest_created: int, parts: int,
                    pages_per_part: int = 4) -> list[tuple[int, int]]:
    """Split what is left of a window after a page, [lo, last_created + 1), into at most `parts` windows.

    Newest first; the first window holds `last_created`, so it goes on with the cursor. Sizes grow geometrically
    back in time from the span one page just covered (newest_created - last_created): recent windows hold about
    `pages_per_part`, 2×, 4×... pages at the density just seen, the last one reaches `lo`, however far back
    (accounts grow, so history is sparser, and an empty window costs one request).
    """
    hi = last_created + 1
    span = max(1, newest_created - last_created) * pages_per_part
    windows: list[tuple[int, int]] = []
    while hi > lo and len(windows) < max(1, parts) - 1:
        a = max(lo, hi - span)
        windows.append((a, hi))
        hi, span = a, span * 2
    if hi > lo:
        windows.append((lo, hi))
    return windows


def window_params(base: dict[str, Any], lo: int, hi: int, cursor: str | None) -> dict[str, Any]:
    params = {**base, "limit": PAGE_SIZE, "created": {"gte": lo, "lt": hi}}
    if cursor:
        params["starting_after"] = cursor
    return params


# ---------------------------------------------------------------------------------------------------------------
# Tasks run by worker threads; results are folded in by the thread that owns the DuckDB connection.


@dataclass
class _Task:
    spec: ListSpec
    path: str
    params: dict[str, Any]
    lo: int | None = None          # windowed list: [lo, hi)
    hi: int | None = None
    context: dict[str, Any] = field(default_factory=dict)   # children: parent ids; retrieve: object id
    retrieve: str | None = None    # retrieve one object by id
    left: float = 0.0              # pages the window seemed to hold after the previous page (scheduling only)


@dataclass
class _Result:
    task: _Task
    rows: objects.Rows
    has_more: bool = False
    last_id: str | None = None
    last_created: int | None = None
    newest_created: int | None = None
    last_second: int = 0
    children: list[_Task] = field(default_factory=list)
    paged_items: list[str] = field(default_factory=list)
    deleted: str | None = None     # retrieve: the object is gone (404 or `deleted: true`)
    events: list[tuple] = field(default_factory=list)
    embedded: dict[str, list[str]] = field(default_factory=dict)   # objects read inside others (expanded)
    fetched: int | None = None     # when: `raw.fetch_tag(request started, answer arrived)` on the sync's clock


def _children(kind: str, page: objects.Page) -> tuple[list[_Task], list[str]]:
    """Tasks paging what the page's objects did not embed: items past a subscription's, lines past 10."""
    tasks: list[_Task] = []
    paged_items: list[str] = []
    for parent, last_child, customer in page.truncated:
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if last_child:
            params["starting_after"] = last_child
        if kind == "subscriptions":
            tasks.append(_Task(ITEMS, ITEMS.path, {**ITEMS.params, **params, "subscription": parent},
                               context={"subscription": parent}))
            paged_items.append(parent)
        else:
            path = LINES.path.format(urllib.parse.quote(parent, safe=""))
            tasks.append(_Task(LINES, path, {**LINES.params, **params},
                               context={"invoice": parent, "customer": customer}))
    return tasks, paged_items


class _ConversionProcess:
    """A child Python that turns response bodies into rows (`objects.page_rows`) on another core.

    Parsing and row building hold the GIL for 4-16 ms per 100-invoice page; at Stripe's 100 req/s that is more than
    the core the HTTP threads share. The child gets length-prefixed pickles of (kind, body, ...) on stdin and
    answers pickled Pages on stdout, in order; it exits when its stdin closes (also when the parent is killed).
    """

    def __init__(self) -> None:
        code = "from segflow_pipeline.stripe_api.row_helper import serve_conversions; serve_conversions()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def send(self, payload: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(struct.pack("<Q", len(payload)) + payload)
        stdin.flush()

    def receive(self) -> bytes:
        stdout = self.proc.stdout
        assert stdout is not None
        header = stdout.read(8)
        if len(header) < 8:
            raise OSError("the row-building process ended")
        size = struct.unpack("<Q", header)[0]
        answer = stdout.read(size)
        if len(answer) < size:
            raise OSError("the row-building process ended mid-answer")
        return answer

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Job:
    """One page handed to the helper pool; the fetching thread waits on it (without the GIL)."""

    __slots__ = ("payload", "done", "answer", "error")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.done = threading.Event()
        self.answer: bytes | None = None
        self.error: BaseException | None = None


class _HelperPool:
    """Row-building helper processes fed from one job queue, each kept busy with up to PIPELINE jobs in flight.

    Per helper a sender thread writes jobs to its stdin and a receiver thread reads the answers in order, so a
    helper starts on the next page while the previous answer is still on its way back, and never waits for a
    thread of this process to get the GIL. A helper that fails hands its jobs back as errors; the callers then
    build those rows themselves.
    """

    PIPELINE = 2

    def __init__(self, size: int) -> None:
        self.jobs: queue.PriorityQueue = queue.PriorityQueue()  # (urgency, seq, job); None-jobs stop senders
        self._seq = itertools.count()
        self.helpers: list[_ConversionProcess] = []
        self.alive = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        for _ in range(size):
            helper = _ConversionProcess()
            self.helpers.append(helper)
            in_flight: deque[_Job] = deque()
            slots = threading.Semaphore(self.PIPELINE)
            self.alive += 1
            for target in (self._sender, self._receiver):
                thread = threading.Thread(target=target, args=(helper, in_flight, slots), daemon=True,
                                          name=f"stripe-rows-{target.__name__.strip('_')}")
                thread.start()
                self._threads.append(thread)

    def convert(self, kind: str, body: bytes, integration: str, context: dict, single: bool,
                urgent: bool = False) -> objects.Page | None:
        """The page's rows built by a helper; None when no helper is left (build them here then). Urgent pages
        (a run of pages waits for them) go ahead of the others."""
        if not self.alive:
            return None
        job = _Job(pickle.dumps((kind, body, integration, context, single), protocol=pickle.HIGHEST_PROTOCOL))
        self.jobs.put((0 if urgent else 1, next(self._seq), job))
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.answer is not None
        status, value = pickle.loads(job.answer)
        if status == "unexpected":
            raise UnexpectedBody(value)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def _sender(self, helper: _ConversionProcess, in_flight: deque, slots: threading.Semaphore) -> None:
        while True:
            slots.acquire()
            job = self.jobs.get()[-1]
            if job is None:
                return
            with self._lock:
                in_flight.append(job)
            try:
                helper.send(job.payload)
            except (OSError, ValueError) as exc:
                self._fail(helper, in_flight, exc)
                return
            job.payload = b""

    def _receiver(self, helper: _ConversionProcess, in_flight: deque, slots: threading.Semaphore) -> None:
        while True:
            try:
                answer = helper.receive()
            except (OSError, ValueError) as exc:
                self._fail(helper, in_flight, exc)
                return
            with self._lock:
                job = in_flight.popleft()
            job.answer = answer
            job.done.set()
            slots.release()

    def _fail(self, helper: _ConversionProcess, in_flight: deque, exc: BaseException) -> None:
        with self._lock:
            if helper in self.helpers:
                self.helpers.remove(helper)
                self.alive -= 1
            failed = list(in_flight)
            in_flight.clear()
        for job in failed:
            job.error = OSError(f"a row-building helper process failed ({exc})")
            job.done.set()
        if not self.alive:
            # Nobody takes jobs any more: hand back what is still queued.
            while True:
                try:
                    job = self.jobs.get_nowait()[-1]
                except queue.Empty:
                    return
                if job is not None:
                    job.error = OSError(f"no row-building helper process left ({exc})")
                    job.done.set()

    def close(self) -> None:
        helpers = list(self.helpers)
        self.alive = 0
        for _ in self._threads:
            self.jobs.put((2, next(self._seq), None))
        for helper in helpers:
            helper.close()
        for thread in self._threads:
            thread.join(timeout=10)


class _Pending:
    """Tasks not started yet, in the order that keeps a sync short (Stripe pages a list one page per request, so
    the sync lasts at least as long as its longest run of pages, however many requests run at once):

    0. the next page of a window one second wide: it cannot be split, so it is a run to keep going;
    1. the first page of a window: it shows how many objects the window holds, and big windows are split;
    2. children (lines, items past the embedded ones) and objects read by id;
    3. the next page of any other window, those that seemed to hold the fewest pages first: a crowded second
       hidden in a window that looked small is found sooner (20k subscriptions: 44.6 s against 45.1 s for the
       largest first and 46.5 s for first in, first out).
    Ties go first in, first out.
    """

    def __init__(self, tasks: Iterable[_Task] = ()) -> None:
        self._heap: list[tuple[int, float, int, _Task]] = []
        self._seq = 0
        self.extend(tasks)

    @staticmethod
    def priority(task: _Task) -> tuple[int, float]:
        if task.lo is None or task.hi is None:
            return 2, 0.0
        if "starting_after" not in task.params:
            return 1, 0.0
        return (0, 0.0) if task.hi - task.lo <= 1 else (3, task.left)

    def extend(self, tasks: Iterable[_Task]) -> None:
        for task in tasks:
            self._seq += 1
            heapq.heappush(self._heap, (*self.priority(task), self._seq, task))

    def pop(self) -> _Task:
        return heapq.heappop(self._heap)[-1]

    def __len__(self) -> int:
        return len(self._heap)


class _Engine:
    """Runs tasks on a thread pool and folds results into a sink, splitting windows while workers are idle."""

    def __init__(self, reader: StripeReader, integration: str, concurrency: int, sink: "_Sink",
                 max_pages: int = MAX_PAGES) -> None:
        self.reader = reader
        # Every chain of pages ends: a cursor is used once, never ends its own page, and the sync reads at most
        # `max_pages` pages that say has_more.
        self.guard = PageGuard(reader.api_base, max_pages)
        self._clock = itertools.count(1)  # next() is atomic under the GIL: one clock for every worker
        self.integration = integration
        self.concurrency = max(1, concurrency)
        self.sink = sink
        self.paged_items: list[str] = []
        self.deleted: dict[str, set[str]] = {}
        self.embedded: dict[str, set[str]] = {}
        self._convert_slots = threading.BoundedSemaphore(2)
        # Large syncs build rows in helper processes (other cores); small ones never start them.
        self.offload = False
        self._pool: _HelperPool | None = None
        self._pool_lock = threading.Lock()
        self._closed = False
        self._pool_started = False
        self._pages = 0
        self.notes: list[str] = []
        self.keep_events = True        # a full sync only needs the newest event (its cursor)
        self.events: list[tuple] = []
        self.newest_event: tuple[int, str] | None = None

    # -- worker side ------------------------------------------------------------------------------------------
    def _run(self, task: _Task) -> _Result:
        single = task.retrieve is not None
        # The sync's clock orders fetches: an object listed twice keeps the version fetched later, when one request
        # started after the other's answer arrived (`raw.resolve_duplicates`).
        started, arrived = next(self._clock), [0]

        def decode(body: bytes) -> objects.Page:
            arrived[0] = next(self._clock)
            return self._page(task, body, single)

        try:
            page = self.reader.get(task.path, task.params, resource=task.spec.resource, decode=decode)
        except StripeAPIFailure as exc:
            if not single or exc.http_status != 404:
                raise
            # Deleted prices, products, coupons and draft invoices are gone: 404 resource_missing.
            return _Result(task, objects.Rows(), deleted=task.retrieve)
        if page.deleted:
            return _Result(task, objects.Rows(), deleted=task.retrieve)
        if page.has_more and page.last_id is not None:
            self._check_advance(task, page)
        children, paged_items = _children(task.spec.kind, page)
        return _Result(task, page.rows, has_more=page.has_more, last_id=page.last_id,
                       last_created=page.last_created, newest_created=page.newest_created,
                       last_second=page.last_second, children=children,
                       paged_items=paged_items, events=page.events, embedded=page.embedded,
                       fetched=raw.fetch_tag(started, arrived[0]))

    def _check_advance(self, task: _Task, page: objects.Page) -> None:
        """Refuse a page that would make its chain go on forever (`PageGuard`), or that lies outside the window it
        was asked for: a server ignoring `created` filters would hand every window the whole list."""
        self.guard.next_cursor(task.path, task.params.get("starting_after"), page.last_id)
        created = page.last_created
        if task.lo is not None and task.hi is not None and created is not None and not task.lo <= created < task.hi:
            raise PagingError(
                f"Stripe GET {task.path} ignores its created filter: asked for objects created in [{task.lo}, "
                f"{task.hi}), its page ends with {page.last_id} created at {created}. Stopped paging: the same "
                f"request gets the same answer. Check that STRIPE_API_BASE ({self.reader.api_base}) is Stripe's API.")

    def _page(self, task: _Task, body: bytes, single: bool) -> objects.Page:
        if self.offload and not self._pool_started:
            with self._pool_lock:
                self._pages += 1
                start = self._pages >= OFFLOAD_AFTER_PAGES and not self._pool_started
                self._pool_started = self._pool_started or start
            if start:
                threading.Thread(target=self._start_pool, daemon=True).start()
        pool = self._pool
        if pool is not None:
            try:
                page = pool.convert(task.spec.kind, body, self.integration, task.context, single,
                                    urgent=_Pending.priority(task)[0] == 0)
            except (OSError, RuntimeError, EOFError, pickle.PickleError) as exc:
                note = f"a row-building helper process failed ({exc}); its pages were built in the sync process"
                if note not in self.notes:
                    self.notes.append(note)
                page = None
            if page is not None:
                return page
        # The GIL lets one thread convert at a time anyway; the slots keep other threads from holding parsed
        # pages (a 100-invoice page is ~15 MB of dicts) while they wait for it.
        with self._convert_slots:
            return objects.page_rows(task.spec.kind, body, self.integration, task.context, single=single)

    def _start_pool(self) -> None:
        try:
            pool = _HelperPool(HELPERS)
        except OSError as exc:
            self.notes.append(f"rows were built in the sync process: no helper process ({exc})")
            return
        with self._pool_lock:
            if self._closed:
                pool.close()
            else:
                self._pool = pool

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def run(self, tasks: Iterable[_Task]) -> None:
        """Run `tasks` and everything they lead to; fold results in on this thread (the DuckDB connection's).

        Workers take tasks and queue their follow-ups themselves, so requests keep flowing while this thread
        writes to DuckDB; the bounded result queue holds them back if writing falls behind (bounded memory).
        """
        pending = _Pending(tasks)
        results: queue.Queue = queue.Queue(maxsize=min(4 * self.concurrency, MAX_QUEUED_RESULTS))
        ready = threading.Condition()
        state = {"active": 0, "stop": False}

        def worker() -> None:
            while True:
                with ready:
                    while not pending and not state["stop"]:
                        if not state["active"]:  # nothing queued and nothing running: all done
                            ready.notify_all()
                            return
                        ready.wait()
                    if state["stop"]:
                        return
                    task = pending.pop()
                    state["active"] += 1
                try:
                    result = self._run(task)
                except BaseException as exc:  # errors (StripeSetupError...) reach the caller unchanged
                    with ready:
                        state["stop"] = True
                        state["active"] -= 1
                        ready.notify_all()
                    results.put(exc)
                    return
                results.put(result)  # before `active` drops, so the coordinator never misses a result
                with ready:
                    state["active"] -= 1
                    idle = self.concurrency - state["active"] - len(pending)
                    pending.extend(self._follow_ups(result, idle))
                    ready.notify_all()

        threads = [threading.Thread(target=worker, name=f"stripe-sync-{i}", daemon=True)
                   for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        try:
            while True:
                try:
                    item = results.get(timeout=0.05)
                except queue.Empty:
                    if results.empty() and not any(t.is_alive() for t in threads):
                        break
                    continue
                if isinstance(item, BaseException):
                    raise item
                self._fold(item)
        except BaseException:
            with ready:
                state["stop"] = True
                ready.notify_all()
            while any(t.is_alive() for t in threads):
                try:
                    results.get(timeout=0.05)  # unblock workers handing in a result
                except queue.Empty:
                    pass
            raise

    def _fold(self, result: _Result) -> None:
        task = result.task
        self.sink.add(task.spec.kind, result.rows, pages=1, fetched=result.fetched)
        self.paged_items.extend(result.paged_items)
        if result.deleted is not None:
            self.deleted.setdefault(task.spec.kind, set()).add(result.deleted)
        for kind, ids in result.embedded.items():
            self.embedded.setdefault(kind, set()).update(ids)
        if result.events:
            newest = max((created, event_id) for created, event_id, _, _ in result.events)
            self.newest_event = max(self.newest_event or newest, newest)
            if self.keep_events:
                self.events.extend(result.events)

    def _follow_ups(self, result: _Result, idle: int) -> list[_Task]:
        task = result.task
        follow = list(result.children)
        if not result.has_more or result.last_id is None:
            return follow
        if task.lo is None or result.last_created is None:
            # Children and lists without windows page on sequentially.
            follow.append(_Task(task.spec, task.path, {**task.params, "starting_after": result.last_id},
                                context=task.context))
            return follow
        newest = result.newest_created or result.last_created
        last = result.last_created
        if task.hi - task.lo > 1 and (newest == last or result.last_second >= DENSE_SECOND):
            # The page ended in a crowded second (an import, a batch of renewals): that second can only be paged
            # on with the cursor, so it becomes a window of its own, ahead of other work; the older rest another.
            follow.append(self._window(task.spec, last, last + 1, result.last_id, left=PAGE_SIZE))
            if task.lo < last:
                follow.append(self._window(task.spec, task.lo, last, None))
            return follow
        # Pages left at the density this page showed: a large rest is split even while every worker is busy,
        # so the whole account is mapped early and no long run of pages is found late (the tail of a sync).
        left = (last - task.lo) / max(1, newest - last)
        if idle > 0 or left > SPLIT_ABOVE_PAGES:
            # Split the rest; the newest part keeps the cursor (its object lies in it).
            windows = split_remaining(task.lo, last, newest, MAX_SPLIT)
        else:
            windows = [remaining_window(task.lo, last)]
        for index, (lo, hi) in enumerate(windows):
            follow.append(self._window(task.spec, lo, hi, result.last_id if index == 0 else None, left=left))
        return follow

    @staticmethod
    def _window(spec: ListSpec, lo: int, hi: int, cursor: str | None, left: float = 0.0) -> _Task:
        return _Task(spec, spec.path, window_params(spec.params, lo, hi, cursor), lo=lo, hi=hi,
                     context=dict(spec.context), left=left)


# ---------------------------------------------------------------------------------------------------------------
# Sinks: where rows go (staging tables for a full sync, memory for an incremental one), with counters.


class _Sink:
    def __init__(self, progress: Progress | None, started: float) -> None:
        self.progress = progress
        self.started = started
        self.rows: dict[str, int] = {}
        self.quarantined: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.pages: dict[str, int] = {}
        self.objects_by_kind: dict[str, int] = {}
        self.reasons: dict[str, list[str]] = {}
        self._last_progress: dict[str, float] = {}
        self.duplicates = raw.Duplicates()

    def add(self, kind: str, rows: objects.Rows, pages: int, fetched: int | None = None) -> None:
        now = time.monotonic()
        self.pages[kind] = self.pages.get(kind, 0) + pages
        for table, data in rows.tables.items():
            self.rows[table] = self.rows.get(table, 0) + data.num_rows
            self.seconds[table] = now - self.started
            tag = pa.repeat(pa.scalar(fetched, pa.int64()), data.num_rows)
            self.store(table, data.append_column(raw.FETCHED, tag))
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

    def store(self, table: str, data: pa.Table) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass


class _StagingSink(_Sink):
    """Streams rows into the staging tables (`raw.begin_staging`), one Arrow batch per table every FLUSH_ROWS rows.

    The appends run on a writer thread of their own, so results keep being folded in (and requests keep flowing)
    while DuckDB writes or checkpoints; at most WRITE_QUEUE batches wait for it (bounded memory). The connection
    belongs to that thread until `close`.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, progress: Progress | None, started: float) -> None:
        super().__init__(progress, started)
        self.con = con
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered_rows: dict[str, int] = {}
        self.buffered_bytes = 0
        self._writes: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="stripe-sync-writer", daemon=True)
        self._writer.start()

    def store(self, table: str, data: pa.Table) -> None:
        self.buffers.setdefault(table, []).append(data)
        self.buffered_rows[table] = self.buffered_rows.get(table, 0) + data.num_rows
        self.buffered_bytes += data.get_total_buffer_size()
        if self.buffered_rows[table] >= FLUSH_ROWS:
            self._flush_table(table)
        if self.buffered_bytes >= FLUSH_BYTES:
            self.flush()

    def _flush_table(self, table: str) -> None:
        parts = self.buffers.pop(table, [])
        self.buffered_rows.pop(table, None)
        if parts:
            self.buffered_bytes -= sum(p.get_total_buffer_size() for p in parts)
            if self._error is not None:
                raise self._error
            self._writes.put((table, parts))

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
            except BaseException as exc:  # raised on the folding thread at its next flush or at close
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

    def flush(self) -> None:
        for table in list(self.buffers):
            self._flush_table(table)
        self.buffered_bytes = 0

    def close(self, check: bool = True) -> None:
        """Wait until everything handed to the writer is written; the connection is the caller's again."""
        if self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()
        if check and self._error is not None:
            raise self._error


class _MemorySink(_Sink):
    """Keeps an incremental sync's rows for one upsert transaction."""

    def __init__(self, progress: Progress | None, started: float) -> None:
        super().__init__(progress, started)
        self.tables: dict[str, list[pa.Table]] = {}

    def store(self, table: str, data: pa.Table) -> None:
        self.tables.setdefault(table, []).append(data)


# ---------------------------------------------------------------------------------------------------------------
# Events → objects to read again


@dataclass
class ChangeSet:
    """Objects events say changed: ids per kind (with `created` when the event told it) and deleted ids."""

    reread: dict[str, dict[str, int | None]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)

    def mark(self, kind: str, object_id: Any, created: Any = None) -> None:
        if isinstance(object_id, str) and object_id:
            known = self.reread.setdefault(kind, {})
            if isinstance(created, int) or object_id not in known:
                known[object_id] = created if isinstance(created, int) else None
            self.deleted.get(kind, set()).discard(object_id)

    def delete(self, kind: str, object_id: Any) -> None:
        if isinstance(object_id, str) and object_id:
            self.deleted.setdefault(kind, set()).add(object_id)
            self.reread.get(kind, {}).pop(object_id, None)


_DELETED_KINDS = {"customer.deleted": "customers", "product.deleted": "products", "price.deleted": "prices",
                  "plan.deleted": "prices", "coupon.deleted": "coupons", "invoice.deleted": "invoices"}


def changed_objects(events: Iterable[tuple]) -> ChangeSet:
    """Which objects to read again (or mark deleted), from (created, id, type, data.object) of events.

    Events are applied oldest first, so the last word on an object wins (updated then deleted → deleted).
    """
    changes = ChangeSet()
    for _, _, kind_of_event, obj in sorted(events, key=lambda e: (e[0], e[1])):
        if not isinstance(obj, dict):
            continue
        object_id, created = obj.get("id"), obj.get("created")
        prefix = kind_of_event.split(".", 1)[0]
        if kind_of_event in _DELETED_KINDS:
            changes.delete(_DELETED_KINDS[kind_of_event], object_id)
        elif kind_of_event.startswith("customer.subscription."):
            # customer.subscription.deleted is a cancellation: the subscription stays, status canceled.
            changes.mark("subscriptions", object_id, created)
        elif kind_of_event.startswith("customer.discount."):
            if obj.get("subscription"):
                changes.mark("subscriptions", objects.id_of(obj.get("subscription")))
            elif obj.get("customer"):
                changes.mark("customers", objects.id_of(obj.get("customer")))
        elif kind_of_event in ("customer.created", "customer.updated"):
            changes.mark("customers", object_id, created)
        elif prefix == "customer" and obj.get("customer"):
            changes.mark("customers", objects.id_of(obj.get("customer")))  # customer.source.*, customer.tax_id.*
        elif prefix == "invoice":
            changes.mark("invoices", object_id, created)
            if kind_of_event in ("invoice.created", "invoice.finalized") and obj.get("customer"):
                # Numbering an invoice moves its customer's next_invoice_sequence, and Stripe sends no
                # customer.updated for that: read the customer again too.
                changes.mark("customers", objects.id_of(obj.get("customer")))
        elif prefix == "invoiceitem":
            if obj.get("invoice"):
                changes.mark("invoices", objects.id_of(obj.get("invoice")))
        elif prefix in ("price", "plan"):
            changes.mark("prices", object_id, created)
        elif prefix == "product":
            changes.mark("products", object_id, created)
        elif prefix == "coupon":
            changes.mark("coupons", object_id, created)
    return changes


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def _pages(count: int) -> int:
    return -(-count // PAGE_SIZE)


def read_plan(ids: dict[str, int | None], since: int, stored: int) -> int | None:
    """How an incremental sync reads changed objects of one kind again: None = each by id; else list every
    object created at or after the returned second (100 per request), and the older ones by id.

    Objects created since the last sync are listed when there are a few; when more objects changed than one
    request in a hundred would list (`stored` objects of the kind are known), everything is listed (from 0).
    """
    new = sum(1 for created in ids.values() if created is not None and created >= since)
    by_id = len(ids)
    list_new = _pages(new) + (len(ids) - new) if new > 2 else by_id
    list_all = _pages(stored + new) + 1
    if list_all < min(by_id, list_new):
        return 0
    if list_new < by_id:
        return since
    return None


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def _epoch(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.timezone.utc).timestamp())


def choose_mode(mode: Mode, state: raw.SyncState | None, now: float,
                source: str | None = None) -> Literal["full", "incremental"]:
    """`auto`: incremental from the stored cursor, full on first run, when events since may have expired, or
    when the cursor came from another account or key (`source`, see `raw.SyncState`)."""
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


def sync_account(reader: StripeReader, con: duckdb.DuckDBPyConnection, integration: str = "default",
                 mode: Mode = "auto", progress: Progress | None = None, concurrency: int = 32,
                 now: float | None = None, max_pages: int = MAX_PAGES) -> SyncReport:
    """Bring the integration's rows in schema `stripe` up to date with the account `reader` reads.

    The tables must exist (`raw.ensure_tables`). `StripeSetupError` (bad key, missing permission) propagates
    unchanged; a sync that fails or is killed leaves the tables as the last successful sync left them.
    `now` (epoch seconds, default: the current time) is the run's moment: the event window and the end of the
    `created` windows are counted from it, and it is stored as the time of this sync. Paging stops with
    `PagingError` when it would not end, or after `max_pages` pages that say has_more.
    """
    started_wall = time.time() if now is None else float(now)
    started = time.monotonic()
    before = reader.stats.as_dict()
    source = source_of(reader)
    chosen = choose_mode(mode, raw.read_state(con, integration), started_wall, source)
    if chosen == "full":
        sink, warnings = _full(reader, con, integration, progress, concurrency, started_wall, started, max_pages)
    else:
        sink, warnings = _incremental(reader, con, integration, progress, concurrency, started_wall, started,
                                      max_pages)
    after = reader.stats.as_dict()
    report = SyncReport(
        mode=chosen,
        tables={table: {"rows": sink.rows.get(table, 0), "quarantined": sink.quarantined.get(table, 0),
                        "seconds": round(sink.seconds.get(table, 0.0), 3),
                        "duplicates_dropped": sink.duplicates.dropped.get(table, 0),
                        "duplicates_resolved": sink.duplicates.resolved.get(table, 0)}
                for table in TABLES},
        warnings=warnings,
        seconds=time.monotonic() - started,
        **{name: after[name] - before[name] for name in before},
    )
    resolved = sum(sink.duplicates.resolved.values())
    if resolved:
        report.warnings.append(
            f"{resolved} object(s) came back in two versions; kept the newer one (later created, else fetched "
            f"later) of each: {', '.join(sink.duplicates.examples)}")
    for table, count in sorted(sink.quarantined.items()):
        reasons = "; ".join(sink.reasons.get(table, []))
        report.warnings.append(f"{count} {table} object(s) could not be read and are in stripe.quarantine "
                               f"(e.g. {reasons})")
    return report


def _full(reader: StripeReader, con: duckdb.DuckDBPyConnection, integration: str, progress: Progress | None,
          concurrency: int, started_wall: float, started: float, max_pages: int) -> tuple[_Sink, list[str]]:
    sink = _StagingSink(con, progress, started)
    engine = _Engine(reader, integration, concurrency, sink, max_pages)
    engine.keep_events = False
    engine.offload = True
    hi = int(started_wall) + CLOCK_SKEW_S
    # Stripe drops events older than 30 days itself; a day more tolerates clocks that disagree.
    events_lo = int(started_wall) - EVENT_RETENTION_S - CLOCK_SKEW_S
    tasks = [engine._window(spec, 0, hi, None) for spec in LISTS]
    tasks.append(engine._window(EVENTS, events_lo, hi, None))
    with raw.bulk_loading(con):
        # Rows go to staging tables that publishing renames into place (`raw.swap_full`): written once, never
        # copied. A failed sync drops them; a killed one leaves them to the next (never published).
        raw.begin_staging(con)
        try:
            try:
                engine.run(tasks)
                sink.flush()
            except BaseException:
                engine.close()
                sink.close(check=False)  # the first error is the one to report
                raise
            engine.close()
            sink.close()
            for spec in (*LISTS, EVENTS):
                sink.report_progress(spec.kind)
            raw.fill_subscription_periods(con, integration, engine.paged_items, in_staging=True)
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # else the next sync drops them (`raw.drop_staging`)
                raw.drop_staging(con)
            raise
        newest = engine.newest_event
        state = raw.SyncState(
            integration=integration,
            last_event_id=newest[1] if newest else None,
            # Without events yet, start the next incremental a little before this sync started.
            last_event_created=_utc(newest[0]) if newest else _utc(started_wall - 300),
            last_full_sync_at=_utc(started_wall), last_sync_at=_utc(started_wall), last_mode="full",
            source=source_of(reader),
        )
        sink.duplicates = raw.swap_full(con, integration, state)
    warnings: list[str] = list(engine.notes)
    if not sink.rows.get("subscriptions") and not sink.quarantined.get("subscriptions"):
        warnings.append(empty_account_warning(reader.key_info))
    return sink, warnings


def _incremental(reader: StripeReader, con: duckdb.DuckDBPyConnection, integration: str,
                 progress: Progress | None, concurrency: int, started_wall: float,
                 started: float, max_pages: int) -> tuple[_Sink, list[str]]:
    state = raw.read_state(con, integration)
    assert state is not None and state.last_event_created is not None
    sink = _MemorySink(progress, started)
    engine = _Engine(reader, integration, concurrency, sink, max_pages)
    hi = int(started_wall) + CLOCK_SKEW_S
    since = _epoch(state.last_event_created)
    # created[gte] the cursor's second: events of that second we already saw are read again, harmlessly.
    engine.run([engine._window(EVENTS, since, hi, None)])
    # Events already stored were acted on by the sync that stored them (it read the objects after listing them).
    known = raw.event_ids_since(con, integration, state.last_event_created)
    changes = changed_objects(e for e in engine.events if e[1] not in known)

    # Invoices first, with their customers and subscriptions expanded; customers and subscriptions that came that
    # way need no read of their own, so they are planned once those invoices are in.
    listed: dict[str, int] = {}
    stored = raw.table_counts(con, integration)

    def read_again(kinds: Iterable[str]) -> list[_Task]:
        tasks: list[_Task] = []
        for kind in kinds:
            spec = INVOICES_EXPANDED if kind == "invoices" else BY_KIND[kind]
            have = engine.embedded.get(kind, set())
            ids = {object_id: created for object_id, created in changes.reread[kind].items() if object_id not in have}
            plan = read_plan(ids, since, stored.get(kind, 0))
            if plan is not None:
                listed[kind] = plan
                tasks.append(engine._window(spec, plan, hi, None))
            tasks.extend(_Task(spec, spec.retrieve_path(object_id), dict(spec.retrieve_params), retrieve=object_id,
                               context=dict(spec.context))
                         for object_id, created in ids.items() if plan is None or created is None or created < plan)
        return tasks

    engine.run(read_again(kind for kind in changes.reread if kind not in objects.EXPANDED_KINDS))
    engine.run(read_again(kind for kind in changes.reread if kind in objects.EXPANDED_KINDS))
    engine.run([engine._window(INVOICE_ITEMS, 0, hi, None)])

    warnings: list[str] = []
    reread = {kind: set(ids) for kind, ids in changes.reread.items()}
    for kind, ids in engine.embedded.items():
        reread.setdefault(kind, set()).update(ids)
    for kind in listed:
        table = sink.tables.get(kind, [])
        reread[kind].update(id_ for t in table for id_ in t.column("id").to_pylist())
    deleted = {kind: set(ids) for kind, ids in changes.deleted.items()}
    # Pending invoice items listed before and not now were invoiced (or deleted): no longer pending.
    pending_now = {id_ for t in sink.tables.get(INVOICE_ITEMS.kind, []) for id_ in t.column("id").to_pylist()}
    deleted[INVOICE_ITEMS.kind] = raw.stored_ids(con, INVOICE_ITEMS.kind, integration) - pending_now
    for kind, ids in engine.deleted.items():
        if kind == "subscriptions":
            # Subscriptions are never deleted, only canceled; keep what we have and say so.
            warnings.append(f"{len(ids)} subscription(s) could not be read again (404), kept as last synced: "
                            f"{sorted(ids)[:5]}")
            reread[kind] -= ids
            continue
        deleted.setdefault(kind, set()).update(ids)
    for kind, ids in deleted.items():
        if kind in raw.DELETABLE:
            # A deleted object is flagged on the row we have; its last known fields stay.
            reread.get(kind, set()).difference_update(ids)
    newest = engine.newest_event
    if newest is not None and newest[0] >= since:
        cursor_id, cursor_created = newest[1], _utc(newest[0])
    else:
        cursor_id, cursor_created = state.last_event_id, state.last_event_created
    new_state = raw.SyncState(
        integration=integration, last_event_id=cursor_id, last_event_created=cursor_created,
        last_full_sync_at=state.last_full_sync_at, last_sync_at=_utc(started_wall), last_mode="incremental",
        source=state.source,
    )
    raw.apply_changes(con, integration, raw.Changes(
        rows=sink.tables, reread={k: sorted(v) for k, v in reread.items()},
        deleted={k: sorted(v) for k, v in deleted.items()}, period_from_items=engine.paged_items,
    ), new_state, sink.duplicates)
    for kind in {*reread, *deleted, "events"}:
        sink.report_progress(kind)
    return sink, warnings
