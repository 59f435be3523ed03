"""Window splitting, event → object mapping and mode choice of the sync engine.

The paging tests read a list through a stand-in for `StripeReader.get` (the HTTP boundary) that follows Stripe's
documented list semantics: newest first, ties in one second ordered by id, `created[gte|lt]`, `starting_after`.
"""

import datetime as dt
import threading
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segflow_pipeline.raw_tables import SyncState
from segflow_pipeline.stripe_api import objects, sync
from segflow_pipeline.stripe_api.changes import changed_objects, read_plan
from segflow_pipeline.stripe_api.client import RequestStats
from segflow_pipeline.stripe_api.crawler import Crawler, Pending, Task
from segflow_pipeline.stripe_api.lists import BY_KIND, LINES
from segflow_pipeline.stripe_api.tally import Tally
from segflow_pipeline.stripe_api.windows import remaining_window, split_remaining, window_params
from segflow_pipeline.stripe_api.workers import HelperPool


def test_remaining_window_keeps_the_cursor_second():
    # The page's oldest object is at second 100: others of second 100 may follow the cursor.
    assert remaining_window(0, 100) == (0, 101)


def test_window_params_are_half_open():
    params = window_params({"status": "all"}, 10, 20, "sub_9")
    assert params == {"status": "all", "limit": 100, "created": {"gte": 10, "lt": 20}, "starting_after": "sub_9"}


class ListSource:
    """Answers GET /v1/customers like Stripe: order (created desc, id desc), created filters, cursor, limit."""

    api_base = "http://list-source"

    def __init__(self, created: list[int], latency: float = 0.002) -> None:
        self.latency = latency
        objs = [{"id": f"cus_{i:06d}", "object": "customer", "created": c} for i, c in enumerate(created)]
        self.order = sorted(objs, key=lambda o: (o["created"], o["id"]), reverse=True)
        self.position = {o["id"]: p for p, o in enumerate(self.order)}
        self.stats = RequestStats()
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def get(self, path, params=None, *, resource=None, decode=orjson.loads):
        return decode(orjson.dumps(self.answer(path, params)))

    def answer(self, path, params):
        params = dict(params or {})
        with self.lock:
            self.calls.append(params)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.stats.add(requests=1)
            time.sleep(self.latency)
            if path != "/v1/customers":
                return {"object": "list", "data": [], "has_more": False}
            created = params.get("created", {})
            start = self.position[params["starting_after"]] + 1 if "starting_after" in params else 0
            matching = [o for o in self.order[start:]
                        if created.get("gte", -1) <= o["created"] < created.get("lt", 1 << 62)]
            limit = params.get("limit", 10)
            return {"object": "list", "data": matching[:limit], "has_more": len(matching) > limit}
        finally:
            with self.lock:
                self.in_flight -= 1


def page_all(source: ListSource, concurrency: int) -> list[str]:
    rows: dict = {}
    tally = Tally(None, time.monotonic(), lambda table, data: rows.setdefault(table, []).append(data))
    crawler = Crawler(source, "default", concurrency, tally)  # type: ignore[arg-type]
    crawler.run([crawler.window(BY_KIND["customers"], 0, 2_000_000_000, None)])
    return [i for t in rows.get("customers", []) for i in t.column("id").to_pylist()]


