"""What a sync retries: Stripe's passing failures (client.heals_on_retry) and two versions of one object read while
it changed (a storage finding, ConflictingVersions), nothing else."""

import duckdb
import pytest
import stripe

from segflow_pipeline.resources.raw_sync import heals_on_retry
from segflow_pipeline.stripe_api import client
from segflow_pipeline.stripe_api.client import PagingError, StripeAPIFailure
from segflow_pipeline.warehouse.raw import ConflictingVersions


@pytest.mark.parametrize(("exc", "heals"), [
    (ConflictingVersions("invoices in_1 twice"), True),
    (stripe.RateLimitError("slow down", http_status=429), True),
    (stripe.APIError("oops", http_status=503), True),
    (StripeAPIFailure("gave up on 5xx", retriable=True), True),
    (PagingError("does not advance"), False),
    (stripe.InvalidRequestError("no such expand", param="expand", http_status=400), False),
    (duckdb.IOException("disk full"), False),
    (ValueError("a bug"), False),
])
def test_a_sync_retries_what_heals(exc, heals):
    assert heals_on_retry(exc) is heals


def test_the_stripe_side_alone_does_not_retry_a_storage_finding():
    assert client.heals_on_retry(ConflictingVersions("invoices in_1 twice")) is False
