"""A local HTTP emulator of Stripe's read API (v1) serving sandbox accounts, with fault injection.

It answers what a sync reads (lists and retrievals of subscriptions, subscription items, invoices and their lines,
customers, prices, products, coupons, events, the account and its balance) with Stripe's behaviour: Bearer-key
auth with masked keys in errors, restricted keys missing a permission (403), newest-first cursor paging with
`limit`, `starting_after`, `ending_before`, `created[...]` filters, the default status filter of subscriptions,
`expand[]` with Stripe's 4-level limit, truncated embedded lists, 30 days of events, and Stripe's error envelopes.
Anything but GET is refused (400) and counted, so tests can prove a client never writes.

Faults for reliability tests: added latency, latency spikes (a seeded fraction of requests held `spike_s` seconds
longer, drawn from a range), a per-key rate limit answered with Stripe's 429 (which carries no
`Stripe-Should-Retry` header), a seeded fraction of 500s, and bad bodies (truncated JSON or a proxy's HTML 502).
`method_totals` counts every request by HTTP method for the life of the server (never reset), so a test session
can prove no client ever sent anything but GET.

Pages are built by joining pre-encoded JSON bytes (cached per object and expansion variant by the account), so the
server stays fast with 100k subscriptions loaded. Stdlib and orjson only; binds 127.0.0.1.
"""

from __future__ import annotations

import base64
import collections
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stripe_sandbox.account import SandboxAccount, build_account
from stripe_sandbox.objects import API_VERSION
from stripe_sandbox.router import SUBSCRIPTION_PERMISSION, ApiError, Router, mask_key

KEY_RE = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}")

# The built-in keys of a server started without an explicit key map (`EmulatorServer()`, `segflow sandbox serve`).
# They are fake: they only open this local emulator.
SANDBOX_KEYS: dict[str, str] = {
    "sk_test_sandbox_full": "secret test key: full access to the sandbox account",
    "rk_test_sandbox_readonly": "restricted test key with read access to every resource of the sandbox account",
    "rk_test_sandbox_nosubs": (
        "restricted test key without rak_subscription_read: 403 on /v1/subscriptions and /v1/subscription_items, "
        "other resources readable"
    ),
    "sk_live_sandbox_empty": "secret live key of an account with no data: every list is empty",
}

_HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             b"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
_UNSET: Any = object()


