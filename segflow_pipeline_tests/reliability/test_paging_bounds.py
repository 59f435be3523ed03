"""Paging always ends: a server that ignores the cursor, one whose cursors go round in a circle and one that invents
new objects forever each stop the sync with an error naming the endpoint, after a handful of requests, and a run
fails at once instead of being retried (the account's lock is released, the published file untouched).

Before the fix the first server was read forever (5,872 requests in 300 s); the fakes here answer 400 after
`STOP_AFTER` requests so that a regression fails the test instead of hanging it."""

from __future__ import annotations

import duckdb
import pytest

from segflow_pipeline.resources.raw_sync import sync_account
from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
from segflow_pipeline.warehouse import raw
from segflow_pipeline_tests.support.reliability import (
    FakeStripe,
    Request,
    apply_env,
    distinctive_key,
    empty_list,
    json_answer,
    make_env,
    run_job,
    step_events,
)

KEY = distinctive_key()
STOP_AFTER = 300
T = 1_780_000_000


def sub(i: int, created: int) -> dict:
    return {"id": f"sub_{i:06d}", "object": "subscription", "customer": "cus_1", "status": "active",
            "currency": "usd", "created": created, "start_date": created, "cancel_at_period_end": False,
            "discounts": [], "items": {"object": "list", "data": [], "has_more": False}}


def page(data: list[dict], has_more: bool = True) -> tuple[int, bytes, str]:
    return json_answer({"object": "list", "url": "/v1/subscriptions", "data": data, "has_more": has_more})


def stopping(script):
    """Answer with `script` for /v1/subscriptions, empty lists elsewhere, and 400 after STOP_AFTER requests."""
    def answer(fake: FakeStripe, request: Request):
        n = fake.count()
        if n > STOP_AFTER:
            return json_answer({"error": {"type": "invalid_request_error", "message": "test fake: stop"}}, 400)
        if request.path == "/v1/subscriptions":
            return script(request, n)
        return empty_list(request.path)
    return answer


def ignores_cursor(request: Request, n: int):
    # Always the first page, ending at sub_000001, whatever `starting_after` and `created` say.
    return page([sub(2, T), sub(1, T - 10)])


def circle(request: Request, n: int):
    # Page A ends at sub_000002, page B at sub_000004, and the page after B is A again.
    if request.query.get("starting_after") == "sub_000002":
        return page([sub(3, T - 20), sub(4, T - 30)])
    return page([sub(1, T), sub(2, T - 10)])


def endless(request: Request, n: int):
    # Objects never seen before on every page (numbered by the request), inside the window asked for: a list that
    # never ends.
    newest = int(request.query.get("created[lt]", T + 1)) - 1
    return page([sub(n * 2, newest), sub(n * 2 + 1, newest)])


def read_all(url: str, max_pages: int | None = None) -> int:
    reader = StripeReader(KEY, api_base=url, max_retries=1, backoff_base=0.01)
    kwargs = {"max_pages": max_pages} if max_pages else {}
    return sum(len(p) for p in reader.iter_pages("/v1/subscriptions", {"status": "all"}, resource="subscriptions",
                                                 **kwargs))


@pytest.mark.parametrize("script, words", [
    (ignores_cursor, "does not advance: the page after starting_after=sub_000001 ends at sub_000001"),
    (circle, "the cursor sub_000002 came back"),
])
def test_sequential_paging_stops_on_a_cursor_that_does_not_advance(script, words):
    with FakeStripe(stopping(script)) as fake:
        with pytest.raises(StripeAPIFailure) as info:
            read_all(fake.url)
        requests = fake.count("/v1/subscriptions")
    message = str(info.value)
    assert message.startswith("Stripe GET /v1/subscriptions"), message
    assert words in message, message
    assert requests <= 3
    assert not info.value.retriable


def test_sequential_paging_stops_after_more_pages_than_plausible():
    with FakeStripe(stopping(endless)) as fake:
        with pytest.raises(StripeAPIFailure, match=r"Stripe GET /v1/subscriptions .*more than 25 pages"):
            read_all(fake.url, max_pages=25)
        assert fake.count("/v1/subscriptions") == 25


@pytest.mark.parametrize("script", [ignores_cursor, circle])
def test_full_sync_stops_on_a_repeated_cursor_naming_the_endpoint(script):
    con = duckdb.connect()
    raw.ensure_tables(con)
    with FakeStripe(stopping(script)) as fake:
        reader = StripeReader(KEY, api_base=fake.url, max_retries=1, backoff_base=0.01,
                              max_requests_per_second=500)
        with pytest.raises(StripeAPIFailure) as info:
            sync_account(reader, con, mode="full")
        requests = fake.count("/v1/subscriptions")
    assert "/v1/subscriptions" in str(info.value) and not info.value.retriable, str(info.value)
    assert requests <= 20
    # Nothing of the failed sync was kept.
    assert con.execute("select count(*) from stripe.subscriptions").fetchone() == (0,)


def test_full_sync_stops_after_more_pages_than_plausible():
    con = duckdb.connect()
    raw.ensure_tables(con)
    with FakeStripe(stopping(endless)) as fake:
        reader = StripeReader(KEY, api_base=fake.url, max_retries=1, backoff_base=0.01,
                              max_requests_per_second=500)
        with pytest.raises(StripeAPIFailure, match="more than 40 pages") as info:
            sync_account(reader, con, mode="full", max_pages=40)
        assert "/v1/subscriptions" in str(info.value)
        assert fake.count() < 80


def test_a_refresh_against_a_server_ignoring_the_cursor_fails_once_with_the_endpoint(tmp_path, monkeypatch):
    with FakeStripe(stopping(ignores_cursor)) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        apply_env(monkeypatch, env)
        result = run_job()
        requests = fake.count()
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    failures = step_events(result, "STEP_FAILURE")
    assert [e.step_key for e in failures] == ["stripe_sync"]
    description = failures[0].step_failure_data.user_failure_data.description
    # Which of the guard's rules fires first depends on which window's page arrives first; each names the endpoint.
    assert "Stripe GET /v1/subscriptions" in description and "Stopped paging" in description, description
    assert requests < 40
    assert not env.published.exists()
