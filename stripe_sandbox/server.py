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
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from segflow_pipeline.sandbox.account import (
    API_VERSION,
    EVENT_WINDOW_S,
    SANDBOX_KEYS,
    SandboxAccount,
    build_account,
)
from segflow_pipeline.sandbox.listing import Table, page

KEY_RE = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}")
MAX_EXPAND_DEPTH = 4
SUB_STATUSES = ("active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "trialing",
                "paused", "all", "ended")
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
PAGING = {"limit", "starting_after", "ending_before", "expand"}

# Query parameters Stripe accepts per list endpoint (others get Stripe's "Received unknown parameter" 400).
LIST_PARAMS: dict[str, set[str]] = {
    "subscriptions": PAGING | {"status", "customer", "customer_account", "price", "created", "collection_method",
                               "current_period_end", "current_period_start", "test_clock", "automatic_tax"},
    "subscription_items": PAGING | {"subscription"},
    "invoices": PAGING | {"subscription", "customer", "customer_account", "status", "created", "collection_method",
                          "due_date"},
    "lines": PAGING,
    "customers": PAGING | {"created", "email", "test_clock"},
    "prices": PAGING | {"active", "currency", "product", "type", "created", "lookup_keys", "recurring"},
    "products": PAGING | {"active", "created", "ids", "shippable", "url"},
    "coupons": PAGING | {"created"},
    "events": PAGING | {"created", "type", "types", "delivery_success"},
    "invoiceitems": PAGING | {"created", "customer", "customer_account", "invoice", "pending"},
}

# Expandable properties per object kind: those rendered expanded, and those accepted but left as they are
# (null in this account, or already embedded objects).
EXPAND_SUPPORTED: dict[str, set[str]] = {
    "subscriptions": {"customer", "latest_invoice", "discounts", "items.data.discounts", "items.data.price.tiers",
                      "items.data.price.product"},
    "subscription_items": {"discounts", "price.tiers", "price.product"},
    "invoices": {"customer", "discounts", "parent.subscription_details.subscription", "lines.data.discounts"},
    "lines": {"discounts"},
    "customers": {"discount.source.coupon"},
    "prices": {"tiers", "product"},
    "products": {"default_price"},
    "coupons": set(),
    "events": set(),
    "invoiceitems": set(),
}
EXPAND_ACCEPTED: dict[str, set[str]] = {
    "subscriptions": {"items", "items.data.price", "items.data.plan", "default_payment_method", "default_source",
                      "pending_setup_intent", "schedule", "test_clock", "application", "on_behalf_of",
                      "transfer_data.destination", "latest_invoice.payment_intent", "customer_account"},
    "subscription_items": {"price"},
    "invoices": {"lines", "default_payment_method", "default_source", "test_clock", "on_behalf_of", "application",
                 "account_tax_ids", "latest_revision", "from_invoice.invoice", "total_discount_amounts.discount",
                 "lines.data.pricing.price_details.price", "customer_tax_ids", "payments"},
    "lines": {"pricing.price_details.price", "discount_amounts.discount"},
    "customers": {"default_source", "invoice_settings.default_payment_method", "test_clock", "tax", "sources",
                  "subscriptions", "cash_balance", "invoice_credit_balance", "tax_ids"},
    "prices": {"currency_options", "currency_options.tiers"},
    "products": {"tax_code"},
    "coupons": {"applies_to", "currency_options"},
    "events": set(),
    "invoiceitems": {"customer", "invoice", "discounts", "parent.subscription_details.subscription"},
}
SUBSCRIPTION_PERMISSION = "rak_subscription_read"
PERMISSION_OF = {"subscriptions": SUBSCRIPTION_PERMISSION, "subscription_items": SUBSCRIPTION_PERMISSION}

_HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             b"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


_UNSET: Any = object()


