"""The one way this project talks to Stripe: GET only, shared rate limit, retries, errors that say what to do.

`ReadOnlyHTTPClient` sits under the official SDK and refuses any method but GET before a byte leaves the
process. `StripeReader` wraps `stripe.StripeClient.raw_request`, which keeps the SDK's auth and API versioning but
skips building `StripeObject`s (the dominant CPU cost of a large sync), and adds what the SDK does not do: back off
on 429 (Stripe sends no `Stripe-Should-Retry` on rate limits, so the SDK never retries them), a token bucket shared
by every thread of one account, counters for metadata, and key-safe errors. No Dagster here.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import stripe

from segflow_pipeline.stripe_api.keys import (
    KeyInfo,
    StripeSetupError,
    classify,
    invalid_key_message,
    missing_permission_message,
    redact,
)

DEFAULT_API_BASE = "https://api.stripe.com"
# Stripe's documented read limits per account: ~25 req/s in test mode (sandboxes), ~100 in live mode.
# We stay a little under them by default.
DEFAULT_RATE = {"test": 25.0, "live": 90.0}


class ReadOnlyViolation(RuntimeError):
    """Raised before sending when anything tries a method other than GET."""


class StripeAPIFailure(RuntimeError):
    """A Stripe request that failed after every retry; the message is key-free and says what to try.

    `http_status` and `code` (Stripe's error code, e.g. `resource_missing`) let callers tell a deleted object
    (404) from an outage.
    """

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class ReadOnlyHTTPClient(stripe.RequestsClient):
    """The SDK's requests-based client that only ever sends GET. Shared across threads (sessions are thread-local)."""

    name = "segflow-readonly"

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None):
        _refuse_unless_get(method, url)
        return super().request(method, url, headers, post_data)

    def request_stream(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None):
        _refuse_unless_get(method, url)
        return super().request_stream(method, url, headers, post_data)


def _refuse_unless_get(method: str, url: str) -> None:
    if method.upper() != "GET":
        path = url.split("?", 1)[0]
        raise ReadOnlyViolation(f"segflow only reads from Stripe: refused {method.upper()} {path} before sending")


