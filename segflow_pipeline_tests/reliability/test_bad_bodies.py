"""A JSON body that is not a Stripe object (an array, a bare string) is not Stripe: the request fails once, not
retried, with an error naming the endpoint and what came back; never an AttributeError from page parsing."""

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


def array_for_customers(fake: FakeStripe, request: Request):
    if request.path == "/v1/customers":
        return json_answer([{"id": "cus_1", "object": "customer", "created": 1_780_000_000}])
    return empty_list(request.path)


def test_reader_names_the_endpoint_and_does_not_retry_an_array_body():
    with FakeStripe(array_for_customers) as fake:
        reader = StripeReader(KEY, api_base=fake.url, backoff_base=0.01)
        with pytest.raises(StripeAPIFailure) as info:
            reader.get("/v1/customers", {"limit": 1}, resource="customers")
        with pytest.raises(StripeAPIFailure) as paged:
            list(reader.iter_pages("/v1/customers", resource="customers"))
        assert fake.count("/v1/customers") == 2  # one request each: nothing was retried
    for error in (info.value, paged.value):
        message = str(error)
        assert message.startswith("Stripe GET /v1/customers") and "a JSON array" in message, message
        assert not error.retriable


def test_full_sync_fails_on_an_array_body_with_a_stripe_error_not_an_attribute_error():
    con = duckdb.connect()
    raw.ensure_tables(con)
    with FakeStripe(array_for_customers) as fake:
        reader = StripeReader(KEY, api_base=fake.url, backoff_base=0.01, max_requests_per_second=500)
        with pytest.raises(StripeAPIFailure, match=r"Stripe GET /v1/customers .*a JSON array"):
            sync_account(reader, con, mode="full")
        assert fake.count("/v1/customers") == 1


def test_a_refresh_fails_at_once_on_an_array_body(tmp_path, monkeypatch):
    with FakeStripe(array_for_customers) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        apply_env(monkeypatch, env)
        result = run_job()
        customers = fake.count("/v1/customers")
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    assert customers == 1
    (failure,) = step_events(result, "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert "Stripe GET /v1/customers" in description and "a JSON array" in description, description
    assert "AttributeError" not in description
