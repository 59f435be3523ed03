"""The GET-only transport and the error mapping, against a scripted local HTTP server."""

import pytest
import stripe

from segflow_pipeline.stripe_api.client import ReadOnlyViolation, StripeAPIFailure, StripeReader
from segflow_pipeline.stripe_api.keys import StripeSetupError
from segflow_pipeline_tests.http_stub import StubServer

KEY = "sk_test_51Hx8Yz2eZvKYlo2C9Xsecretabcd"


def reader(url: str, **kwargs) -> StripeReader:
    return StripeReader(KEY, api_base=url, max_requests_per_second=1000, sleep=lambda s: None, **kwargs)


def test_post_through_the_sdk_is_refused_before_sending():
    with StubServer() as server:
        client = reader(server.url)._client
        with pytest.raises(ReadOnlyViolation, match=r"refused POST \S*/v1/customers before sending"):
            client.v1.customers.create(params={"email": "x@example.com"})
        with pytest.raises(ReadOnlyViolation):
            client.raw_request("delete", "/v1/customers/cus_1")
        assert server.requests == []


def test_get_sends_bearer_key_and_returns_body():
    with StubServer() as server:
        server.responses.append((200, {"object": "list", "data": [{"id": "sub_1"}], "has_more": False}, {}))
        body = reader(server.url).get("/v1/subscriptions", {"status": "all", "limit": 100})
        assert body["data"] == [{"id": "sub_1"}]
        method, path, headers = server.requests[0]
        assert method == "GET" and path.startswith("/v1/subscriptions?") and "status=all" in path
        assert headers["Authorization"] == f"Bearer {KEY}"


def test_401_says_key_invalid_and_masks_it():
    with StubServer() as server:
        server.responses.append((401, {"error": {"type": "invalid_request_error",
                                                 "message": f"Invalid API Key provided: {KEY}"}}, {}))
        with pytest.raises(StripeSetupError) as err:
            reader(server.url).get("/v1/subscriptions")
        assert "invalid, expired or was revoked" in str(err.value)
        assert "sk_test_…abcd" in str(err.value) and KEY not in str(err.value)
        assert err.value.__cause__ is None  # the SDK error (which quotes the key) is not chained


def test_403_names_the_missing_permission():
    with StubServer() as server:
        server.responses.append((403, {"error": {"type": "invalid_request_error", "code": "more_permissions_required",
                                                 "message": "Having the 'rak_subscription_read' permission would "
                                                            "allow this request to continue."}}, {}))
        with pytest.raises(StripeSetupError, match="rak_subscription_read"):
            reader(server.url).get("/v1/subscriptions", resource="subscriptions")


def test_429_and_500_are_retried_and_counted():
    rate_limited = {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}}
    with StubServer() as server:
        server.responses += [(429, rate_limited, {}), (500, {"error": {"type": "api_error", "message": "boom"}}, {}),
                             (200, {"object": "list", "data": [], "has_more": False}, {})]
        r = reader(server.url)
        assert r.get("/v1/customers")["data"] == []
        assert r.stats.as_dict() == {"requests": 3, "retried_429": 1, "retried_5xx": 1, "retried_network": 0}


def test_persistent_5xx_gives_up_with_readable_error():
    with StubServer() as server:
        server.responses += [(503, b"<html>Bad gateway</html>", {})] * 3
        with pytest.raises(StripeAPIFailure, match="HTTP 503 after 3 attempt"):
            reader(server.url, max_retries=2).get("/v1/customers")


def test_html_with_200_is_a_clear_failure_not_a_crash():
    with StubServer() as server:
        server.responses.append((200, b"<html>proxy login</html>", {}))
        with pytest.raises(StripeAPIFailure, match="STRIPE_API_BASE"):
            reader(server.url).get("/v1/customers")


def test_reader_repr_never_shows_the_key():
    r = StripeReader(KEY, api_base="http://127.0.0.1:9")
    assert KEY not in repr(r) and "sk_test_…abcd" in repr(r)


def test_sdk_error_classes_exist_for_mapping():
    # The mapping relies on these SDK classes; a version bump that renames them must fail loudly here.
    for name in ("RateLimitError", "APIConnectionError", "APIError", "AuthenticationError", "PermissionError"):
        assert issubclass(getattr(stripe, name), stripe.StripeError)
