"""Objects Stripe should not send, served by the emulator beside a normal account (`inject_raw`): each becomes a
stripe.quarantine row or a metrics.mrr_unusable_rows row with its reason, the run succeeds, and MRR is exactly the
fault-free run's (bad objects contribute nothing). Responses that are not JSON end in a clear error."""

from __future__ import annotations

import dagster as dg
import duckdb
import orjson
import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
from segflow_pipeline_tests.support.reliability import (
    N_SUBSCRIPTIONS,
    SEED,
    apply_env,
    check_results,
    make_env,
    materialization_metadata,
    published_state,
    run_job,
)

DAY = 86400


def bad_objects(account) -> tuple[list[tuple[str, object, dict]], dict[str | None, str], dict[str, str]]:
    """(resource, object, inject_raw options), the quarantine reasons and the unusable-row reasons expected."""
    t = account.now - 40 * DAY
    customer = account.customers[0].id
    sub = orjson.loads(account.encoded("subscriptions", 0))
    price = sub["items"]["data"][0]["price"]

    def subscription(sid: str, price_obj: dict | str = price, **fields) -> dict:
        item = {"id": f"si_{sid}", "object": "subscription_item", "price": price_obj, "quantity": 1, "created": t,
                "current_period_start": account.now - DAY, "current_period_end": account.now + 29 * DAY,
                "discounts": []}
        obj = {"id": sid, "object": "subscription", "customer": customer, "status": "active", "currency": "usd",
               "created": t, "start_date": t, "cancel_at_period_end": False, "discounts": [],
               "items": {"object": "list", "data": [item], "has_more": False, "url": "/v1/subscription_items"}}
        return {**obj, **fields}

    negative = {**price, "id": "price_rel_negative", "unit_amount": -500, "unit_amount_decimal": "-500"}
    one_time = {**price, "id": "price_rel_one_time", "type": "one_time", "recurring": None}
    too_big = {**price, "id": "price_rel_too_big", "unit_amount": 10**20, "unit_amount_decimal": str(10**20)}
    objects = [
        ("subscriptions", subscription("sub_rel_xyz", currency="xyz"), {}),
        ("subscriptions", subscription("sub_rel_deleted_price", {**price, "id": "price_rel_deleted"}), {}),
        ("prices", negative, {"created": t}),
        ("subscriptions", subscription("sub_rel_negative", negative), {}),
        ("prices", one_time, {"created": t}),
        ("subscriptions", subscription("sub_rel_one_time", one_time), {}),
        ("prices", too_big, {"created": t}),
        ("subscriptions", subscription("sub_rel_wrong_type", created="yesterday"), {"created": t}),
        ("coupons", "not an object", {"object_id": "coupon_rel_text", "created": t}),
        ("products", {"id": "prod_rel_deleted", "object": "product", "deleted": True}, {"created": t}),
        ("events", {"id": "evt_rel_gone", "object": "event", "type": "customer.subscription.updated",
                    "created": account.now - DAY, "api_version": "2026-10-28.endive",
                    "data": {"object": subscription("sub_rel_gone"), "previous_attributes": {"status": "trialing"}}},
         {}),
    ]
    quarantined = {
        "sub_rel_wrong_type": "subscriptions.created",
        None: "not a JSON object (str)",  # a bare string has no id to file it under
        "price_rel_too_big": "prices.unit_amount",
    }
    unusable = {
        "sub_rel_xyz": "unknown currency",
        "si_sub_rel_deleted_price": "price not found",
        "price_rel_negative": "negative unit_amount",
        "si_sub_rel_negative": "unusable price: negative unit_amount",
        "price_rel_one_time": "one-time price",
        "si_sub_rel_one_time": "unusable price: one-time price",
    }
    return objects, quarantined, unusable


def missing_fields(account) -> tuple[list[dict], dict[str, str]]:
    """Subscriptions with fields missing or null, and the unusable-row reasons expected."""
    t = account.now - 40 * DAY
    bare = {"id": "sub_rel_bare", "object": "subscription", "created": t}
    sub = orjson.loads(account.encoded("subscriptions", 0))
    null_status = {**sub, "id": "sub_rel_null_status", "status": None, "created": t,
                   "items": {**sub["items"], "data": [
                       {**item, "id": f"si_rel_null_status_{i}", "subscription": "sub_rel_null_status"}
                       for i, item in enumerate(sub["items"]["data"])]}}
    return [bare, null_status], {"sub_rel_bare": "subscription without customer",
                                 "sub_rel_null_status": "unknown status"}


def without(rows: list[tuple], ids: set[str]) -> list[tuple]:
    return [row for row in rows if not any(isinstance(v, str) and v in ids for v in row)]