class ApiError(Exception):
    """An error answered with Stripe's envelope `{"error": {...}}`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> bytes:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        if self.status in (400, 401, 402, 403, 404, 429):
            err["request_log_url"] = "https://dashboard.stripe.com/test/logs"
        return orjson.dumps({"error": err})


def mask_key(key: str) -> str:
    """Stripe's masking in error messages: the mode prefix, stars for the hidden part, the last four characters."""
    m = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", key)
    if not m:
        return "*" * max(0, len(key) - 4) + key[-4:]
    prefix, rest = m.groups()
    return prefix + "*" * max(0, len(rest) - 4) + rest[-4:]


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


class _Params:
    """Stripe-style query parameters: `expand[]=a`, `expand[0]=a`, `created[gte]=1`, `types[]=x`."""

    def __init__(self, query: str) -> None:
        self.scalars: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.dicts: dict[str, dict[str, str]] = {}
        for raw_key, value in parse_qsl(query, keep_blank_values=True):
            if "[" in raw_key and raw_key.endswith("]"):
                name, _, sub = raw_key[:-1].partition("[")
                if sub == "" or sub.isdigit():
                    self.lists.setdefault(name, []).append(value)
                else:
                    self.dicts.setdefault(name, {})[sub] = value
            else:
                self.scalars[raw_key] = value

    def names(self) -> set[str]:
        return set(self.scalars) | set(self.lists) | set(self.dicts)

    def get(self, name: str) -> str | None:
        return self.scalars.get(name)


