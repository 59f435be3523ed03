"""The emulator facilities the reliability suite relies on: raw objects served as given, latency spikes, and the
per-method totals the session's read-only audit reads."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer

KEY = "sk_test_facilities_0123456789"


def get(server: EmulatorServer, path: str) -> tuple[int, object]:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


@pytest.fixture(scope="module")
def account():
    return build_account(n_subscriptions=40, seed=3)


def test_injected_objects_are_listed_in_created_order_paged_and_retrievable(account):
    generated = account.counts()["subscriptions"]
    odd = {"id": "sub_injected_missing", "object": "subscription", "status": None, "created": account.now - 5}
    account.inject_raw("subscriptions", odd)
    account.inject_raw("coupons", "not an object", object_id="coupon_injected_text", created=account.now - 1)
    with EmulatorServer({KEY: account}) as server:
        status, page = get(server, "/v1/subscriptions?status=all&limit=1")
        assert status == 200 and page["data"] == [odd] and page["has_more"] is True
        ids, after = [], None
        while True:
            _, page = get(server, "/v1/subscriptions?status=all&limit=7" + (f"&starting_after={after}" if after else ""))
            ids += [s["id"] for s in page["data"]]
            if not page["has_more"]:
                break
            after = ids[-1]
        assert len(ids) == len(set(ids)) == generated + 1 and "sub_injected_missing" in ids
        # Without status Stripe hides canceled subscriptions; a null status is not canceled, so it is listed.
        _, page = get(server, "/v1/subscriptions?limit=100")
        assert odd in page["data"]
        assert get(server, "/v1/subscriptions/sub_injected_missing") == (200, odd)
        _, page = get(server, "/v1/coupons?limit=1")
        assert page["data"] == ["not an object"]
        assert get(server, "/v1/coupons/coupon_injected_text") == (200, "not an object")
    assert account.counts()["subscriptions"] == generated  # counts() is about generated objects only
    with pytest.raises(ValueError, match="already holds"):
        account.inject_raw("subscriptions", odd)
    with pytest.raises(ValueError, match="no string id"):
        account.inject_raw("prices", ["no", "id"])


def test_latency_spikes_hold_a_share_of_requests_and_are_counted(account):
    with EmulatorServer({KEY: account}, latency_spike_rate=1.0, spike_s=(0.2, 0.3)) as server:
        started = time.perf_counter()
        assert get(server, "/v1/products?limit=1")[0] == 200
        assert 0.2 <= time.perf_counter() - started < 2
        server.set_faults(latency_spike_rate=0.0)
        started = time.perf_counter()
        get(server, "/v1/products?limit=1")
        assert time.perf_counter() - started < 0.2
        assert server.stats()["latency_spikes"] == 1


def test_method_totals_survive_reset_stats(account):
    with EmulatorServer({KEY: account}) as server:
        get(server, "/v1/customers?limit=1")
        server.reset_stats()
        get(server, "/v1/customers?limit=1")
        assert server.stats()["requests"] == 1
        assert server.method_totals == {"GET": 2}