@pytest.mark.slow
def test_bad_objects_are_quarantined_or_reported_and_mrr_is_unchanged(reference, tmp_path, monkeypatch):
    account = build_account(n_subscriptions=N_SUBSCRIPTIONS, seed=SEED, now=reference.account.now)
    objects, quarantined, unusable = bad_objects(account)
    injected = {account.inject_raw(resource, obj, **options) for resource, obj, options in objects}
    injected |= {"si_" + i for i in injected} | {"price_rel_deleted"}
    with EmulatorServer({reference.key: account}) as server:
        env = make_env(tmp_path, server.url, reference.key)
        apply_env(monkeypatch, env)
        result = run_job(max_requests_per_second=500)
        assert result.success
        state = published_state(env.published)
        con = duckdb.connect(str(env.published), read_only=True)
        try:
            quarantine = dict(con.execute("select object_id, reason from stripe.quarantine").fetchall())
            reported = dict(con.execute("select object_id, reason from metrics.mrr_unusable_rows").fetchall())
            deleted = con.execute("select deleted from stripe.products where id = 'prod_rel_deleted'").fetchall()
        finally:
            con.close()

        # Each bad object once, with its reason, where it belongs.
        assert set(quarantine) == set(quarantined)
        for object_id, reason in quarantined.items():
            assert reason in quarantine[object_id], (object_id, quarantine[object_id])
        for object_id, reason in unusable.items():
            assert reason in reported.get(object_id, ""), (object_id, reported.get(object_id))
        assert deleted == [(True,)]
        # MRR is exactly the fault-free run's, and so is every row that is not about a bad object.
        assert state["metrics.mrr_daily"] == reference.state["metrics.mrr_daily"]
        for table, rows in reference.state.items():
            if table != "stripe.quarantine":  # checked above
                assert without(state[table], injected) == rows, table

        # An event about a subscription that no longer exists, seen by an incremental sync: it cannot be read
        # again (404), the run says so and goes on, and nothing changes.
        account.inject_raw("events", {
            "id": "evt_rel_gone_later", "object": "event", "type": "customer.subscription.deleted",
            "created": account.now + 60, "api_version": "2026-10-28.endive",
            "data": {"object": {"id": "sub_rel_vanished", "object": "subscription", "customer": "cus_rel_gone",
                                "created": account.now - DAY, "status": "canceled"}}})
        with dg.DagsterInstance.ephemeral() as instance:
            again = run_job(full=False, max_requests_per_second=500, instance=instance)
            logs = [entry.user_message for entry in instance.all_logs(again.run_id)]
        assert again.success
        assert any("could not be read again (404)" in m and "sub_rel_vanished" in m for m in logs)
        assert materialization_metadata(again, "stripe/subscriptions")["sync_mode"] == "incremental"
        assert published_state(env.published)["metrics.mrr_daily"] == reference.state["metrics.mrr_daily"]


@pytest.fixture(scope="module")
def missing_fields_run(reference, tmp_path_factory):
    """A full refresh of the account plus two subscriptions with fields missing, over a good published file."""
    account = build_account(n_subscriptions=N_SUBSCRIPTIONS, seed=SEED, now=reference.account.now)
    subscriptions, expected = missing_fields(account)
    for obj in subscriptions:
        account.inject_raw("subscriptions", obj)
    root = tmp_path_factory.mktemp("missing_fields")
    mp = pytest.MonkeyPatch()
    try:
        with EmulatorServer({reference.key: account}) as server:
            env = make_env(root, server.url, reference.key)
            env.published.parent.mkdir(parents=True)
            env.published.write_bytes(reference.published.read_bytes())
            apply_env(mp, env)
            result = run_job(max_requests_per_second=500)
    finally:
        mp.undo()
    yield result, env, expected


@pytest.mark.slow
def test_subscriptions_with_missing_fields_are_reported_and_never_cost_the_published_data(
        missing_fields_run, reference):
    result, env, expected = missing_fields_run
    con = duckdb.connect(str(env.working_dir / "default.duckdb"), read_only=True)
    try:
        reported = dict(con.execute("select object_id, reason from metrics.mrr_unusable_rows").fetchall())
        mrr = con.execute("select * from metrics.mrr_daily order by all").fetchall()
    finally:
        con.close()
    for object_id, reason in expected.items():
        assert reason in reported.get(object_id, ""), (object_id, reported.get(object_id))
    assert mrr == reference.state["metrics.mrr_daily"]
    if result.success:
        assert published_state(env.published)["metrics.mrr_daily"] == reference.state["metrics.mrr_daily"]
    else:
        # A clear, named check failure, never a crash; the published file is the previous one, byte for byte.
        failed = [name for name, evaluation in check_results(result).items() if not evaluation.passed]
        assert failed
        assert env.published.read_bytes() == reference.published.read_bytes()


def test_subscriptions_with_missing_fields_do_not_block_publishing(missing_fields_run):
    result, _, _ = missing_fields_run
    failed = [name for name, evaluation in check_results(result).items() if not evaluation.passed]
    assert result.success, failed


def test_bodies_that_are_not_json_end_in_a_clear_error(reference):
    # Every answer is broken: JSON cut short (HTTP 200) or a proxy's HTML 502 page. After its retries the reader
    # says which request failed and what to check.
    with EmulatorServer({reference.key: reference.account}, bad_body_rate=1.0, seed=3) as server:
        reader = StripeReader(reference.key, api_base=server.url, max_retries=3, backoff_base=0.01,
                              max_requests_per_second=500)
        for _ in range(4):
            with pytest.raises(StripeAPIFailure) as info:
                reader.get("/v1/customers", {"limit": 10}, resource="customers")
            message = str(info.value)
            assert message.startswith("Stripe GET /v1/customers failed") and "after 4 attempt(s)" in message
            assert f"STRIPE_API_BASE ({server.url})" in message
            assert "cut short" in message or "HTTP 502" in message
        assert server.stats()["requests"] == 16
