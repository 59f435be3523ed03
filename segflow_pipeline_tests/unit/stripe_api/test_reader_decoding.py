"""What the sync relies on from `StripeReader`: its own body decoding, retry of bodies cut short, 404 status."""

import pytest

from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
from segflow_pipeline_tests.http_stub import StubServer

KEY = "sk_test_51Hx8Yz2eZvKYlo2C9Xsecretabcd"


def reader(url: str) -> StripeReader:
    return StripeReader(KEY, api_base=url, max_requests_per_second=1000, sleep=lambda s: None)


def test_decode_receives_the_raw_body():
    with StubServer() as server:
        server.responses.append((200, {"object": "list", "data": [{"id": "cus_1"}], "has_more": False}, {}))
        assert reader(server.url).get("/v1/customers", decode=len) > 0


def test_a_body_cut_short_is_retried():
    with StubServer() as server:
        server.responses += [(200, b'{"object": "list", "data": [{"id": "cus_1"', {}),
                             (200, {"object": "list", "data": [{"id": "cus_1"}], "has_more": False}, {})]
        r = reader(server.url)
        assert r.get("/v1/customers")["data"] == [{"id": "cus_1"}]
        assert r.stats.retried_network == 1


def test_404_carries_status_and_code():
    with StubServer() as server:
        server.responses.append((404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                                 "message": "No such price: 'price_1'"}}, {}))
        with pytest.raises(StripeAPIFailure) as err:
            reader(server.url).get("/v1/prices/price_1")
        assert (err.value.http_status, err.value.code) == (404, "resource_missing")