@pytest.mark.parametrize("created", [
    pytest.param([1_600_000_000] * 750, id="750-in-one-second"),
    pytest.param([1_600_000_000 + i // 300 for i in range(1500)], id="300-per-second-at-boundaries"),
    pytest.param([1_500_000_000 + (i * 7919) % 90_000_000 for i in range(2500)], id="spread-over-years"),
    pytest.param([1_600_000_000 + (i % 3) for i in range(1001)] + [1_000_000_000, 1_999_999_999],
                 id="bursts-and-outliers"),
])
@pytest.mark.parametrize("concurrency", [1, 16])
def test_concurrent_windows_return_every_object_exactly_once(created, concurrency):
    source = ListSource(created)
    ids = page_all(source, concurrency)
    assert len(ids) == len(created)
    assert set(ids) == {o["id"] for o in source.order}
    for call in source.calls:
        assert set(call["created"]) == {"gte", "lt"}  # every request is one half-open window


def test_windows_are_split_so_many_run_at_once():
    source = ListSource([1_500_000_000 + (i * 7919) % 90_000_000 for i in range(20_000)], latency=0.01)
    page_all(source, 16)
    assert source.max_in_flight >= 12
    full_pages = 20_000 / 100
    assert len(source.calls) <= full_pages * 1.15  # splitting costs few extra (partly filled) pages


def test_a_crowded_second_is_paged_as_a_run_of_its_own():
    # 3,000 objects created in one second (an import) in the middle of 10,000 spread over years: that second can
    # only be paged one page after the other, so it becomes a window of its own, paged on ahead of other work.
    crowded = 1_550_000_000
    created = [1_500_000_000 + (i * 7919) % 90_000_000 for i in range(10_000)] + [crowded] * 3_000
    source = ListSource(created, latency=0.003)
    ids = page_all(source, 8)
    assert sorted(ids) == sorted(o["id"] for o in source.order)
    run = [i for i, call in enumerate(source.calls) if call["created"] == {"gte": crowded, "lt": crowded + 1}]
    assert len(run) >= 29  # 30 pages of that second, each after the previous one
    assert all("starting_after" in source.calls[i] for i in run[1:])
    assert len(source.calls) <= (13_000 / 100) * 1.15  # splitting costs few extra (partly filled) pages


def test_pending_tasks_come_in_the_order_that_keeps_a_sync_short():
    spec = BY_KIND["invoices"]
    first = Crawler.window(spec, 0, 1000, None)
    run = Crawler.window(spec, 500, 501, "in_1")
    big = Crawler.window(spec, 0, 400, "in_2", left=30)
    small = Crawler.window(spec, 0, 400, "in_3", left=2)
    child = Task(LINES, "/v1/invoices/in_4/lines", {"limit": 100})
    pending = Pending([small, child, big, first, run])
    assert [pending.pop() for _ in range(len(pending))] == [run, first, child, small, big]


@given(lo=st.integers(0, 1_000_000), back=st.integers(0, 10_000_000), span=st.integers(0, 100_000),
       parts=st.integers(1, 16))
def test_split_remaining_covers_the_rest_exactly_once(lo, back, span, parts):
    last = lo + back
    windows = split_remaining(lo, last, last + span, parts)
    assert windows[0][1] == last + 1 and windows[0][0] <= last  # the cursor's second is in the first window
    assert windows[-1][0] == lo
    assert all(a < b for a, b in windows)
    assert all(a == b2 for (a, _), (_, b2) in zip(windows, windows[1:]))  # adjacent going back, no overlap
    assert len(windows) <= parts


def event(seconds, type_, obj, eid=None):
    return (seconds, eid or f"evt_{seconds}_{type_}", type_, obj)


def test_changed_objects_maps_event_types_to_objects():
    events = [
        event(10, "customer.subscription.updated", {"id": "sub_1", "object": "subscription", "created": 5}),
        event(11, "customer.subscription.deleted", {"id": "sub_2", "object": "subscription"}),
        event(12, "invoice.paid", {"id": "in_1", "object": "invoice", "created": 9}),
        event(13, "invoiceitem.created", {"id": "ii_1", "object": "invoiceitem", "invoice": "in_2"}),
        event(14, "invoiceitem.created", {"id": "ii_2", "object": "invoiceitem", "invoice": None}),
        event(15, "customer.updated", {"id": "cus_1", "object": "customer"}),
        event(16, "customer.discount.created", {"id": "di_1", "object": "discount", "customer": "cus_2",
                                                "subscription": "sub_3"}),
        event(17, "customer.discount.deleted", {"id": "di_2", "object": "discount", "customer": "cus_3",
                                                "subscription": None}),
        event(18, "plan.updated", {"id": "price_1", "object": "plan"}),
        event(19, "price.created", {"id": "price_2", "object": "price"}),
        event(20, "product.updated", {"id": "prod_1", "object": "product"}),
        event(21, "coupon.created", {"id": "C1", "object": "coupon"}),
        event(22, "coupon.deleted", {"id": "C1", "object": "coupon"}),
        event(23, "customer.deleted", {"id": "cus_9", "object": "customer", "deleted": True}),
        event(24, "invoice.deleted", {"id": "in_9", "object": "invoice"}),
        event(25, "charge.succeeded", {"id": "ch_1", "object": "charge"}),
        event(26, "customer.source.updated", {"id": "card_1", "object": "card", "customer": "cus_4"}),
    ]
    changes = changed_objects(reversed(events))  # listed newest first; applied oldest first
    assert {k: set(v) for k, v in changes.reread.items() if v} == {
        "subscriptions": {"sub_1", "sub_2", "sub_3"}, "invoices": {"in_1", "in_2"},
        "customers": {"cus_1", "cus_3", "cus_4"}, "prices": {"price_1", "price_2"}, "products": {"prod_1"},
    }
    assert changes.reread["subscriptions"]["sub_1"] == 5 and changes.reread["invoices"]["in_1"] == 9
    assert {k: v for k, v in changes.deleted.items() if v} == {
        "coupons": {"C1"}, "customers": {"cus_9"}, "invoices": {"in_9"}}


def test_the_last_event_wins():
    changes = changed_objects([
        event(1, "product.created", {"id": "prod_1", "object": "product"}),
        event(2, "product.deleted", {"id": "prod_1", "object": "product"}),
        event(3, "customer.deleted", {"id": "cus_1", "object": "customer"}),
    ])
    assert "prod_1" not in changes.reread.get("products", {})
    assert changes.deleted["products"] == {"prod_1"}


def state(last_sync_days_ago: float | None, now: float) -> SyncState | None:
    if last_sync_days_ago is None:
        return None
    at = dt.datetime.fromtimestamp(now - last_sync_days_ago * 86400, dt.timezone.utc).replace(tzinfo=None)
    return SyncState("default", "evt_1", at, at, at, "full")


@pytest.mark.parametrize("mode, days, expected", [
    ("auto", None, "full"), ("auto", 1, "incremental"), ("auto", 29.99, "full"), ("auto", 29.9, "incremental"), ("auto", 31, "full"),
    ("full", 1, "full"), ("incremental", 1, "incremental"),
])
def test_choose_mode(mode, days, expected):
    now = 1_800_000_000.0
    assert sync.choose_mode(mode, state(days, now), now) == expected


@pytest.mark.parametrize("days", [None, 40])
def test_incremental_without_a_usable_cursor_says_what_to_do(days):
    now = 1_800_000_000.0
    with pytest.raises(ValueError, match="run a full sync"):
        sync.choose_mode("incremental", state(days, now), now)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=400))