class RateLimiter:
    """Token bucket shared by all threads reading one account; `acquire` blocks until a request may go."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate / 5))
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)

    def penalize(self, seconds: float) -> None:
        """After a 429 everyone slows down: drain the bucket so the next requests wait."""
        with self._lock:
            self._tokens = min(self._tokens, -seconds * self.rate)


@dataclass
class RequestStats:
    requests: int = 0
    retried_429: int = 0
    retried_5xx: int = 0
    retried_network: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retried_429": self.retried_429,
            "retried_5xx": self.retried_5xx,
            "retried_network": self.retried_network,
        }


class StripeReader:
    """GET-only access to one Stripe account. Thread-safe; share one per account and sync."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        key_variable: str = "STRIPE_API_KEY",
        max_requests_per_second: float | None = None,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        timeout: float = 80.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key_info: KeyInfo = classify(api_key, variable=key_variable)
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.rate_limiter = RateLimiter(max_requests_per_second or DEFAULT_RATE[self.key_info.mode])
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = RequestStats()
        self._sleep = sleep
        self._key = api_key.strip()
        self._client = stripe.StripeClient(
            self._key,
            base_addresses={"api": self.api_base},
            http_client=ReadOnlyHTTPClient(timeout=timeout),
            max_network_retries=0,  # retries are ours: one loop that also covers 429 and counts for metadata
        )

    def __repr__(self) -> str:
        return f"StripeReader(key={self.key_info.masked}, api_base={self.api_base!r})"

    @property
    def http_client(self) -> ReadOnlyHTTPClient:
        return self._client._requestor._client  # type: ignore[attr-defined,return-value]

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, resource: str | None = None,
            decode: Callable[[bytes], Any] = orjson.loads) -> Any:
        """GET `path` (e.g. `/v1/subscriptions`) and return the decoded JSON body, retrying what is transient.

        `decode` turns the raw body into the result (default: orjson into dicts); callers that convert pages
        straight into columns pass their own, so a page's dicts live only as long as the conversion.
        """
        attempt = 0
        while True:
            self.rate_limiter.acquire()
            self.stats.add(requests=1)
            try:
                return self._get_once(path, params, decode)
            except stripe.RateLimitError as exc:
                counter, retry_after = "retried_429", _retry_after(exc)
                self.rate_limiter.penalize(retry_after or 1.0)
                error: Exception = exc
            except stripe.APIConnectionError as exc:
                counter, retry_after, error = "retried_network", None, exc
            except stripe.APIError as exc:
                if (exc.http_status or 0) < 500 or _should_retry(exc) is False:
                    raise self._failure(exc, path, resource) from None
                counter, retry_after, error = "retried_5xx", _retry_after(exc), exc
            except stripe.AuthenticationError:
                raise StripeSetupError(invalid_key_message(self.key_info)) from None
            except stripe.PermissionError as exc:
                raise StripeSetupError(
                    missing_permission_message(self.key_info, resource or _resource_of(path), exc.user_message or "")
                ) from None
            except stripe.StripeError as exc:
                raise self._failure(exc, path, resource) from None
            if attempt >= self.max_retries:
                raise self._failure(error, path, resource, attempts=attempt + 1) from None
            attempt += 1
            self.stats.add(**{counter: 1})
            self._sleep(retry_after if retry_after is not None else self._backoff(attempt))

    def _get_once(self, path: str, params: Mapping[str, Any] | None, decode: Callable[[bytes], Any]) -> Any:
        """One GET through the SDK's requestor (auth, Stripe-Version, telemetry), the body parsed with orjson.

        `raw_request` would also parse the body with the standard library into OrderedDicts, about 3x slower
        than orjson on a 100-object page; errors still go through the SDK so they raise its typed exceptions.
        """
        requestor = self._client._requestor  # type: ignore[attr-defined]
        body, code, headers = requestor.request_raw(
            "get", path, params=dict(params or {}), options=None, base_address="api", api_mode="V1",
            usage=["raw_request"],
        )
        if 200 <= code < 300:
            try:
                return decode(body)
            except orjson.JSONDecodeError:
                if isinstance(body, bytes) and body.lstrip().startswith(b"{"):
                    # JSON cut short (a connection dropped mid-body): transient, retried like a network error.
                    raise stripe.APIConnectionError("Stripe's response body was cut short") from None
                # Anything else (an HTML proxy page...) is not Stripe: the SDK raises "Invalid response body".
        requestor._interpret_response(body, code, headers, "V1")
        raise stripe.APIError(f"Unexpected response from Stripe (HTTP {code})", http_status=code)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog, 'Exponential Backoff And Jitter')."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt))

    def _failure(self, exc: Exception, path: str, resource: str | None, attempts: int = 1) -> StripeAPIFailure:
        status = getattr(exc, "http_status", None)
        message = redact(getattr(exc, "user_message", None) or exc.__class__.__name__, self._key)
        return StripeAPIFailure(
            f"Stripe GET {path} failed{f' with HTTP {status}' if status else ''} after {attempts} attempt(s): "
            f"{message}. Check https://status.stripe.com and STRIPE_API_BASE ({self.api_base}), then retry.",
            http_status=status, code=getattr(exc, "code", None),
        )

    def iter_pages(self, path: str, params: Mapping[str, Any] | None = None, *, page_size: int = 100,
                   resource: str | None = None) -> Iterator[list[dict]]:
        """Sequential cursor paging of one Stripe list, newest first: yields each page's `data`."""
        query = {**(params or {}), "limit": page_size}
        while True:
            body = self.get(path, query, resource=resource)
            data = body.get("data", [])
            if data:
                yield data
            if not body.get("has_more") or not data:
                return
            query["starting_after"] = data[-1]["id"]


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("Retry-After") or (exc.headers or {}).get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _should_retry(exc: stripe.StripeError) -> bool | None:
    value = (exc.headers or {}).get("Stripe-Should-Retry") or (exc.headers or {}).get("stripe-should-retry")
    return None if value is None else value == "true"


def _resource_of(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "v1"]
    return parts[0] if parts else path
