"""The Stripe emulator behaves like Stripe's read API, driven over real HTTP by the official SDK.

Paging (each object exactly once, ties on `created`, both cursor directions), filters, expansions and their depth
limit, truncated embedded lists, the 30-day event window, Stripe's error envelopes and the SDK exceptions they
become, faults (latency, 429, 500, bad bodies), read-only enforcement, object key sets equal to Stripe's fixtures,
invoice lines that agree with the account's own history, and `mutate` for incremental syncs.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
import stripe

from stripe_sandbox.account import build_account
from stripe_sandbox.records import EVENT_WINDOW_S
from stripe_sandbox.server import SANDBOX_KEYS, EmulatorServer
from segflow_pipeline_tests.support.paths import STRIPE_FIXTURES as FIXTURES

NOW = 1767225600  # 2026-01-01T00:00:00Z: a fixed clock keeps the account identical on every run
KEY = "sk_test_sandbox_full"


@pytest.fixture(scope="module")
def account():
    return build_account(n_subscriptions=200, seed=7, now=NOW)


@pytest.fixture(scope="module")
def server(account):
    empty = build_account(n_subscriptions=0, seed=8, now=NOW, livemode=True)
    other = build_account(n_subscriptions=60, seed=99, now=NOW)
    accounts = {KEY: account, "rk_test_sandbox_readonly": account, "rk_test_sandbox_nosubs": account,
                "sk_live_sandbox_empty": empty, "sk_test_second_account": other}
    with EmulatorServer(accounts) as srv:
        yield srv


@pytest.fixture()
def client(server):
    server.set_faults(latency_s=0.0, rate_limit_per_s=None, error_rate=0.0, bad_body_rate=0.0)
    return stripe.StripeClient(KEY, base_addresses={"api": server.url}, max_network_retries=0)


def raw(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    return orjson.loads(client.raw_request("get", path, **params).body)


def http(server: EmulatorServer, path: str, key: str | None = KEY, method: str = "GET") -> tuple[int, Any, dict]:
    req = urllib.request.Request(server.url + path, method=method, data=b"a=1" if method != "GET" else None)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


# ---------------------------------------------------------------------------------------------- paging
def test_every_subscription_listed_exactly_once_across_pages(client, account):
    ids = [s.id for s in client.v1.subscriptions.list(params={"limit": 7, "status": "all"}).auto_paging_iter()]
    assert len(ids) == len(set(ids)) == len(account.subs)
    assert set(ids) == {s.id for s in account.subs}


def test_list_order_is_newest_first_with_ties_broken_by_id(client, account):
    created = collections.Counter(inv.created for inv in account.invoices)
    assert max(created.values()) >= 5, "the generated data must have many objects sharing a created second"
    rows = []
    after = None
    while True:
        params = {"limit": 100, **({"starting_after": after} if after else {})}
        body = raw(client, "/v1/invoices", **params)
        rows += [(o["created"], o["id"]) for o in body["data"]]
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    assert rows == sorted(rows, reverse=True)
    assert len(rows) == len(set(rows)) == len(account.invoices)


def test_import_batch_shares_one_created_second(account):
    created = collections.Counter(s.created for s in account.subs)
    assert max(created.values()) >= 10


def test_default_status_hides_canceled_and_incomplete_expired(client, account):
    default = {s.id for s in client.v1.subscriptions.list(params={"limit": 100}).auto_paging_iter()}
    statuses = {s.id: s.versions[-1].status for s in account.subs}
    assert default == {i for i, st in statuses.items() if st not in ("canceled", "incomplete_expired")}
    canceled = {s.id for s in client.v1.subscriptions.list(params={"limit": 100, "status": "canceled"})
                .auto_paging_iter()}
    assert canceled and canceled == {i for i, st in statuses.items() if st == "canceled"}
    assert {"active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "trialing",
            "paused"} <= set(statuses.values())


def test_customer_filter(client, account):
    sub = account.subs[27]  # the reactivation scenario: a customer with two subscriptions
    got = [s.id for s in client.v1.subscriptions.list(params={"customer": sub.customer, "status": "all"}).data]
    assert sub.id in got and len(got) == sum(1 for s in account.subs if s.customer == sub.customer) >= 2


def test_ending_before_pages_backwards(client, account):
    forward = [s.id for s in client.v1.subscriptions.list(params={"limit": 100, "status": "all"})
               .auto_paging_iter()]
    pivot = forward[150]
    backward = [s.id for s in client.v1.subscriptions.list(
        params={"limit": 9, "status": "all", "ending_before": pivot}).auto_paging_iter()]
    # The SDK yields backward pages oldest first: exactly the objects newer than the pivot, reversed.
    assert backward == forward[:150][::-1]
    page = raw(client, "/v1/subscriptions", limit=5, status="all", ending_before=pivot)
    assert [o["id"] for o in page["data"]] == forward[145:150] and page["has_more"] is True


def test_created_filters_are_half_open_and_split_exactly(client, account):
    created = collections.Counter(inv.created for inv in account.invoices)
    tie, n_tie = max(created.items(), key=lambda kv: kv[1])

    def ids(**filters: int) -> list[str]:
        params = {"limit": 100, **{f"created[{k}]": v for k, v in filters.items()}}
        out, after = [], None
        while True:
            body = raw(client, "/v1/invoices", **params, **({"starting_after": after} if after else {}))
            out += [o["id"] for o in body["data"]]
            if not body["has_more"]:
                return out
            after = out[-1]

    exact = ids(gte=tie, lte=tie)
    assert len(exact) == n_tie
    assert len(raw(client, "/v1/invoices", created=tie, limit=100)["data"]) == min(n_tie, 100)
    lo, hi = tie - 40 * 86400, tie + 40 * 86400
    whole = ids(gte=lo, lt=hi)
    left, right = ids(gte=lo, lt=tie), ids(gte=tie, lt=hi)
    assert sorted(left + right) == sorted(whole) and not set(left) & set(right)
    assert set(ids(gt=tie, lt=hi)) == set(right) - set(exact)
    expected = {i.id for i in account.invoices if lo <= i.created < hi}
    assert set(whole) == expected


def test_limit_bounds_and_cursor_errors(client, server):
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as err:
            raw(client, "/v1/customers", limit=bad)
        assert err.value.http_status == 400 and err.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as err:
        raw(client, "/v1/subscriptions", starting_after="sub_doesnotexist")
    assert err.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as err:
        raw(client, "/v1/subscriptions", bogus="1")
    assert "unknown parameter" in str(err.value)
    assert len(raw(client, "/v1/customers")["data"]) == 10


def test_retrieve_and_missing_ids(client, account):
    sub = account.subs[0]
    got = client.v1.subscriptions.retrieve(sub.id)
    assert got.id == sub.id and got.object == "subscription"
    item = sub.versions[-1].items[0]
    assert client.v1.subscription_items.retrieve(item.id).subscription == sub.id
    assert client.v1.invoices.retrieve(account.invoices[3].id).id == account.invoices[3].id
    assert raw(client, "/v1/account")["object"] == "account"
    assert raw(client, "/v1/balance")["object"] == "balance"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.retrieve("cus_missing")
    assert err.value.http_status == 404 and err.value.code == "resource_missing"


def test_subscription_items_list_requires_subscription(client, account):
    with pytest.raises(stripe.InvalidRequestError):
        raw(client, "/v1/subscription_items")
    sub = account.subs[2]  # enterprise with 15 items
    items = list(client.v1.subscription_items.list(params={"subscription": sub.id, "limit": 5}).auto_paging_iter())
    assert [i.id for i in items] == [it.id for it in sub.versions[-1].items] and len(items) == 15
    embedded = raw(client, f"/v1/subscriptions/{sub.id}")["items"]
    assert len(embedded["data"]) == 15 and embedded["has_more"] is False
    assert embedded["url"] == f"/v1/subscription_items?subscription={sub.id}"


# ---------------------------------------------------------------------------------------------- embedded lists
def test_invoice_lines_truncated_at_10_and_paged_from_url(client, account):
    big = next(inv for inv in account.invoices if len(inv.lines) >= 15)
    body = raw(client, f"/v1/invoices/{big.id}")
    lines = body["lines"]
    assert len(lines["data"]) == 10 and lines["has_more"] is True
    assert lines["total_count"] == len(big.lines) and lines["url"] == f"/v1/invoices/{big.id}/lines"
    paged = list(client.v1.invoices.line_items.list(big.id, params={"limit": 4}).auto_paging_iter())
    assert [ln.id for ln in paged] == [ln.id for ln in big.lines] and len(paged) >= 15


# ---------------------------------------------------------------------------------------------- expansions
def test_price_tiers_only_when_expanded(client):
    plain = raw(client, "/v1/prices", limit=100)["data"]
    assert all("tiers" not in p for p in plain)
    expanded = raw(client, "/v1/prices", limit=100, expand=["data.tiers"])["data"]
    tiered = [p for p in expanded if p["billing_scheme"] == "tiered"]
    assert {p["tiers_mode"] for p in tiered} == {"volume", "graduated"}
    assert all(p["tiers"] and {"up_to", "unit_amount", "flat_amount"} <= set(p["tiers"][0]) for p in tiered)
    assert tiered[0]["tiers"][-1]["up_to"] is None
    one = raw(client, f"/v1/prices/{tiered[0]['id']}", expand=["tiers"])
    assert one["tiers"] == tiered[0]["tiers"]
    assert "tiers" not in raw(client, f"/v1/prices/{tiered[0]['id']}")


def test_expand_depth_limit(client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        raw(client, "/v1/subscriptions", expand=["data.items.data.price.tiers"])
    assert err.value.http_status == 400 and "4 levels" in str(err.value)
    assert raw(client, "/v1/subscriptions", expand=["data.items.data.price"], limit=3)["data"]
    with pytest.raises(stripe.InvalidRequestError):
        raw(client, "/v1/subscriptions", expand=["customer"])  # a list needs the data. prefix


def test_discounts_ids_unless_expanded(client, account):
    sub = account.subs[21]  # LAUNCH25 forever
    plain = raw(client, f"/v1/subscriptions/{sub.id}")
    assert plain["discounts"] and all(isinstance(d, str) for d in plain["discounts"])
    expanded = raw(client, "/v1/subscriptions", customer=sub.customer, expand=["data.discounts"])["data"][0]
    disc = expanded["discounts"][0]
    assert disc["object"] == "discount" and disc["source"] == {"coupon": "LAUNCH25", "type": "coupon"}
    cust = raw(client, f"/v1/customers/{account.subs[26].customer}")
    assert cust["discount"]["source"]["coupon"] == "LOYALTY10"


# ---------------------------------------------------------------------------------------------- events
def test_events_only_last_30_days_with_type_filters(client, account):
    events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
    assert events and all(e.created >= account.now - EVENT_WINDOW_S for e in events)
    assert len(events) == len(account.events)
    types = collections.Counter(e.type for e in events)
    assert {"customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
            "invoice.created", "invoice.paid"} <= set(types)
    only = raw(client, "/v1/events", type="customer.subscription.updated", limit=100)["data"]
    assert only and {e["type"] for e in only} == {"customer.subscription.updated"}
    assert all("previous_attributes" in e["data"] for e in only)
    several = raw(client, "/v1/events", types=["invoice.paid", "customer.subscription.deleted"], limit=100)
    assert {e["type"] for e in several["data"]} == {"invoice.paid", "customer.subscription.deleted"}
    created = raw(client, "/v1/events", type="invoice.created", limit=5)["data"]
    assert created and all(e["data"]["object"]["status"] == "draft" for e in created)  # as the event saw it
    wild = raw(client, "/v1/events", type="customer.subscription.*", limit=100)["data"]
    assert wild and all(e["type"].startswith("customer.subscription.") for e in wild)


def test_update_events_carry_previous_attributes(client, account):
    upd = raw(client, "/v1/events", type="customer.subscription.updated", limit=100)["data"]
    cancel = [e for e in upd if "cancel_at_period_end" in e["data"]["previous_attributes"]]
    assert cancel and cancel[0]["data"]["previous_attributes"]["cancel_at_period_end"] is False
    assert cancel[0]["data"]["object"]["cancel_at_period_end"] is True
    item_changes = [e for e in upd if "items" in e["data"]["previous_attributes"]]
    assert item_changes
    old = item_changes[0]["data"]["previous_attributes"]["items"]["data"]
    assert old and old[0]["object"] == "subscription_item"


# ---------------------------------------------------------------------------------------------- auth and errors
def test_invalid_and_missing_key_401(server):
    bad = stripe.StripeClient("sk_test_thisisnotakey1234", base_addresses={"api": server.url},
                              max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as err:
        bad.v1.customers.list()
    assert "sk_test_" in str(err.value) and "thisisnotakey1234" not in str(err.value) and "1234" in str(err.value)
    status, body, _ = http(server, "/v1/customers", key=None)
    assert status == 401 and orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert all("thisisnotakey" not in entry[3] for entry in server.request_log)


def test_restricted_key_without_subscription_permission_403(server):
    c = stripe.StripeClient("rk_test_sandbox_nosubs", base_addresses={"api": server.url}, max_network_retries=0)
    with pytest.raises(stripe.PermissionError) as err:
        c.v1.subscriptions.list()
    assert "rak_subscription_read" in str(err.value)
    assert err.value.json_body["error"]["code"] == "more_permissions_required"
    assert "sandbox_nosubs" not in str(err.value)
    with pytest.raises(stripe.PermissionError):
        c.v1.subscription_items.list(params={"subscription": "sub_x"})
    assert c.v1.invoices.list().data and c.v1.customers.list().data
    ro = stripe.StripeClient("rk_test_sandbox_readonly", base_addresses={"api": server.url}, max_network_retries=0)
    assert ro.v1.subscriptions.list().data


def test_live_key_sees_empty_account(server):
    c = stripe.StripeClient("sk_live_sandbox_empty", base_addresses={"api": server.url}, max_network_retries=0)
    for res in (c.v1.subscriptions, c.v1.invoices, c.v1.customers, c.v1.prices, c.v1.events):
        assert res.list().data == []
    assert raw(c, "/v1/balance")["livemode"] is True


def test_several_accounts_on_one_server(server, account):
    c = stripe.StripeClient("sk_test_second_account", base_addresses={"api": server.url}, max_network_retries=0)
    other = {s.id for s in c.v1.subscriptions.list(params={"status": "all", "limit": 100}).auto_paging_iter()}
    assert len(other) == 60 and not other & {s.id for s in account.subs}


def test_rate_limit_429_without_should_retry(server, client):
    server.set_faults(rate_limit_per_s=2)
    try:
        statuses = []
        headers = {}
        for _ in range(8):
            status, body, hdrs = http(server, "/v1/customers?limit=1")
            statuses.append(status)
            if status == 429:
                headers = hdrs
                err = orjson.loads(body)["error"]
        assert 429 in statuses
        assert err["type"] == "invalid_request_error" and err["code"] == "rate_limit"
        assert not any(h.lower() == "stripe-should-retry" for h in headers)
        with pytest.raises(stripe.RateLimitError):
            for _ in range(8):
                client.v1.customers.list()
    finally:
        server.set_faults(rate_limit_per_s=None)


def test_error_rate_500(server, client):
    server.set_faults(error_rate=1.0)
    try:
        with pytest.raises(stripe.APIError) as err:
            client.v1.customers.list()
        assert err.value.http_status == 500
    finally:
        server.set_faults(error_rate=0.0)
    assert client.v1.customers.list().data


def test_bad_bodies_on_purpose(server):
    server.set_faults(bad_body_rate=1.0)
    try:
        seen = set()
        for _ in range(20):
            status, body, headers = http(server, "/v1/customers?limit=3")
            if status == 502:
                assert b"<html>" in body
                seen.add("html")
            else:
                with pytest.raises(json.JSONDecodeError):
                    json.loads(body)
                seen.add("truncated")
        assert seen == {"html", "truncated"}
    finally:
        server.set_faults(bad_body_rate=0.0)


@pytest.mark.emulator_write_probe
def test_non_get_refused_and_counted(server, client):
    before = server.non_get_requests
    status, body, _ = http(server, "/v1/customers", method="POST")
    assert status == 400 and orjson.loads(body)["error"]["type"] == "invalid_request_error"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"email": "x@example.com"})
    status, _, _ = http(server, "/v1/subscriptions/sub_x", method="DELETE")
    assert status == 400
    assert server.non_get_requests == before + 3


def test_latency_is_added_and_requests_overlap(server, client):
    server.set_faults(latency_s=0.25)
    try:
        t0 = time.perf_counter()
        client.v1.customers.list(params={"limit": 1})
        single = time.perf_counter() - t0
        assert single >= 0.25
        t0 = time.perf_counter()
        threads = [threading.Thread(target=http, args=(server, "/v1/customers?limit=1")) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.perf_counter() - t0 < 0.25 * 3
    finally:
        server.set_faults(latency_s=0.0)


def test_request_log_and_stats(server, client):
    client.v1.products.list()
    method, path, status, key = server.request_log[-1]
    assert (method, status) == ("GET", 200) and path.startswith("/v1/products")
    assert key.startswith("sk_test_") and key.endswith("full") and "sandbox" not in key
    stats = server.stats()
    assert stats["requests"] >= 1 and stats["by_status"][200] >= 1


# ---------------------------------------------------------------------------------------------- shapes
def _keys(obj: dict) -> set[str]:
    return set(obj)


def test_key_sets_equal_stripe_fixtures(client, account):
    fx = json.loads(FIXTURES.read_text())["resources"]
    subs = raw(client, "/v1/subscriptions", limit=100, status="all")["data"]
    for s in subs:
        assert _keys(s) == _keys(fx["subscription"])
        for it in s["items"]["data"]:
            assert _keys(it) == _keys(fx["subscription_item"])
            assert _keys(it["price"]) == _keys(fx["price"])
            assert _keys(it["price"]["recurring"]) == _keys(fx["price"]["recurring"])
            assert _keys(it["plan"]) == _keys(fx["subscription_item"]["plan"])
        assert _keys(s["items"]) == _keys(fx["subscription"]["items"])
        assert _keys(s["cancellation_details"]) == _keys(fx["subscription"]["cancellation_details"])
        assert _keys(s["invoice_settings"]) == _keys(fx["subscription"]["invoice_settings"])
        assert _keys(s["automatic_tax"]) == _keys(fx["subscription"]["automatic_tax"])
        assert _keys(s["billing_mode"]) == _keys(fx["subscription"]["billing_mode"])
    big = next(inv for inv in account.invoices if len(inv.lines) > 10)
    invoices = raw(client, "/v1/invoices", limit=100)["data"] + [raw(client, f"/v1/invoices/{big.id}")]
    fx_line = fx["line_item"]
    for inv in invoices:
        assert _keys(inv) == _keys(fx["invoice"])
        # Stripe adds total_count to an invoice's embedded lines.
        assert _keys(inv["lines"]) == _keys(fx["invoice"]["lines"]) | {"total_count"}
        assert _keys(inv["parent"]) == _keys(fx["invoice"]["parent"])
        assert _keys(inv["parent"]["subscription_details"]) == _keys(fx["invoice"]["parent"]["subscription_details"])
        assert _keys(inv["status_transitions"]) == _keys(fx["invoice"]["status_transitions"])
        for ln in inv["lines"]["data"]:
            assert _keys(ln) == _keys(fx_line) == _keys(fx["invoice"]["lines"]["data"][0])
            assert _keys(ln["parent"]) == _keys(fx_line["parent"])
            assert _keys(ln["period"]) == _keys(fx_line["period"])
            details = ln["parent"]["subscription_item_details"] or ln["parent"]["invoice_item_details"]
            fx_details = fx_line["parent"][ln["parent"]["type"]]
            assert _keys(details) == _keys(fx_details)
            # The fixture omits price_details, which current versions return for price-based lines.
            assert _keys(ln["pricing"]) == _keys(fx_line["pricing"]) | {"price_details"}
            assert set(ln["pricing"]["price_details"]) == {"price", "product"}
    for name, path in (("customer", "/v1/customers"), ("price", "/v1/prices"), ("product", "/v1/products"),
                       ("coupon", "/v1/coupons"), ("event", "/v1/events")):
        for obj in raw(client, path, limit=100)["data"]:
            assert _keys(obj) == _keys(fx[name]), name
    cust = raw(client, f"/v1/customers/{account.subs[26].customer}")
    assert _keys(cust["discount"]) == _keys(fx["discount"]) == _keys(fx["customer"]["discount"])
    assert _keys(cust["discount"]["source"]) == _keys(fx["discount"]["source"])
    sub = raw(client, f"/v1/subscriptions/{account.subs[21].id}", expand=["discounts"])
    assert _keys(sub["discounts"][0]) == _keys(fx["discount"])
    assert _keys(raw(client, "/v1/account")) == _keys(fx["account"])
    assert _keys(raw(client, "/v1/balance")) == _keys(fx["balance"])


def test_amounts_and_currencies(client, account):
    prices = raw(client, "/v1/prices", limit=100)["data"]
    jpy = [p for p in prices if p["currency"] == "jpy"]
    assert jpy and all(p["unit_amount"] >= 1000 and p["unit_amount"] % 100 == 0 for p in jpy)
    intervals = {(p["recurring"] or {}).get("interval") for p in prices}
    assert {"month", "year", "week"} <= intervals
    assert any((p["recurring"] or {}).get("interval_count") == 3 for p in prices)
    assert any((p["recurring"] or {}).get("usage_type") == "metered" for p in prices)
    assert any(p["transform_quantity"] for p in prices)
    coupons = {c["id"]: c for c in raw(client, "/v1/coupons", limit=100)["data"]}
    assert {c["duration"] for c in coupons.values()} == {"forever", "once", "repeating"}
    assert any(c["amount_off"] for c in coupons.values()) and any(c["percent_off"] for c in coupons.values())


# ---------------------------------------------------------------------------------------------- history
def _segment_at(account, sub_id: str, item: str, t: int):
    for seg in account.history[sub_id]:
        if seg.item == item and seg.start <= t and (seg.end is None or t < seg.end):
            return seg
    return None


def test_invoice_lines_agree_with_history(client, account):
    price_usage = {p.id: p.usage_type for p in account.prices}
    checked = prorations = 0
    after = None
    while True:
        body = raw(client, "/v1/invoices", limit=100, **({"starting_after": after} if after else {}))
        for inv in body["data"]:
            sub_id = inv["parent"]["subscription_details"]["subscription"]
            lines = inv["lines"]["data"]
            if inv["lines"]["has_more"]:
                lines = raw(client, f"/v1/invoices/{inv['id']}/lines", limit=100)["data"]
            for ln in lines:
                details = ln["parent"]["subscription_item_details"]
                price = ln["pricing"]["price_details"]["price"]
                if details is None or price_usage[price] == "metered":
                    continue
                assert details["subscription"] == sub_id
                start = ln["period"]["start"]
                if details["proration"]:
                    prorations += 1
                    if ln["amount"] < 0:  # credit for the old configuration, which ended at the change
                        seg = _segment_at(account, sub_id, details["subscription_item"], start - 1)
                        assert seg is not None and seg.end == start
                    else:  # charge for the new configuration, which started at the change
                        seg = _segment_at(account, sub_id, details["subscription_item"], start)
                        assert seg is not None and seg.start == start
                else:
                    seg = _segment_at(account, sub_id, details["subscription_item"], start)
                    assert seg is not None, (inv["id"], ln["id"])
                checked += 1
                assert (seg.price, seg.quantity) == (price, ln["quantity"]), (inv["id"], ln["id"])
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    assert checked > 500 and prorations >= 4


def test_subscription_shapes_follow_current_api_version(client, account):
    subs = raw(client, "/v1/subscriptions", limit=100, status="all")["data"]
    by_status = {s["status"]: s for s in subs}
    active = by_status["active"]
    assert "current_period_start" not in active and active["items"]["data"][0]["current_period_end"] > NOW
    pending = next(s for s in subs if s["cancel_at_period_end"])
    assert pending["status"] == "active" and pending["cancel_at"] > NOW and pending["canceled_at"] <= NOW
    canceled = by_status["canceled"]
    assert canceled["ended_at"] and canceled["canceled_at"]
    trialing = by_status["trialing"]
    assert trialing["trial_end"] > NOW
    assert by_status["incomplete_expired"]["ended_at"]


def test_build_is_deterministic():
    a1 = build_account(n_subscriptions=80, seed=3, now=NOW)
    a2 = build_account(n_subscriptions=80, seed=3, now=NOW)
    assert [s.id for s in a1.subs] == [s.id for s in a2.subs]
    assert a1.encoded("invoices", 10) == a2.encoded("invoices", 10)
    assert a1.counts() == a2.counts()


# ---------------------------------------------------------------------------------------------- mutate
def test_mutate_changes_objects_and_appends_events():
    acct = build_account(n_subscriptions=150, seed=11, now=NOW)
    with EmulatorServer({KEY: acct}) as srv:
        c = stripe.StripeClient(KEY, base_addresses={"api": srv.url}, max_network_retries=0)
        before = {s["id"]: s for s in raw(c, "/v1/subscriptions", limit=100, status="all")["data"]}
        before_events = {e.id for e in c.v1.events.list(params={"limit": 100}).auto_paging_iter()}
        t = NOW + 3600
        changed = acct.mutate(fraction=0.1, seed=1, now=t)
        assert len(changed) >= 10 and acct.now == t
        new_events = [e for e in c.v1.events.list(params={"limit": 100, "created[gte]": t}).auto_paging_iter()]
        assert new_events and all(e.id not in before_events for e in new_events)
        types = collections.Counter(e.type for e in new_events)
        assert types["customer.subscription.updated"] + types["customer.subscription.deleted"] >= 5
        assert types["customer.subscription.created"] >= 1 and types["invoice.created"] >= 1
        touched = {e.data.object.id for e in new_events if e.type.startswith("customer.subscription.")}
        assert touched <= set(changed)
        for e in new_events:
            if e.type == "customer.subscription.updated":
                assert e.data["previous_attributes"]
        after = {s["id"]: s for s in raw(c, "/v1/subscriptions", limit=100, status="all")["data"]}
        differs = [i for i in changed if i in before and i in after and before[i] != after[i]]
        assert differs
        created_ids = [i for i in changed if i not in {s.id for s in acct.subs[:150]}]
        assert created_ids and all(c.v1.subscriptions.retrieve(i).created == t for i in created_ids)
        assert acct.counts()["subscriptions"] == 150 + len(created_ids)
        assert {i for i in changed if i in before} <= set(acct.history)


def test_sandbox_keys_are_valid_key_strings():
    import re

    for key in SANDBOX_KEYS:
        assert re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}", key)