def test_any_distribution_pages_exactly_once(offsets):
    created = [1_700_000_000 + o for o in offsets]
    assert sorted(page_all(ListSource(created), 8)) == sorted(f"cus_{i:06d}" for i in range(len(created)))


@pytest.mark.parametrize("ids, stored, expected", [
    pytest.param({"sub_1": 5, "sub_2": None}, 10_000, None, id="few-changes-by-id"),
    pytest.param({f"in_{i}": 1_000 + i for i in range(50)}, 10_000, 1_000, id="new-objects-listed"),
    pytest.param({**{f"in_{i}": 1_000 + i for i in range(50)}, "in_old": 10}, 10_000, 1_000,
                 id="new-listed-old-by-id"),
    pytest.param({f"cus_{i}": 10 for i in range(300)}, 20_000, 0, id="more-changed-than-a-full-list-costs"),
])
def test_read_plan(ids, stored, expected):
    assert read_plan(ids, since=1_000, stored=stored) == expected


CUSTOMERS_PAGE = orjson.dumps({"object": "list", "has_more": True, "data": [
    {"id": "cus_2", "object": "customer", "created": 20, "email": "b@x"},
    {"id": "cus_1", "object": "customer", "created": 10, "discount": {"id": "di_1", "source": {"coupon": "C"}}},
    {"id": 7},
]})


def test_helper_processes_build_the_same_rows():
    body = CUSTOMERS_PAGE
    pool = HelperPool(2)
    try:
        # More pages than helpers and pipeline slots, from many threads at once: every answer reaches its caller.
        pages: list = [None] * 12
        threads = [threading.Thread(target=lambda i=i: pages.__setitem__(
            i, pool.convert("customers", body, f"acme{i}", {}, False))) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        pool.close()
    assert all(helper.proc.returncode == 0 for helper in pool.helpers)
    for i, page in enumerate(pages):
        here = objects.page_rows("customers", body, f"acme{i}", {})
        assert page is not None
        assert (page.has_more, page.last_id, page.last_created, page.newest_created) == (True, "cus_1", 10, 20)
        for table in ("customers", "discounts"):
            assert page.rows.tables[table].equals(here.rows.tables[table])
        assert page.rows.quarantined_ids == here.rows.quarantined_ids == [("customer", None)]


def test_a_helper_that_dies_hands_its_pages_back():
    pool = HelperPool(1)
    try:
        assert pool.convert("customers", CUSTOMERS_PAGE, "acme", {}, False) is not None
        pool.helpers[0].proc.kill()
        pool.helpers[0].proc.wait()
        try:  # the pool may not have noticed yet: then the job fails instead of hanging
            assert pool.convert("customers", CUSTOMERS_PAGE, "acme", {}, False) is None
        except OSError as exc:
            assert "row-building helper" in str(exc)
        assert pool.alive == 0
        assert pool.convert("customers", CUSTOMERS_PAGE, "acme", {}, False) is None  # callers build rows then
    finally:
        pool.close()


def test_a_cursor_of_another_key_never_drives_an_incremental_sync():
    now = 1_800_000_000.0
    stored = SyncState(*state(1, now).__dict__.values())
    stored = SyncState(**{**stored.__dict__, "source": "live:sk_live_…aaaa"})
    assert sync.choose_mode("auto", stored, now, "live:sk_live_…aaaa") == "incremental"
    assert sync.choose_mode("auto", stored, now, "test:sk_test_…bbbb") == "full"
    with pytest.raises(ValueError, match="same key"):
        sync.choose_mode("incremental", stored, now, "test:sk_test_…bbbb")
