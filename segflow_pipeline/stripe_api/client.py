"""The one way this project talks to Stripe: GET only, shared rate limit, retries, errors that say what to do.

`ReadOnlyHTTPClient` sits under the official SDK and refuses any method but GET before a byte leaves the
process. `StripeReader` wraps `stripe.StripeClient.raw_request`, which keeps the SDK's auth and API versioning but
skips building `StripeObject`s (the dominant CPU cost of a large sync), and adds what the SDK does not do: back off
on 429 (Stripe sends no `Stripe-Should-Retry` on rate limits, so the SDK never retries them), a token bucket shared
by every thread of one account, counters for metadata, and key-safe errors. No Dagster here.

Which failures heal by trying again is decided here only (`heals_on_retry`): 429s, 5xx, connections that failed
and bodies cut short. Everything else (a 4xx, a body that is not Stripe's JSON, paging that does not advance, a bad
key, a local disk or DuckDB error) fails the same way again, so it fails at once with its message. Every paging
loop ends (`PageGuard`): a cursor is used once, a page never ends where it started, and a list has at most
`MAX_PAGES` pages.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import stripe

from segflow_pipeline.stripe_api.errors import UnexpectedBody, json_kind
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
# Pages of one list (or of one whole sync), at most: 100M objects, 2.8 hours at Stripe's 100 requests/s. Far more
# than any account holds; a server that never stops saying `has_more` with new objects stops here.
MAX_PAGES = 1_000_000


class ReadOnlyViolation(RuntimeError):
    """Raised before sending when anything tries a method other than GET."""


class StripeAPIFailure(RuntimeError):
    """A Stripe request that failed after every retry; the message is key-free and says what to try.

    `http_status` and `code` (Stripe's error code, e.g. `resource_missing`) let callers tell a deleted object
    (404) from an outage. `retriable`: whether a later attempt may succeed (Stripe kept failing with 429s, 5xx or
    dropped connections) or gets the same answer (a 4xx, a body that is not Stripe's, paging that loops).
    """

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None,
                 retriable: bool = False) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retriable = retriable


class PagingError(StripeAPIFailure):
    """A list that would be paged forever: its cursor does not advance or comes back, or it has more pages than
    any account (`MAX_PAGES`). Never retried: the server answers the same again."""


def heals_on_retry(exc: BaseException) -> bool:
    """Whether trying the same request again later can succeed: the one place that decides what Stripe-side
    failure is retried (a sync adds what storage knows: `resources/raw_sync.heals_on_retry`).

    Yes for what Stripe or the network does for a while: 429 (rate limit), 5xx, a connection that failed or a body
    cut short, a `StripeAPIFailure` that gave up on those. No for everything else: 4xx, a body that is not Stripe's
    JSON, paging that does not advance, a bad key, local disk and DuckDB errors, an interrupt.
    """
    if isinstance(exc, StripeAPIFailure):
        return exc.retriable
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    if isinstance(exc, stripe.StripeError):
        should = _should_retry(exc)
        if should is not None:
            return should
        return isinstance(exc, stripe.APIError) and (exc.http_status or 0) >= 500
    return False


class PageGuard:
    """Makes every paging loop end. Each page that says `has_more` hands its last object's id to `next_cursor`,
    which refuses a page ending at the cursor it was asked after (the server ignores `starting_after`), a cursor
    used before on the same path (pages going round in a circle) and more than `max_pages` pages. Thread-safe:
    one guard serves every worker of a sync."""

    def __init__(self, api_base: str, max_pages: int = MAX_PAGES) -> None:
        self.api_base = api_base
        self.max_pages = max_pages
        self.pages = 0
        self._used: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def next_cursor(self, path: str, sent: str | None, last: Any) -> str:
        """The cursor for the page after one (asked with `starting_after=sent`) whose last object's id is `last`."""
        with self._lock:
            self.pages += 1
            if not isinstance(last, str) or not last:
                raise self._error(path, "says has_more, but its last object has no id to ask for the next page")
            if last == sent:
                raise self._error(path, f"does not advance: the page after starting_after={sent} ends at {last} "
                                        "again and says has_more (the server ignores the cursor)")
            if (path, last) in self._used:
                raise self._error(path, f"pages in a circle: the cursor {last} came back after pages that followed "
                                        "it")
            if self.pages >= self.max_pages:
                raise self._error(path, f"has more than {self.max_pages} pages, more than any Stripe account holds")
            self._used.add((path, last))
            return last

    def _error(self, path: str, what: str) -> PagingError:
        return PagingError(f"Stripe GET {path} {what}. Stopped paging: the same request gets the same answer. "
                           f"Check that STRIPE_API_BASE ({self.api_base}) is Stripe's API or a faithful proxy of it.")


def json_object(body: bytes) -> dict:
    """The body as a JSON object (what every Stripe response is), else `UnexpectedBody`."""
    parsed = orjson.loads(body)
    if not isinstance(parsed, dict):
        raise UnexpectedBody(f"{json_kind(parsed)} where Stripe sends a JSON object")
    return parsed


class ReadOnlyHTTPClient(stripe.RequestsClient):
    """The SDK's requests-based client that only ever sends GET. Shared across threads (sessions are thread-local).

    Inside `keeping_bodies` (per thread), a successful response's body is kept for the caller and the SDK gets `{}`
    in its place: the SDK parses every body with the standard library into OrderedDicts, several times slower than
    the caller's own decoding of the same bytes. Error responses reach the SDK unchanged, so it still raises its
    typed exceptions (`AuthenticationError`, `RateLimitError`...).
    """

    name = "segflow-readonly"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept = threading.local()

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None):
        _refuse_unless_get(method, url)
        content, code, response_headers = super().request(method, url, headers, post_data)
        bodies = getattr(self._kept, "bodies", None)
        if bodies is not None and 200 <= code < 300:
            bodies.append(content)
            return b"{}", code, response_headers
        return content, code, response_headers

    @contextlib.contextmanager
    def keeping_bodies(self) -> Iterator[list[bytes]]:
        """The successful bodies this thread receives meanwhile, in order (see the class doc)."""
        bodies: list[bytes] = []
        self._kept.bodies = bodies
        try:
            yield bodies
        finally:
            self._kept.bodies = None

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
        self._http = ReadOnlyHTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            self._key,
            base_addresses={"api": self.api_base},
            http_client=self._http,
            max_network_retries=0,  # retries are ours: one loop that also covers 429 and counts for metadata
        )

    def __repr__(self) -> str:
        return f"StripeReader(key={self.key_info.masked}, api_base={self.api_base!r})"

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, resource: str | None = None,
            decode: Callable[[bytes], Any] = json_object) -> Any:
        """GET `path` (e.g. `/v1/subscriptions`) and return the decoded JSON body, retrying what heals
        (`heals_on_retry`) at most `max_retries` times.

        `decode` turns the raw body into the result (default: orjson into a dict); callers that convert pages
        straight into columns pass their own, so a page's dicts live only as long as the conversion. A decoder
        raises `UnexpectedBody` for a body that is not Stripe's: that fails at once, naming the endpoint.
        """
        for attempt in range(self.max_retries + 1):
            self.rate_limiter.acquire()
            self.stats.add(requests=1)
            try:
                return self._get_once(path, params, decode)
            except stripe.AuthenticationError:
                raise StripeSetupError(invalid_key_message(self.key_info)) from None
            except stripe.PermissionError as exc:
                raise StripeSetupError(
                    missing_permission_message(self.key_info, resource or _resource_of(path), exc.user_message or "")
                ) from None
            except UnexpectedBody as exc:
                raise StripeAPIFailure(
                    f"Stripe GET {path} answered {exc}; that is not Stripe's API. Not retried: the same request gets "
                    f"the same answer. Check that STRIPE_API_BASE ({self.api_base}) is Stripe's API or a faithful "
                    "proxy of it.") from None
            except stripe.StripeError as exc:
                if not heals_on_retry(exc):
                    raise self._failure(exc, path, resource, attempts=attempt + 1) from None
                error: stripe.StripeError = exc
            if attempt == self.max_retries:
                break
            if isinstance(error, stripe.RateLimitError):
                counter, retry_after = "retried_429", _retry_after(error)
                self.rate_limiter.penalize(retry_after or 1.0)
            elif isinstance(error, stripe.APIConnectionError):
                counter, retry_after = "retried_network", None
            else:
                counter, retry_after = "retried_5xx", _retry_after(error)
            self.stats.add(**{counter: 1})
            self._sleep(retry_after if retry_after is not None else self._backoff(attempt + 1))
        raise self._failure(error, path, resource, attempts=self.max_retries + 1, retriable=True) from None

    def _get_once(self, path: str, params: Mapping[str, Any] | None, decode: Callable[[bytes], Any]) -> Any:
        """One GET through `StripeClient.raw_request` (auth, Stripe-Version, telemetry, typed errors); the body
        decoded by `decode` from the bytes the HTTP client kept (`ReadOnlyHTTPClient.keeping_bodies`)."""
        with self._http.keeping_bodies() as bodies:
            response = self._client.raw_request("get", path, **dict(params or {}))
        if not bodies:  # not reached: the SDK raises for anything but a 2xx, and every 2xx passes the HTTP client
            raise stripe.APIError(f"Unexpected response from Stripe (HTTP {response.code})",
                                  http_status=response.code)
        body = bodies[-1]
        try:
            return decode(body)
        except orjson.JSONDecodeError:
            if isinstance(body, bytes) and body.lstrip().startswith(b"{"):
                # JSON cut short (a connection dropped mid-body): transient, retried like a network error.
                raise stripe.APIConnectionError("Stripe's response body was cut short") from None
            # Anything else (an HTML proxy page...) is not Stripe, as the SDK says of a body it cannot parse.
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            raise stripe.APIError(f"Invalid response body from API: {text} (HTTP response code was {response.code})",
                                  http_body=text, http_status=response.code, headers=response.headers) from None

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog, 'Exponential Backoff And Jitter')."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt))

    def _failure(self, exc: Exception, path: str, resource: str | None, attempts: int = 1,
                 retriable: bool = False) -> StripeAPIFailure:
        status = getattr(exc, "http_status", None)
        message = redact(getattr(exc, "user_message", None) or exc.__class__.__name__, self._key)
        advice = (f"Check https://status.stripe.com and STRIPE_API_BASE ({self.api_base}), then retry."
                  if retriable else
                  f"Not retried: the same request gets the same answer. Check STRIPE_API_BASE ({self.api_base}).")
        return StripeAPIFailure(
            f"Stripe GET {path} failed{f' with HTTP {status}' if status else ''} after {attempts} attempt(s): "
            f"{message}. {advice}",
            http_status=status, code=getattr(exc, "code", None), retriable=retriable,
        )

    def iter_pages(self, path: str, params: Mapping[str, Any] | None = None, *, page_size: int = 100,
                   resource: str | None = None, max_pages: int = MAX_PAGES) -> Iterator[list[dict]]:
        """Sequential cursor paging of one Stripe list, newest first: yields each page's `data`. Ends after the
        last page, or with `PagingError` (`PageGuard`)."""
        query: dict[str, Any] = {**(params or {}), "limit": page_size}
        guard = PageGuard(self.api_base, max_pages)
        for _ in range(max_pages):
            body = self.get(path, query, resource=resource)
            data = body.get("data")
            if not isinstance(data, list):
                raise StripeAPIFailure(
                    f"Stripe GET {path} answered a JSON object without a `data` list where Stripe sends a list. "
                    f"Not retried. Check that STRIPE_API_BASE ({self.api_base}) is Stripe's API.")
            if data:
                yield data
            if not body.get("has_more") or not data:
                return
            last = data[-1].get("id") if isinstance(data[-1], dict) else None
            query["starting_after"] = guard.next_cursor(path, query.get("starting_after"), last)


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