class _Bucket:
    __slots__ = ("rate", "tokens", "last")

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.last = rate, max(1.0, rate), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class EmulatorServer:
    """Serve sandbox accounts over HTTP on 127.0.0.1. `accounts` maps an API key to the account it opens.

    With `accounts=None`, a default sandbox account (1,500 subscriptions, seed 7, built at `now`, epoch seconds,
    default the current time) is built and opened by the keys
    of `SANDBOX_KEYS`; `sk_live_sandbox_empty` opens an empty live-mode account. A restricted key (`rk_...`)
    whose name contains `nosubs` lacks `rak_subscription_read`; `restricted` can name missing permissions for
    other keys.
    """

    def __init__(
        self,
        accounts: Mapping[str, SandboxAccount] | None = None,
        latency_s: float = 0.0,
        rate_limit_per_s: float | None = None,
        error_rate: float = 0.0,
        seed: int = 0,
        *,
        port: int = 0,
        bad_body_rate: float = 0.0,
        latency_spike_rate: float = 0.0,
        spike_s: tuple[float, float] = (0.3, 2.0),
        restricted: Mapping[str, Iterable[str]] | None = None,
        n_subscriptions: int = 1500,
        account_seed: int = 7,
        now: int | None = None,
    ) -> None:
        if accounts is None:
            main = build_account(n_subscriptions=n_subscriptions, seed=account_seed, now=now)
            empty = build_account(n_subscriptions=0, seed=account_seed + 1, now=main.now, livemode=True)
            accounts = {
                "sk_test_sandbox_full": main,
                "rk_test_sandbox_readonly": main,
                "rk_test_sandbox_nosubs": main,
                "sk_live_sandbox_empty": empty,
            }
        self.accounts: dict[str, SandboxAccount] = dict(accounts)
        self.missing_permissions: dict[str, set[str]] = {}
        for key in self.accounts:
            if key.startswith("rk_") and "nosubs" in key:
                self.missing_permissions[key] = {SUBSCRIPTION_PERMISSION}
        for key, perms in (restricted or {}).items():
            self.missing_permissions[key] = set(perms)
        self.port = port
        self.latency_s = latency_s
        self.rate_limit_per_s = rate_limit_per_s
        self.error_rate = error_rate
        self.bad_body_rate = bad_body_rate
        self.latency_spike_rate = latency_spike_rate
        self.spike_s = spike_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self.request_log: list[tuple[str, str, int, str]] = []
        self.request_log_limit = 200_000
        self.non_get_requests = 0
        self.method_totals: collections.Counter[str] = collections.Counter()
        self._requests = 0
        self._spikes = 0
        self._truncated = 0
        self._by_status: collections.Counter[int] = collections.Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> EmulatorServer:
        handler = type("BoundHandler", (_Handler,), {"emulator": self})
        httpd = _HTTPServer(("127.0.0.1", self.port), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="stripe-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, latency_s: float | None = None, rate_limit_per_s: Any = _UNSET,
                   error_rate: float | None = None, bad_body_rate: float | None = None,
                   latency_spike_rate: float | None = None, spike_s: tuple[float, float] | None = None) -> None:
        """Change faults while serving. `rate_limit_per_s=None` removes the limit; omitted arguments stay."""
        with self._lock:
            if latency_s is not None:
                self.latency_s = latency_s
            if rate_limit_per_s is not _UNSET:
                self.rate_limit_per_s = rate_limit_per_s
                self._buckets.clear()
            if error_rate is not None:
                self.error_rate = error_rate
            if bad_body_rate is not None:
                self.bad_body_rate = bad_body_rate
            if latency_spike_rate is not None:
                self.latency_spike_rate = latency_spike_rate
            if spike_s is not None:
                self.spike_s = spike_s

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self._requests, "by_status": dict(self._by_status),
                    "non_get_requests": self.non_get_requests, "latency_spikes": self._spikes,
                    "truncated_bodies": self._truncated}

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_status.clear()
            self._spikes = 0
            self._truncated = 0
            self.request_log.clear()
            self.non_get_requests = 0

    # ------------------------------------------------------------------ request pipeline
    def _record(self, method: str, path: str, status: int, key_masked: str) -> None:
        with self._lock:
            self._requests += 1
            self._by_status[status] += 1
            self.method_totals[method] += 1
            log = self.request_log
            if len(log) >= self.request_log_limit:
                del log[: self.request_log_limit // 2]
            log.append((method, path, status, key_masked))

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _spike(self) -> float:
        """Seconds of extra latency for this request: 0, or a draw from `spike_s` for a `latency_spike_rate` share."""
        with self._lock:
            if self.latency_spike_rate <= 0 or self._rng.random() >= self.latency_spike_rate:
                return 0.0
            low, high = self.spike_s
            self._spikes += 1
            return self._rng.uniform(low, high)

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        """Answer one request: (status, body, content type). Never raises."""
        delay = self.latency_s + self._spike()
        if delay > 0:
            time.sleep(delay)
        key = ""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            key = auth[7:].strip()
        elif auth.startswith("Basic "):
            # curl -u sk_test_...: sends the key as the Basic user name, which Stripe accepts too.
            try:
                key = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except Exception:  # noqa: BLE001 - a malformed header is an invalid key
                key = ""
        masked = mask_key(key) if key else ""
        try:
            if method != "GET":
                with self._lock:
                    self.non_get_requests += 1
            if not key:
                raise ApiError(401, "You did not provide an API key. You need to provide your API key in the "
                               "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
                               "See https://stripe.com/docs/api#authentication for details, or we can help at "
                               "https://support.stripe.com/.")
            if key.startswith("pk_"):
                raise ApiError(401, "This API call cannot be made with a publishable API key. Please use a secret "
                               "API key. You can find a list of your API keys at "
                               "https://dashboard.stripe.com/account/apikeys.")
            account = self.accounts.get(key)
            if account is None or not KEY_RE.fullmatch(key):
                raise ApiError(401, f"Invalid API Key provided: {masked}")
            if method != "GET":
                raise ApiError(400, f"This Stripe emulator is read-only: {method} requests are not served "
                               f"({method} {target.split('?', 1)[0]}).")
            if self.rate_limit_per_s is not None:
                with self._lock:
                    bucket = self._buckets.get(key)
                    if bucket is None or bucket.rate != self.rate_limit_per_s:
                        bucket = self._buckets[key] = _Bucket(self.rate_limit_per_s)
                    allowed = bucket.take()
                if not allowed:
                    raise ApiError(429, "Request rate limit exceeded. Learn more about rate limits here "
                                   "https://stripe.com/docs/rate-limits.", code="rate_limit")
            if self.error_rate > 0 and self._draw() < self.error_rate:
                raise ApiError(500, "An unknown error occurred while processing this request. Please retry it or "
                               "contact support@stripe.com.", type_="api_error")
            # The account lock keeps a page consistent while `mutate` swaps the account's indexes.
            with account.lock:
                body = Router(self, account, key).route(target)
            status, ctype = 200, "application/json"
            if self.bad_body_rate > 0 and self._draw() < self.bad_body_rate:
                if self._draw() < 0.5:
                    body = body[: max(1, len(body) // 2)]
                    with self._lock:
                        self._truncated += 1
                else:
                    status, body, ctype = 502, _HTML_502, "text/html"
        except ApiError as err:
            status, body, ctype = err.status, err.body(), "application/json"
        except Exception as exc:  # noqa: BLE001 - a bug in the emulator answers like a Stripe 500
            status, ctype = 500, "application/json"
            body = ApiError(500, f"Emulator error: {type(exc).__name__}: {exc}", type_="api_error").body()
        self._record(method, target, status, masked)
        return status, body, ctype


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash tests kill -9 syncs) resets its connection: not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    emulator: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request stderr lines
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, body, ctype = self.emulator.handle(self.command, self.path, self.headers)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_" + format(random.getrandbits(56), "014x"))
        self.send_header("Stripe-Version", self.headers.get("Stripe-Version") or API_VERSION)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


def serve_forever(port: int = 12111, n_subscriptions: int = 1500, seed: int = 7, latency_s: float = 0.0,
                  rate_limit_per_s: float | None = None, error_rate: float = 0.0, now: int | None = None) -> None:
    """Serve the default sandbox account on 127.0.0.1:`port` until interrupted (Ctrl-C); `now` (epoch seconds,
    default: the current time) is the instant the account is built at."""
    started = time.time()
    server = EmulatorServer(None, latency_s=latency_s, rate_limit_per_s=rate_limit_per_s, error_rate=error_rate,
                            port=port, n_subscriptions=n_subscriptions, account_seed=seed, now=now)
    account = server.accounts["sk_test_sandbox_full"]
    server.start()
    counts = account.counts()
    print(f"Stripe emulator serving at {server.url} (built in {time.time() - started:.1f}s: "
          f"{counts['subscriptions']} subscriptions, {counts['invoices']} invoices, {counts['events']} events, "
          f"as of {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(account.now))})")
    print(f"Use it with STRIPE_API_BASE={server.url} and one of these sandbox keys:")
    for key, what in SANDBOX_KEYS.items():
        print(f"  {key:<28} {what}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
