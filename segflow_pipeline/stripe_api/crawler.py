"""The crawler: reads lists and objects on a pool of threads and folds every page into a tally. No Dagster.

Which lists, and when a sync is full or incremental, is `sync.py`; turning bodies into rows is `objects.py`
(or a helper process, `workers.py`); HTTP, rate limits and retries are `client.py`.

A list is read in `created` windows (`windows.py`). A window pages with `starting_after`; when the rest of a window
looks larger than a couple of pages (or workers are idle), it is split into windows growing geometrically back in
time: the part holding the cursor continues paging, the others start fresh. A page ending in a crowded second (an
import, a batch of renewals) makes that second a window of its own: it can only be paged one page after another, so
it goes ahead of other work (`Pending`). Children beyond what a parent embeds (invoice lines past the 10 embedded,
subscription items past the embedded ones) are paged as tasks of their own.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import queue
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from segflow_pipeline.raw_tables import fetch_tag
from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.client import MAX_PAGES, PageGuard, PagingError, StripeAPIFailure, StripeReader
from segflow_pipeline.stripe_api.lists import ITEMS, LINES, PAGE_SIZE, ListSpec
from segflow_pipeline.stripe_api.tally import Tally
from segflow_pipeline.stripe_api.windows import remaining_window, split_remaining, window_params
from segflow_pipeline.stripe_api.workers import HelperPool

# At most this many windows from one split; more come from splitting those windows later.
MAX_SPLIT = 8
# The rest of a window is split when it looks larger than this many pages, whether or not workers are idle.
SPLIT_ABOVE_PAGES = 2
# A page whose last this many objects share one second ends in a crowded second: paged on as a window of its own.
DENSE_SECOND = 20
# A full sync that reaches this many pages starts the row-building helper process.
OFFLOAD_AFTER_PAGES = 50
# Helper processes started then. Every page then waits for a helper: the sync process only fetches and writes,
# so its GIL is no longer the limit. One keeps up with Stripe's 100 req/s; each more costs memory
# (benchmarks/bench_sync.py measures throughput and peak RSS).
HELPERS = 1
# Pages fetched but not yet handed to the sink, at most. Storing is the slower side of a large sync, so workers
# wait here whatever the bound; a larger one only holds more rows in memory.
MAX_QUEUED_RESULTS = 16


@dataclass
class Task:
    spec: ListSpec
    path: str
    params: dict[str, Any]
    lo: int | None = None          # windowed list: [lo, hi)
    hi: int | None = None
    context: dict[str, Any] = field(default_factory=dict)   # children: parent ids; retrieve: object id
    retrieve: str | None = None    # retrieve one object by id
    left: float = 0.0              # pages the window seemed to hold after the previous page (scheduling only)


@dataclass
class Result:
    task: Task
    rows: objects.Rows
    has_more: bool = False
    last_id: str | None = None
    last_created: int | None = None
    newest_created: int | None = None
    last_second: int = 0
    children: list[Task] = field(default_factory=list)
    paged_items: list[str] = field(default_factory=list)
    deleted: str | None = None     # retrieve: the object is gone (404 or `deleted: true`)
    events: list[tuple] = field(default_factory=list)
    embedded: dict[str, list[str]] = field(default_factory=dict)   # objects read inside others (expanded)
    fetched: int | None = None     # when: `fetch_tag(request started, answer arrived)` on the sync's clock


def _children(kind: str, page: objects.Page) -> tuple[list[Task], list[str]]:
    """Tasks paging what the page's objects did not embed: items past a subscription's, lines past 10."""
    tasks: list[Task] = []
    paged_items: list[str] = []
    for parent, last_child, customer in page.truncated:
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if last_child:
            params["starting_after"] = last_child
        if kind == "subscriptions":
            tasks.append(Task(ITEMS, ITEMS.path, {**ITEMS.params, **params, "subscription": parent},
                              context={"subscription": parent}))
            paged_items.append(parent)
        else:
            path = LINES.path.format(urllib.parse.quote(parent, safe=""))
            tasks.append(Task(LINES, path, {**LINES.params, **params},
                              context={"invoice": parent, "customer": customer}))
    return tasks, paged_items



class Pending:
    """Tasks not started yet, in the order that keeps a sync short (Stripe pages a list one page per request, so
    the sync lasts at least as long as its longest run of pages, however many requests run at once):

    0. the next page of a window one second wide: it cannot be split, so it is a run to keep going;
    1. the first page of a window: it shows how many objects the window holds, and big windows are split;
    2. children (lines, items past the embedded ones) and objects read by id;
    3. the next page of any other window, those that seemed to hold the fewest pages first: a crowded second
       hidden in a window that looked small is found sooner, which shortens the tail of a sync.
    Ties go first in, first out.
    """

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._heap: list[tuple[int, float, int, Task]] = []
        self._seq = 0
        self.extend(tasks)

    @staticmethod
    def priority(task: Task) -> tuple[int, float]:
        if task.lo is None or task.hi is None:
            return 2, 0.0
        if "starting_after" not in task.params:
            return 1, 0.0
        return (0, 0.0) if task.hi - task.lo <= 1 else (3, task.left)

    def extend(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            self._seq += 1
            heapq.heappush(self._heap, (*self.priority(task), self._seq, task))

    def pop(self) -> Task:
        return heapq.heappop(self._heap)[-1]

    def __len__(self) -> int:
        return len(self._heap)


class Crawler:
    """Runs tasks on a thread pool and folds results into a tally, splitting windows while workers are idle."""

    def __init__(self, reader: StripeReader, integration: str, concurrency: int, tally: Tally,
                 max_pages: int = MAX_PAGES) -> None:
        self.reader = reader
        # Every chain of pages ends: a cursor is used once, never ends its own page, and the sync reads at most
        # `max_pages` pages that say has_more.
        self.guard = PageGuard(reader.api_base, max_pages)
        self._clock = itertools.count(1)  # next() is atomic under the GIL: one clock for every worker
        self.integration = integration
        self.concurrency = max(1, concurrency)
        self.tally = tally
        self.paged_items: list[str] = []
        self.deleted: dict[str, set[str]] = {}
        self.embedded: dict[str, set[str]] = {}
        self._convert_slots = threading.BoundedSemaphore(2)
        # Large syncs build rows in helper processes (other cores); small ones never start them.
        self.offload = False
        self._pool: HelperPool | None = None
        self._pool_lock = threading.Lock()
        self._closed = False
        self._pool_started = False
        self._pages = 0
        self.notes: list[str] = []
        self.keep_events = True        # a full sync only needs the newest event (its cursor)
        self.events: list[tuple] = []
        self.newest_event: tuple[int, str] | None = None

    # -- worker side ------------------------------------------------------------------------------------------
    def _run(self, task: Task) -> Result:
        single = task.retrieve is not None
        # The sync's clock orders fetches: an object listed twice keeps the version fetched later, when one request
        # started after the other's answer arrived (the sink resolves duplicates by `raw_tables.FETCHED`).
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
            return Result(task, objects.Rows(), deleted=task.retrieve)
        if page.deleted:
            return Result(task, objects.Rows(), deleted=task.retrieve)
        if page.has_more and page.last_id is not None:
            self._check_advance(task, page)
        children, paged_items = _children(task.spec.kind, page)
        return Result(task, page.rows, has_more=page.has_more, last_id=page.last_id,
                      last_created=page.last_created, newest_created=page.newest_created,
                      last_second=page.last_second, children=children,
                      paged_items=paged_items, events=page.events, embedded=page.embedded,
                      fetched=fetch_tag(started, arrived[0]))

    def _check_advance(self, task: Task, page: objects.Page) -> None:
        """Refuse a page that would make its chain go on forever (`PageGuard`), or that lies outside the window it
        was asked for: a server ignoring `created` filters would hand every window the whole list."""
        self.guard.next_cursor(task.path, task.params.get("starting_after"), page.last_id)
        created = page.last_created
        if task.lo is not None and task.hi is not None and created is not None and not task.lo <= created < task.hi:
            raise PagingError(
                f"Stripe GET {task.path} ignores its created filter: asked for objects created in [{task.lo}, "
                f"{task.hi}), its page ends with {page.last_id} created at {created}. Stopped paging: the same "
                f"request gets the same answer. Check that STRIPE_API_BASE ({self.reader.api_base}) is Stripe's API.")

    def _page(self, task: Task, body: bytes, single: bool) -> objects.Page:
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
                                    urgent=Pending.priority(task)[0] == 0)
            except (OSError, RuntimeError, EOFError, pickle.PickleError) as exc:
                note = f"a row-building helper process failed ({exc}); its pages were built in the sync process"
                if note not in self.notes:
                    self.notes.append(note)
                page = None
            if page is not None:
                return page
        # The GIL lets one thread convert at a time anyway; the slots keep other threads from holding parsed
        # pages (a 100-invoice page is megabytes of dicts) while they wait for it.
        with self._convert_slots:
            return objects.page_rows(task.spec.kind, body, self.integration, task.context, single=single)

    def _start_pool(self) -> None:
        try:
            pool = HelperPool(HELPERS)
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

    def run(self, tasks: Iterable[Task]) -> None:
        """Run `tasks` and everything they lead to; fold results into the tally on this thread (the caller's).

        Workers take tasks and queue their follow-ups themselves, so requests keep flowing while this thread
        hands rows to the sink; the bounded result queue holds them back if storing falls behind (bounded memory).
        """
        pending = Pending(tasks)
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

    def _fold(self, result: Result) -> None:
        task = result.task
        self.tally.add(task.spec.kind, result.rows, pages=1, fetched=result.fetched)
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

    def _follow_ups(self, result: Result, idle: int) -> list[Task]:
        task = result.task
        follow = list(result.children)
        if not result.has_more or result.last_id is None:
            return follow
        if task.lo is None or result.last_created is None:
            # Children and lists without windows page on sequentially.
            follow.append(Task(task.spec, task.path, {**task.params, "starting_after": result.last_id},
                               context=task.context))
            return follow
        newest = result.newest_created or result.last_created
        last = result.last_created
        if task.hi - task.lo > 1 and (newest == last or result.last_second >= DENSE_SECOND):
            # The page ended in a crowded second (an import, a batch of renewals): that second can only be paged
            # on with the cursor, so it becomes a window of its own, ahead of other work; the older rest another.
            follow.append(self.window(task.spec, last, last + 1, result.last_id, left=PAGE_SIZE))
            if task.lo < last:
                follow.append(self.window(task.spec, task.lo, last, None))
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
            follow.append(self.window(task.spec, lo, hi, result.last_id if index == 0 else None, left=left))
        return follow

    @staticmethod
    def window(spec: ListSpec, lo: int, hi: int, cursor: str | None, left: float = 0.0) -> Task:
        return Task(spec, spec.path, window_params(spec.params, lo, hi, cursor), lo=lo, hi=hi,
                    context=dict(spec.context), left=left)