def _int(value: str, param: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {value}", param=param) from None


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
                body = _Router(self, account, key).route(target)
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


class _Router:
    """Maps one authenticated GET to the account's data."""

    def __init__(self, server: EmulatorServer, account: SandboxAccount, key: str) -> None:
        self.server, self.a, self.key = server, account, key

    def route(self, target: str) -> bytes:
        split = urlsplit(target)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        params = _Params(split.query)
        if len(parts) < 2 or parts[0] != "v1":
            raise self._unrecognized(target)
        resource = parts[1]
        self._check_permission(resource)
        if len(parts) == 2:
            if resource == "account":
                return orjson.dumps(self.a.account_dict())
            if resource == "balance":
                return orjson.dumps(self.a.balance_dict())
            if resource in ("subscriptions", "invoices", "customers", "prices", "products", "coupons", "events",
                            "invoiceitems"):
                return self.list_table(resource, params)
            if resource == "subscription_items":
                return self.list_items(params)
        elif len(parts) == 3 and resource in ("subscriptions", "invoices", "customers", "prices", "products",
                                              "coupons", "events", "invoiceitems"):
            return self.retrieve(resource, parts[2], params)
        elif len(parts) == 3 and resource == "subscription_items":
            return self.retrieve_item(parts[2], params)
        elif len(parts) == 3 and resource == "accounts":
            if parts[2] == self.a.account_id:
                return orjson.dumps(self.a.account_dict())
            raise ApiError(404, f"No such account: '{parts[2]}'", code="resource_missing", param="account")
        elif len(parts) == 4 and resource == "invoices" and parts[3] == "lines":
            return self.list_lines(parts[2], params)
        raise self._unrecognized(target)

    @staticmethod
    def _unrecognized(target: str) -> ApiError:
        return ApiError(404, f"Unrecognized request URL (GET: {target.split('?', 1)[0]}). Please see "
                        "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def _check_permission(self, resource: str) -> None:
        needed = PERMISSION_OF.get(resource)
        if needed and needed in self.server.missing_permissions.get(self.key, ()):
            raise ApiError(
                403,
                f"The provided key '{mask_key(self.key)}' does not have the required permissions for this endpoint "
                f"on account '{self.a.account_id}'. Having the '{needed}' permission would allow this request to "
                "continue.",
                code="more_permissions_required",
            )

    # ------------------------------------------------------------------ params
    @staticmethod
    def _check_names(params: _Params, allowed: set[str]) -> None:
        for name in sorted(params.names()):
            if name not in allowed:
                raise ApiError(400, f"Received unknown parameter: {name}", param=name)

    @staticmethod
    def _variant(kind: str, params: _Params, in_list: bool) -> tuple[str, ...]:
        out: set[str] = set()
        for i, path in enumerate(params.lists.get("expand", []) + ([params.scalars["expand"]]
                                                                   if "expand" in params.scalars else [])):
            parts = path.split(".")
            # The `data.` prefix of a list counts as a level: data.items.data.price is 4, .tiers would be 5.
            if len(parts) > MAX_EXPAND_DEPTH:
                raise ApiError(400, "You cannot expand more than 4 levels of a property. Property: " + path,
                               param=f"expand[{i}]")
            if in_list:
                if parts[0] != "data" or len(parts) < 2:
                    raise ApiError(400, f"This property cannot be expanded ({path}). You may want to try expanding "
                                   f"'data.{path}' instead.", param=f"expand[{i}]")
                parts = parts[1:]
            rel = ".".join(parts)
            if rel in EXPAND_SUPPORTED[kind]:
                out.add(rel)
            elif rel not in EXPAND_ACCEPTED[kind]:
                raise ApiError(400, f"This property cannot be expanded ({rel}).", param=f"expand[{i}]")
        return tuple(sorted(out))

    @staticmethod
    def _paging(params: _Params) -> tuple[int, str | None, str | None]:
        raw = params.get("limit")
        limit = 10
        if raw is not None:
            limit = _int(raw, "limit")
            if limit < 1:
                raise ApiError(400, "This value must be greater than or equal to 1.", param="limit")
            if limit > 100:
                raise ApiError(400, "This value must be less than or equal to 100.", param="limit")
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
        if after == "" or before == "":
            raise ApiError(400, "Invalid string: an empty string is not a valid cursor.",
                           param="starting_after" if after == "" else "ending_before")
        return limit, after, before

    @staticmethod
    def _created(params: _Params) -> tuple[int | None, int | None, int | None, int | None]:
        gt = gte = lt = lte = None
        if "created" in params.scalars:
            v = _int(params.scalars["created"], "created")
            gte = lte = v
        for op, value in params.dicts.get("created", {}).items():
            if op not in ("gt", "gte", "lt", "lte"):
                raise ApiError(400, f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
            v = _int(value, f"created[{op}]")
            if op == "gt":
                gt = v
            elif op == "gte":
                gte = v if gte is None else max(gte, v)
            elif op == "lt":
                lt = v
            else:
                lte = v if lte is None else min(lte, v)
        return gt, gte, lt, lte

    # ------------------------------------------------------------------ lists
    def list_table(self, resource: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS[resource])
        limit, after, before = self._paging(params)
        variant = self._variant(resource, params, in_list=True)
        gt, gte, lt, lte = self._created(params)
        if resource == "events":
            # Stripe only keeps the last 30 days of events.
            floor = a.now - EVENT_WINDOW_S
            gte = floor if gte is None else max(gte, floor)
        table: Table = a.tables[resource]
        lo, hi = table.created_range(gt, gte, lt, lte)
        if after is not None:
            lo = max(lo, self._cursor(table, resource, after, "starting_after") + 1)
        if before is not None:
            hi = min(hi, self._cursor(table, resource, before, "ending_before"))
        candidates, predicate = self._filters(resource, params, table)
        positions, has_more = page(candidates, lo, hi, limit, before is not None, predicate, total=len(table))
        rows = table.rows
        encoded = a.encoded
        data = b",".join([encoded(resource, rows[p], variant) for p in positions])
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/%s"}' % (
            data, b"true" if has_more else b"false", resource.encode())

    def _cursor(self, table: Table, resource: str, obj_id: str, param: str) -> int:
        pos = table.pos_of.get(obj_id)
        if pos is None:
            noun = {"subscriptions": "subscription", "invoices": "invoice", "customers": "customer",
                    "prices": "price", "products": "product", "coupons": "coupon", "events": "event",
                    "invoiceitems": "invoiceitem"}[resource]
            raise ApiError(400, f"No such {noun}: '{obj_id}'", code="resource_missing", param=param)
        return pos

    def _filters(self, resource: str, params: _Params, table: Table) -> tuple[Any, Any]:
        """An ascending position index to scan (None: all) and a predicate for filters without an index."""
        a = self.a
        idx = table.indexes
        indexed: list[list[int]] = []
        preds: list[Any] = []
        rows = table.rows
        if resource == "subscriptions":
            status = params.get("status")
            if status is not None and status not in SUB_STATUSES:
                raise ApiError(400, f"Invalid status: must be one of {', '.join(SUB_STATUSES)}", param="status")
            if status is None:
                indexed.append(idx["default"].get(True, []))
            elif status == "ended":
                ended = sorted(idx["status"].get("canceled", []) + idx["status"].get("incomplete_expired", []))
                indexed.append(ended)
            elif status != "all":
                indexed.append(idx["status"].get(status, []))
            if params.get("customer") is not None:
                indexed.append(idx["customer"].get(params.get("customer"), []))
            price = params.get("price")
            if price is not None:
                pidx = a._price_pos.get(price, -1)
                subs = a.subs
                preds.append(lambda p: any(it.price == pidx for it in subs[rows[p]].versions[-1].items))
        elif resource == "invoices":
            for name in ("subscription", "customer", "status"):
                value = params.get(name)
                if value is not None:
                    if name == "status" and value not in INVOICE_STATUSES:
                        raise ApiError(400, f"Invalid status: must be one of {', '.join(INVOICE_STATUSES)}",
                                       param="status")
                    indexed.append(idx[name].get(value, []))
            if params.get("collection_method") not in (None, "charge_automatically"):
                indexed.append([])
        elif resource == "invoiceitems":
            pending = params.get("pending")
            if pending is not None:
                if pending not in ("true", "false"):
                    raise ApiError(400, "Invalid boolean: " + pending, param="pending")
                indexed.append(idx["pending"].get(pending == "true", []))
            for name in ("customer", "invoice"):
                if params.get(name) is not None:
                    indexed.append(idx[name].get(params.get(name), []))
        elif resource == "customers":
            if params.get("email") is not None:
                indexed.append(idx["email"].get(params.get("email"), []))
        elif resource == "prices":
            prices = a.prices
            for name in ("currency", "product", "type"):
                value = params.get(name)
                if value is not None:
                    attr = {"currency": "currency", "product": "product", "type": "type"}[name]
                    preds.append(lambda p, attr=attr, value=value: getattr(prices[rows[p]], attr) == value)
            active = params.get("active")
            if active is not None:
                want = active == "true"
                preds.append(lambda p: prices[rows[p]].active == want)
            keys = params.lists.get("lookup_keys")
            if keys:
                preds.append(lambda p: prices[rows[p]].lookup_key in keys)
            recurring = params.dicts.get("recurring", {})
            if "interval" in recurring:
                preds.append(lambda p: prices[rows[p]].interval == recurring["interval"])
            if "usage_type" in recurring:
                preds.append(lambda p: prices[rows[p]].usage_type == recurring["usage_type"])
        elif resource == "products":
            products = a.products
            active = params.get("active")
            if active is not None:
                want = active == "true"
                preds.append(lambda p: products[rows[p]].active == want)
            ids = params.lists.get("ids")
            if ids:
                preds.append(lambda p: products[rows[p]].id in ids)
        elif resource == "events":
            events = a.events
            types = list(params.lists.get("types", []))
            if params.get("type") is not None:
                if types:
                    raise ApiError(400, "You may only specify one of these parameters: type, types.")
                types = [params.get("type") or ""]
            if len(types) > 20:
                raise ApiError(400, "You may pass at most 20 types.", param="types")
            if types:
                if all("*" not in t for t in types):
                    merged: list[int] = []
                    for t in set(types):
                        merged.extend(idx["type"].get(t, []))
                    indexed.append(sorted(merged))
                else:
                    # `customer.subscription.*` style wildcards, as Stripe's type filter supports.
                    patterns = [re.compile(re.escape(t).replace(r"\*", "[^ ]*") + "$") for t in types]
                    preds.append(lambda p: any(pt.match(events[rows[p]].type) for pt in patterns))
        candidates: Any = None
        if indexed:
            indexed.sort(key=len)
            candidates = indexed[0]
            for other in indexed[1:]:
                members = set(other)
                preds.append(lambda p, members=members: p in members)
        predicate = None
        if len(preds) == 1:
            predicate = preds[0]
        elif preds:
            predicate = lambda p: all(f(p) for f in preds)  # noqa: E731
        return candidates, predicate

    def _fixed_page(self, ids: list[str], limit: int, after: str | None, before: str | None,
                    noun: str) -> tuple[range, bool]:
        """Paging over a list in its own fixed order (invoice lines, subscription items)."""
        lo, hi = 0, len(ids)
        if after is not None or before is not None:
            cursor = after if after is not None else before
            try:
                pos = ids.index(cursor)  # type: ignore[arg-type]
            except ValueError:
                raise ApiError(400, f"No such {noun}: '{cursor}'", code="resource_missing",
                               param="starting_after" if after is not None else "ending_before") from None
            if after is not None:
                lo = pos + 1
            else:
                hi = pos
        if before is not None:
            start = max(lo, hi - limit)
            return range(start, hi), start > lo
        end = min(hi, lo + limit)
        return range(lo, end), end < hi

    def list_lines(self, invoice_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS["lines"])
        limit, after, before = self._paging(params)
        variant = self._variant("lines", params, in_list=True)
        ridx = a.lookup("invoices", invoice_id)
        if ridx is None:
            raise ApiError(404, f"No such invoice: '{invoice_id}'", code="resource_missing", param="id")
        inv = a.invoices[ridx]
        chosen, has_more = self._fixed_page([ln.id for ln in inv.lines], limit, after, before, "line item")
        data = b",".join(orjson.dumps(a.line_dict(inv, inv.lines[i], variant)) for i in chosen)
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/invoices/%s/lines"}' % (
            data, b"true" if has_more else b"false", invoice_id.encode())

    def list_items(self, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS["subscription_items"])
        sub_id = params.get("subscription")
        if not sub_id:
            raise ApiError(400, "Missing required param: subscription.", code="parameter_missing",
                           param="subscription")
        limit, after, before = self._paging(params)
        variant = self._variant("subscription_items", params, in_list=True)
        ridx = a.lookup("subscriptions", sub_id)
        if ridx is None:
            raise ApiError(400, f"No such subscription: '{sub_id}'", code="resource_missing", param="subscription")
        sub, state, period = a.subscription_items(ridx)
        chosen, has_more = self._fixed_page([it.id for it in state.items], limit, after, before,
                                            "subscription item")
        data = b",".join(orjson.dumps(a.item_dict(sub, state.items[i], period, variant, prefix="")) for i in chosen)
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/subscription_items"}' % (
            data, b"true" if has_more else b"false")

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, resource: str, obj_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, {"expand"})
        variant = self._variant(resource, params, in_list=False)
        ridx = a.lookup(resource, obj_id)
        if (resource == "events" and ridx is not None and a.is_generated("events", ridx)
                and a.events[ridx].created < a.now - EVENT_WINDOW_S):
            ridx = None
        if ridx is None:
            noun = resource[:-1]
            raise ApiError(404, f"No such {noun}: '{obj_id}'", code="resource_missing", param="id")
        if resource == "products" and "default_price" in variant:
            d = a.product_dict(a.products[ridx])
            if d["default_price"]:
                d["default_price"] = a.price_dict(a.price_by_id(d["default_price"]))
            return orjson.dumps(d)
        return a.encoded(resource, ridx, variant)

    def retrieve_item(self, item_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, {"expand"})
        variant = self._variant("subscription_items", params, in_list=False)
        owner = a.item_owner(item_id)
        if owner is None:
            raise ApiError(404, f"No such subscription item: '{item_id}'", code="resource_missing", param="id")
        sub, state, period = a.subscription_items(owner)
        item = next(it for it in state.items if it.id == item_id)
        return orjson.dumps(a.item_dict(sub, item, period, variant, prefix=""))


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
