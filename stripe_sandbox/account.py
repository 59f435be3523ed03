"""The sandbox Stripe account: a seeded, realistic SaaS company and its billing history, rendered in Stripe's shapes.

`build_account` simulates every subscription of a SaaS company over the two years before `now`: plans in usd, eur
and jpy, trials, upgrades and downgrades with prorations, add-ons, discounts at subscription, item and customer
level, cancellations now and at period end, past_due, unpaid, incomplete, paused, reactivations, an import batch
that created many objects in one second, and the invoices and events that history produces. The account keeps a
per-subscription history of item segments (`history`) so tests can compute the expected MRR without reading the
generated objects.

Objects are stored compactly and rendered to the current API version's shapes (the key sets of Stripe's own
fixtures) on first access; the encoded JSON is cached per object and expansion variant. `mutate` changes a
fraction of subscriptions as real customers would and appends the matching events, for incremental-sync tests.
"""

from __future__ import annotations

import atexit
import gc
import json
import random
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from segflow_pipeline.sandbox import catalog as cat
from segflow_pipeline.sandbox._time import DAY, Clock, add_months
from segflow_pipeline.sandbox.listing import Table

# The API version whose object shapes this account renders (Stripe's fixtures for it define the key sets).
API_VERSION = "2026-10-28.endive"
EVENT_WINDOW_S = 30 * DAY  # Stripe keeps events for 30 days.

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

_ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PAIRS = [a + b for a in _ALPHA for b in _ALPHA]
_B62_8 = 62**8


def _b62(n: int, pairs: int) -> str:
    out = []
    for _ in range(pairs):
        n, r = divmod(n, 3844)
        out.append(_PAIRS[r])
    return "".join(reversed(out))


class _Ids:
    """Stripe-looking ids: a time part (so ids sort roughly by creation, as Stripe's do), an account tag, and a
    scrambled counter. Deterministic for a seed."""

    def __init__(self, rng: random.Random) -> None:
        self.tag = "".join(rng.choice(_ALPHA) for _ in range(10))
        self.n = rng.randrange(_B62_8)

    def long(self, prefix: str, t: int) -> str:
        n = self.n = (self.n + 0x2545F4914F6CDD1D) % _B62_8
        P = _PAIRS
        return (f"{prefix}_{P[t // 14776336 % 3844]}{P[t // 3844 % 3844]}{P[t % 3844]}{self.tag}"
                f"{P[n // 56800235584 % 3844]}{P[n // 14776336 % 3844]}{P[n // 3844 % 3844]}{P[n % 3844]}")

    def short(self, prefix: str, t: int) -> str:
        n = self.n = (self.n + 0x2545F4914F6CDD1D) % _B62_8
        P = _PAIRS
        return (f"{prefix}_{P[t // 14776336 % 3844]}{P[t // 3844 % 3844]}{P[t % 3844]}"
                f"{P[n // 56800235584 % 3844]}{P[n // 14776336 % 3844]}{P[n // 3844 % 3844]}{P[n % 3844]}")


class Segment(NamedTuple):
    """One item of a subscription at one price and quantity during [start, end) (end None: still running)."""

    subscription: str
    item: str
    price: str
    quantity: int | None
    start: int
    end: int | None


class Item(NamedTuple):
    id: str
    price: int  # price index
    quantity: int | None
    created: int


class State(NamedTuple):
    """A subscription's mutable attributes from time `t` on; `event` is the event type that announced it."""

    t: int
    event: str | None
    changed: tuple[str, ...]
    status: str
    items: tuple[Item, ...]
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    latest_invoice: str | None
    reason: str | None
    discounts: tuple[int, ...]  # subscription-level discount indices in effect
    request: str | None


class Sub:
    __slots__ = ("idx", "id", "customer", "currency", "clock", "start", "created", "trial_start", "trial_end",
                 "versions", "item_discounts", "end_behavior", "pm", "feedback")

    def __init__(self) -> None:
        self.item_discounts: dict[str, int] = {}


class Line(NamedTuple):
    id: str
    kind: str  # sub | trial | metered | proration_credit | proration_charge | oneoff
    item: str | None
    price: int
    quantity: int | None
    amount: int
    start: int
    end: int
    invoice_item: str | None
    discount_amounts: tuple[tuple[int, str], ...]
    change_at: int


class Invoice:
    __slots__ = ("idx", "id", "created", "customer", "sub", "currency", "reason", "status", "period_start",
                 "period_end", "lines", "number", "finalized_at", "paid_at", "voided_at", "discounts",
                 "total_discounts", "subtotal", "total", "attempts")


class Customer:
    __slots__ = ("idx", "id", "created", "name", "email", "country", "city", "currency", "discount", "prefix",
                 "seq", "delinquent", "pm", "phone")


class Discount(NamedTuple):
    id: str
    coupon: str
    customer: str
    subscription: str | None
    subscription_item: str | None
    start: int
    end: int | None


class Event(NamedTuple):
    created: int
    id: str
    type: str
    kind: str  # sub | invoice | customer
    ref: int
    version: int
    request: str | None


FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elena", "Farah", "Gus", "Hana", "Ivan", "Jun", "Kira", "Liam", "Mia", "Noah",
         "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Xavi", "Yuki", "Zoe"]
LAST = ["Smith", "Müller", "Tanaka", "Garcia", "Rossi", "Dubois", "Kim", "Nguyen", "Olsen", "Novak", "Silva",
        "Cohen", "Sato", "Brown", "Fischer", "Martin", "Lopez", "Kowalski", "Ito", "Jensen"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell", "Cyberdyne",
           "Soylent", "Gringotts", "Oscorp", "Wonka", "Aperture", "Massive", "Pied Piper", "Dunder", "Nakatomi"]
SUFFIX = ["Labs", "GmbH", "Inc.", "Ltd", "KK", "SAS", "Studio", "Analytics", "Cloud", "Health", "Logistics"]
PLACES = {"usd": [("US", "San Francisco"), ("US", "Austin"), ("US", "New York"), ("CA", "Toronto")],
          "eur": [("DE", "Berlin"), ("FR", "Paris"), ("NL", "Amsterdam"), ("ES", "Madrid"), ("IE", "Dublin")],
          "jpy": [("JP", "Tokyo"), ("JP", "Osaka")]}

# Subscription families: (currency, interval, interval_count) and their share of new subscriptions.
FAMILIES = [(("usd", "month", 1), 48), (("usd", "year", 1), 12), (("usd", "month", 3), 2), (("usd", "week", 1), 1),
            (("eur", "month", 1), 15), (("eur", "year", 1), 6), (("jpy", "month", 1), 11), (("jpy", "year", 1), 5)]
# Final statuses and their shares. A pending cancellation was requested during the current period, so its share is
# about one period's worth of the cancellations at period end spread over the whole history (a larger share piles
# churn into the most recent month, which real accounts do not show).
OUTCOMES = [("active", 60), ("canceled_now", 8), ("canceled_end", 12), ("cancel_pending", 1), ("past_due", 4),
            ("unpaid", 2), ("incomplete", 1), ("incomplete_expired", 2), ("paused", 2)]


class SandboxAccount:
    """One Stripe account's objects, indexes and cached renderings. Build it with `build_account`."""

    def __init__(self, seed: int, now: int, livemode: bool) -> None:
        self.seed, self.now, self.livemode = seed, now, livemode
        self.rng = random.Random(seed)
        self.ids = _Ids(self.rng)
        self.account_id = "acct_1" + self.ids.tag + _b62(seed % 3844**3, 3)[:5]
        self.name = "Segflow Sandbox SaaS Inc." if not livemode else "Segflow Sandbox (live, empty)"
        self.products: list[cat.Product] = []
        self.prices: list[cat.Price] = []
        self.coupons: list[cat.Coupon] = []
        self.customers: list[Customer] = []
        self.subs: list[Sub] = []
        self.invoices: list[Invoice] = []
        self.discounts: list[Discount] = []
        self.events: list[Event] = []
        self.history: dict[str, list[Segment]] = {}
        self.status_history: dict[str, list[tuple[int, str]]] = {}
        self.tables: dict[str, Table] = {}
        self.lock = threading.RLock()
        self._cache: dict[str, dict[Any, bytes]] = {}
        self.cache_limit = 250_000  # encoded objects kept per resource (bounds memory at ~1 GB each)
        self._price_frag: list[Any] = []
        self._price_tiers_frag: list[Any] = []
        self._plan_frag: list[Any] = []
        self._customer_pos: dict[str, int] = {}
        self._sub_pos: dict[str, int] = {}
        self._invoice_pos: dict[str, int] = {}
        self._price_pos: dict[str, int] = {}
        self._product_pos: dict[str, int] = {}
        self._coupon_pos: dict[str, int] = {}
        self._discount_pos: dict[str, int] = {}
        self._event_pos: dict[str, int] = {}
        self._item_owner: dict[str, int] = {}
        # Objects served exactly as given (inject_raw): per resource, (id, created, JSON bytes, object).
        self.raw_objects: dict[str, list[tuple[str, int, bytes, Any]]] = {}
        # Proration lines not invoiced yet (a downgrade with proration_behavior=create_prorations waits for the next
        # renewal; a subscription that ends first leaves them pending for good): (subscription index, line).
        self.pending_items: list[tuple[int, Line]] = []
        # Invoice items whose invoice lines Stripe renders under `parent.invoice_item_details` (no subscription
        # item) rather than `parent.subscription_item_details`: accounts see both shapes, chosen per change.
        self.item_details_parent: set[str] = set()
        # Every invoice item (/v1/invoiceitems): (invoice or None while pending, subscription index, line).
        self.invoice_item_records: list[tuple[Invoice | None, int, Line]] = []
        self._invoice_item_pos: dict[str, int] = {}
        self._raw_pos: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ public helpers
    def counts(self) -> dict[str, int]:
        items = sum(len(s.versions[-1].items) for s in self.subs)
        return {
            "customers": len(self.customers),
            "subscriptions": len(self.subs),
            "subscription_items": items,
            "invoices": len(self.invoices),
            "invoice_lines": sum(len(i.lines) for i in self.invoices),
            "prices": len(self.prices),
            "products": len(self.products),
            "coupons": len(self.coupons),
            "discounts": len(self.discounts),
            "events": len(self.events),
        }

    def price_by_id(self, price_id: str) -> cat.Price:
        return self.prices[self._price_pos[price_id]]

    def subscription(self, sub_id: str) -> Sub:
        return self.subs[self._sub_pos[sub_id]]

    def lookup(self, kind: str, obj_id: str) -> int | None:
        """Record index of an object of `kind` (the list/resource name) or None."""
        table = {
            "subscriptions": self._sub_pos, "invoices": self._invoice_pos, "customers": self._customer_pos,
            "prices": self._price_pos, "products": self._product_pos, "coupons": self._coupon_pos,
            "events": self._event_pos, "invoiceitems": self._invoice_item_pos,
        }[kind]
        found = table.get(obj_id)
        if found is None and self._raw_pos:
            found = self._raw_pos.get(kind, {}).get(obj_id)
        return found

    def is_generated(self, kind: str, ridx: int) -> bool:
        """False for objects added with `inject_raw` (they have no generated record behind them)."""
        return ridx < len(self._records(kind))

    def _records(self, kind: str) -> list[Any]:
        return {"subscriptions": self.subs, "invoices": self.invoices, "customers": self.customers,
                "prices": self.prices, "products": self.products, "coupons": self.coupons,
                "events": self.events, "invoiceitems": self.invoice_item_records}[kind]

    # ------------------------------------------------------------------ objects Stripe should never send
    def inject_raw(self, resource: str, obj: Any, *, object_id: str | None = None, created: int | None = None) -> str:
        """Serve `obj` exactly as given, in the list `resource` (and by id), beside the generated objects.

        For tests of how a client copes with what Stripe should not send: a field missing or null, a value of the
        wrong type, an unknown currency, a price without `recurring`, an event about an object that is gone.
        `obj` may be any JSON value; it is placed in list order by `created` (default: its own `created`, else the
        account's `now`) under `object_id` (default: its own `id`). List filters on columns the account indexes
        (subscription status, invoice customer, event created...) read the object's own fields; filters that
        need a generated record (`price=` on subscriptions, price `currency=`...) do not match it, and its
        embedded lists cannot be paged (keep them short). `counts()` counts generated objects only.
        Returns the id the object is listed under.
        """
        if resource not in ("subscriptions", "invoices", "customers", "prices", "products", "coupons", "events",
                            "invoiceitems"):
            raise ValueError(f"inject_raw: {resource!r} is not a list this account serves")
        own = obj if isinstance(obj, dict) else {}
        object_id = object_id or own.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise ValueError("inject_raw: the object has no string id; pass object_id=")
        if created is None:
            created = own.get("created") if isinstance(own.get("created"), int) else self.now
        with self.lock:
            if self.lookup(resource, object_id) is not None:
                raise ValueError(f"inject_raw: {resource} already holds {object_id!r}")
            # The standard library's encoder, unlike orjson, writes integers past 64 bits (amounts too big for Stripe).
            encoded = json.dumps(obj, separators=(",", ":")).encode()
            self.raw_objects.setdefault(resource, []).append((object_id, int(created), encoded, obj))
            self._finish()
        return object_id

    # ------------------------------------------------------------------ encoding with cache
    def encoded(self, kind: str, ridx: int, variant: tuple[str, ...] = ()) -> bytes:
        if self.raw_objects and not self.is_generated(kind, ridx):
            return self.raw_objects[kind][ridx - len(self._records(kind))][2]
        cache = self._cache.setdefault(kind, {})
        key = (ridx, variant)
        data = cache.get(key)
        if data is None:
            data = orjson.dumps(self.render(kind, ridx, variant))
            if len(cache) >= self.cache_limit:
                cache.clear()
            cache[key] = data
        return data

    def invalidate(self, kind: str, ridxs: Iterable[int]) -> None:
        cache = self._cache.get(kind)
        if not cache:
            return
        wanted = set(ridxs)
        for key in [k for k in cache if k[0] in wanted]:
            del cache[key]

    def render(self, kind: str, ridx: int, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        if kind == "subscriptions":
            sub = self.subs[ridx]
            return self.sub_dict(sub, sub.versions[-1], self.now, variant)
        if kind == "invoices":
            return self.invoice_dict(self.invoices[ridx], variant)
        if kind == "customers":
            return self.customer_dict(self.customers[ridx], variant)
        if kind == "prices":
            return self.price_dict(self.prices[ridx], "tiers" in variant, "product" in variant)
        if kind == "products":
            return self.product_dict(self.products[ridx])
        if kind == "coupons":
            return self.coupon_dict(self.coupons[ridx])
        if kind == "events":
            return self.event_dict(self.events[ridx])
        if kind == "invoiceitems":
            return self.invoice_item_dict(*self.invoice_item_records[ridx])
        raise KeyError(kind)

    # ------------------------------------------------------------------ renderers (current API version shapes)
    def price_dict(self, p: cat.Price, tiers: bool = False, product: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": p.id,
            "object": "price",
            "active": p.active,
            "billing_scheme": p.billing_scheme,
            "created": p.created,
            "currency": p.currency,
            "custom_unit_amount": None,
            "livemode": self.livemode,
            "lookup_key": p.lookup_key,
            "metadata": {},
            "nickname": p.nickname,
            "product": self.product_dict(self.products[self._product_pos[p.product]]) if product else p.product,
            "recurring": None if p.interval is None else {
                "interval": p.interval,
                "interval_count": p.interval_count,
                "meter": p.meter,
                "trial_period_days": None,
                "usage_type": p.usage_type,
            },
            "tax_behavior": "exclusive",
            "tiers_mode": p.tiers_mode,
            "transform_quantity": None if p.transform is None else {
                "divide_by": p.transform[0], "round": p.transform[1]},
            "type": p.type,
            "unit_amount": p.unit_amount,
            "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
        }
        if tiers and p.billing_scheme == "tiered":
            # `tiers` is an includable property: only present when expanded, as in Stripe.
            d["tiers"] = [
                {"flat_amount": flat, "flat_amount_decimal": None if flat is None else str(flat),
                 "unit_amount": unit, "unit_amount_decimal": None if unit is None else str(unit), "up_to": up_to}
                for up_to, unit, flat in p.tiers
            ]
        elif tiers:
            d["tiers"] = None
        return d

    def plan_dict(self, p: cat.Price) -> dict[str, Any]:
        # The legacy Plan view of a recurring price, still embedded in subscription items.
        return {
            "id": p.id,
            "object": "plan",
            "active": p.active,
            "amount": p.unit_amount,
            "amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            "billing_scheme": p.billing_scheme,
            "created": p.created,
            "currency": p.currency,
            "interval": p.interval,
            "interval_count": p.interval_count,
            "livemode": self.livemode,
            "metadata": {},
            "meter": p.meter,
            "nickname": p.nickname,
            "product": p.product,
            "tiers_mode": p.tiers_mode,
            "transform_usage": None if p.transform is None else {
                "divide_by": p.transform[0], "round": p.transform[1]},
            "trial_period_days": None,
            "usage_type": p.usage_type,
        }

    def product_dict(self, p: cat.Product) -> dict[str, Any]:
        return {
            "id": p.id,
            "object": "product",
            "active": p.active,
            "created": p.created,
            "default_price": p.default_price,
            "description": p.description,
            "images": [],
            "livemode": self.livemode,
            "marketing_features": [],
            "metadata": {},
            "name": p.name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": "txcd_10103001",
            "type": "service",
            "unit_label": p.unit_label,
            "updated": p.updated,
            "url": None,
        }

    def coupon_dict(self, c: cat.Coupon) -> dict[str, Any]:
        return {
            "id": c.id,
            "object": "coupon",
            "amount_off": c.amount_off,
            "created": c.created,
            "currency": c.currency,
            "duration": c.duration,
            "duration_in_months": c.duration_in_months,
            "livemode": self.livemode,
            "max_redemptions": None,
            "metadata": {},
            "name": c.name,
            "percent_off": c.percent_off,
            "redeem_by": None,
            "times_redeemed": c.times_redeemed,
            "valid": True,
        }

    def discount_dict(self, di: int, coupon_object: bool = False) -> dict[str, Any]:
        d = self.discounts[di]
        coupon: Any = d.coupon
        if coupon_object:
            coupon = self.coupon_dict(self.coupons[self._coupon_pos[d.coupon]])
        return {
            "id": d.id,
            "object": "discount",
            "checkout_session": None,
            "customer": d.customer,
            "customer_account": None,
            "end": d.end,
            "invoice": None,
            "invoice_item": None,
            "promotion_code": None,
            "source": {"coupon": coupon, "type": "coupon"},
            "start": d.start,
            "subscription": d.subscription,
            "subscription_item": d.subscription_item,
        }

    def customer_dict(self, c: Customer, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        discount = None
        if c.discount is not None:
            discount = self.discount_dict(c.discount, "discount.source.coupon" in variant)
        return {
            "id": c.id,
            "object": "customer",
            "address": {"city": c.city, "country": c.country, "line1": "1 Market Street", "line2": None,
                        "postal_code": "10001", "state": None},
            "balance": 0,
            "created": c.created,
            "currency": c.currency,
            "default_source": None,
            "delinquent": c.delinquent,
            "description": None,
            "discount": discount,
            "email": c.email,
            "invoice_prefix": c.prefix,
            "invoice_settings": {"custom_fields": None, "default_payment_method": c.pm, "footer": None,
                                 "rendering_options": None},
            "livemode": self.livemode,
            "metadata": {},
            "name": c.name,
            "next_invoice_sequence": c.seq + 1,
            "phone": c.phone,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def item_dict(self, sub: Sub, it: Item, period: tuple[int, int], variant: tuple[str, ...] = (),
                  prefix: str = "items.data.") -> dict[str, Any]:
        p = it.price
        if prefix + "price.tiers" in variant or prefix + "price.product" in variant:
            price: Any = orjson.Fragment(orjson.dumps(self.price_dict(
                self.prices[p], prefix + "price.tiers" in variant, prefix + "price.product" in variant)))
        else:
            price = self._price_frag[p]
        di = sub.item_discounts.get(it.id)
        discounts: list[Any] = []
        if di is not None and self._discount_in_effect(di):
            discounts = [self.discount_dict(di) if prefix + "discounts" in variant else self.discounts[di].id]
        return {
            "id": it.id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": it.created,
            "current_period_end": period[1],
            "current_period_start": period[0],
            "discounts": discounts,
            "metadata": {},
            "plan": self._plan_frag[p],
            "price": price,
            "quantity": it.quantity,
            "subscription": sub.id,
            "tax_rates": [],
        }

    def _discount_in_effect(self, di: int, at: int | None = None) -> bool:
        end = self.discounts[di].end
        return end is None or end > (self.now if at is None else at)

    def sub_period(self, sub: Sub, state: State, t: int) -> tuple[int, int]:
        if state.ended_at is not None:
            t = min(t, state.ended_at - 1)
        if sub.trial_end is not None and t < sub.trial_end:
            return sub.trial_start, sub.trial_end
        return sub.clock.period_at(t)

    def sub_dict(self, sub: Sub, state: State, t: int, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        period = self.sub_period(sub, state, t)
        expand_discounts = "discounts" in variant
        discounts = [self.discount_dict(di) if expand_discounts else self.discounts[di].id
                     for di in state.discounts if self._discount_in_effect(di, t)]
        customer: Any = sub.customer
        if "customer" in variant:
            customer = self.customer_dict(self.customers[self._customer_pos[sub.customer]])
        latest: Any = state.latest_invoice
        if "latest_invoice" in variant and latest is not None:
            latest = self.invoice_dict(self.invoices[self._invoice_pos[latest]])
        return {
            "id": sub.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": sub.clock.anchor,
            "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": None, "type": "classic"},
            "billing_schedules": [],
            "billing_thresholds": None,
            "cancel_at": state.cancel_at,
            "cancel_at_period_end": state.cancel_at_period_end,
            "canceled_at": state.canceled_at,
            "cancellation_details": {"comment": None,
                                     "feedback": sub.feedback if state.canceled_at else None,
                                     "reason": state.reason},
            "collection_method": "charge_automatically",
            "created": sub.created,
            "currency": sub.currency,
            "customer": customer,
            "customer_account": None,
            "days_until_due": None,
            "default_payment_method": sub.pm,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": discounts,
            "ended_at": state.ended_at,
            "invoice_settings": {"account_tax_ids": None, "custom_fields": None, "description": None,
                                 "footer": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [self.item_dict(sub, it, period, variant) for it in state.items],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub.id}",
            },
            "latest_invoice": latest,
            "livemode": self.livemode,
            "managed_payments": {"enabled": False},
            "metadata": {},
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                 "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": sub.start,
            "status": state.status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": sub.trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": sub.end_behavior}},
            "trial_start": sub.trial_start,
        }

    def line_dict(self, inv: Invoice, ln: Line, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        p = self.prices[ln.price]
        if ln.kind == "oneoff":
            parent = {
                "invoice_item_details": {"invoice_item": ln.invoice_item, "proration": False,
                                         "proration_details": {"credited_items": None}, "subscription": inv.sub},
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        elif ln.invoice_item in self.item_details_parent:
            # The proration invoice item a subscription update created, invoiced: it names the subscription but
            # not the subscription item (https://docs.stripe.com/api/invoice-line-item/object#invoice_line_item_object-parent).
            parent = {
                "invoice_item_details": {"invoice_item": ln.invoice_item, "proration": True,
                                         "proration_details": {"credited_items": None}, "subscription": inv.sub},
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        else:
            proration = ln.kind.startswith("proration")
            parent = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": ln.invoice_item,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": inv.sub,
                    "subscription_item": ln.item,
                },
                "type": "subscription_item_details",
            }
        expand_discounts = "discounts" in variant
        return {
            "id": ln.id,
            "object": "line_item",
            "amount": ln.amount,
            "currency": inv.currency,
            "description": self._line_description(p, ln, inv.currency),
            "discount_amounts": [{"amount": a, "discount": d} for a, d in ln.discount_amounts],
            "discountable": ln.kind != "proration_credit",
            "discounts": [self.discount_dict(self._discount_pos[d]) if expand_discounts else d
                          for _, d in ln.discount_amounts],
            "invoice": inv.id,
            "livemode": self.livemode,
            "metadata": {},
            "parent": parent,
            "period": {"end": ln.end, "start": ln.start},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": p.id, "product": p.product},
                "type": "price_details",
                "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            },
            "quantity": ln.quantity,
            "quantity_decimal": None if ln.quantity is None else str(ln.quantity),
            "subscription": inv.sub,
            "subtotal": ln.amount,
            "taxes": [],
        }

    @staticmethod
    def _line_description(p: cat.Price, ln: Line, currency: str) -> str:
        q = ln.quantity if ln.quantity is not None else 0
        if ln.kind == "trial":
            return f"Trial period for {p.product_name}"
        if ln.kind == "oneoff":
            return p.product_name
        if ln.kind == "proration_credit":
            return f"Unused time on {q} × {p.product_name} after {_date(ln.change_at)}"
        if ln.kind == "proration_charge":
            return f"Remaining time on {q} × {p.product_name} after {_date(ln.change_at)}"
        if p.billing_scheme == "tiered":
            return f"{q} × {p.product_name} (tiered)"
        interval = p.interval if p.interval_count == 1 else f"every {p.interval_count} {p.interval}s"
        return f"{q} × {p.product_name} (at {cat.money(p.unit_amount or 0, currency)} / {interval})"

    def invoice_item_dict(self, inv: Invoice | None, sub_idx: int, ln: Line) -> dict[str, Any]:
        """An invoice item (/v1/invoiceitems): a proration a subscription update created, or a one-off charge.
        `invoice` is null while it is pending (not yet on an invoice)."""
        sub = self.subs[sub_idx]
        p = self.prices[ln.price]
        details = {"subscription": sub.id,
                   "subscription_item": None if ln.invoice_item in self.item_details_parent else ln.item}
        return {
            "id": ln.invoice_item,
            "object": "invoiceitem",
            "amount": ln.amount,
            "currency": sub.currency,
            "customer": sub.customer,
            "customer_account": None,
            "date": ln.change_at,
            "description": self._line_description(p, ln, sub.currency),
            "discountable": ln.kind != "proration_credit",
            "discounts": [],
            "invoice": inv.id if inv is not None else None,
            "livemode": self.livemode,
            "metadata": {},
            "net_amount": ln.amount,
            "parent": {"subscription_details": details, "type": "subscription_details"},
            "period": {"end": ln.end, "start": ln.start},
            "pricing": {
                "price_details": {"price": p.id, "product": p.product},
                "type": "price_details",
                "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            },
            "proration": ln.kind.startswith("proration"),
            "quantity": ln.quantity or 1,
            "quantity_decimal": str(ln.quantity or 1),
            "tax_rates": [],
            "test_clock": None,
        }

    def invoice_dict(self, inv: Invoice, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        c = self.customers[self._customer_pos[inv.customer]]
        lines = inv.lines
        status = inv.status
        draft = status == "draft"
        paid = inv.total if status == "paid" else 0
        due = max(inv.total, 0)
        customer: Any = inv.customer
        if "customer" in variant:
            customer = self.customer_dict(c)
        sub_ref: Any = inv.sub
        if "parent.subscription_details.subscription" in variant and inv.sub is not None:
            s = self.subs[self._sub_pos[inv.sub]]
            sub_ref = self.sub_dict(s, s.versions[-1], self.now)
        line_variant = tuple(v[len("lines.data."):] for v in variant if v.startswith("lines.data."))
        hosted = None if draft else f"https://invoice.stripe.com/i/{self.account_id}/test_{inv.id[3:]}"
        return {
            "id": inv.id,
            "object": "invoice",
            "account_country": "US",
            "account_name": self.name,
            "account_tax_ids": None,
            "amount_due": due,
            "amount_overpaid": 0,
            "amount_paid": paid,
            "amount_remaining": due if status in ("open", "draft") else 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": inv.attempts,
            "attempted": inv.attempts > 0,
            "auto_advance": status in ("draft", "open"),
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                              "status": None},
            "automatically_finalizes_at": inv.created + 3600 if draft else None,
            "billing_reason": inv.reason,
            "collection_method": "charge_automatically",
            "created": inv.created,
            "currency": inv.currency,
            "custom_fields": None,
            "customer": customer,
            "customer_account": None,
            "customer_address": {"city": c.city, "country": c.country, "line1": "1 Market Street", "line2": None,
                                 "postal_code": "10001", "state": None},
            "customer_email": c.email,
            "customer_name": c.name,
            "customer_phone": c.phone,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [self.discount_dict(self._discount_pos[d]) if "discounts" in variant else d
                          for d in inv.discounts],
            "due_date": None,
            "effective_at": inv.finalized_at,
            "ending_balance": None if draft else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": hosted,
            "invoice_pdf": None if hosted is None else hosted + "/pdf",
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            # Embedded lines are truncated to 10, the rest is paged from `url`.
            "lines": {
                "object": "list",
                "data": [self.line_dict(inv, ln, line_variant) for ln in lines[:10]],
                "has_more": len(lines) > 10,
                "total_count": len(lines),
                "url": f"/v1/invoices/{inv.id}/lines",
            },
            "livemode": self.livemode,
            "metadata": {},
            "next_payment_attempt": (inv.created + (inv.attempts + 1) * 3 * DAY) if status == "open" else None,
            "number": inv.number,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": None if inv.sub is None else {"metadata": {}, "subscription": sub_ref},
                "type": "subscription_details",
            },
            "payment_settings": {"default_mandate": None, "payment_method_options": None,
                                 "payment_method_types": None},
            "period_end": inv.period_end,
            "period_start": inv.period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": {"amount_tax_display": None, "pdf": {"page_size": "auto"}, "template": None,
                          "template_version": None},
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": status,
            "status_transitions": {"finalized_at": inv.finalized_at, "marked_uncollectible_at": None,
                                   "paid_at": inv.paid_at, "voided_at": inv.voided_at},
            # Current API versions carry the subscription in parent.subscription_details; this legacy field stays null.
            "subscription": None,
            "subtotal": inv.subtotal,
            "subtotal_excluding_tax": inv.subtotal,
            "test_clock": None,
            "total": inv.total,
            "total_discount_amounts": [{"amount": a, "discount": d} for a, d in inv.total_discounts],
            "total_excluding_tax": inv.total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": inv.created,
        }

    def event_dict(self, ev: Event) -> dict[str, Any]:
        data: dict[str, Any]
        if ev.kind == "sub":
            sub = self.subs[ev.ref]
            state = sub.versions[ev.version]
            data = {"object": self.sub_dict(sub, state, ev.created)}
            if ev.type == "customer.subscription.updated" and ev.version > 0:
                prev = self.sub_dict(sub, sub.versions[ev.version - 1], ev.created - 1)
                data["previous_attributes"] = {k: prev[k] for k in state.changed}
        elif ev.kind == "invoice":
            data = {"object": self._invoice_at_event(self.invoices[ev.ref], ev.type)}
        else:
            # As the customer was when created: events are immutable, whatever happened to the customer later.
            obj = self.customer_dict(self.customers[ev.ref])
            obj.update(next_invoice_sequence=1, delinquent=False)
            data = {"object": obj}
        return {
            "id": ev.id,
            "object": "event",
            "api_version": API_VERSION,
            "created": ev.created,
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": 0,
            "request": {"id": ev.request, "idempotency_key": None},
            "type": ev.type,
        }

    def _invoice_at_event(self, inv: Invoice, event_type: str) -> dict[str, Any]:
        """The invoice as the event saw it: a draft when created, open when finalized, paid when paid."""
        d = self.invoice_dict(inv)
        transitions = d["status_transitions"]
        if event_type == "invoice.created" and inv.status != "draft":
            d.update(status="draft", number=None, amount_paid=0, amount_remaining=d["amount_due"], attempted=False,
                     attempt_count=0, effective_at=None, ending_balance=None, hosted_invoice_url=None,
                     invoice_pdf=None, auto_advance=True,
                     automatically_finalizes_at=None if inv.finalized_at is None else inv.finalized_at)
            transitions.update(finalized_at=None, paid_at=None, voided_at=None)
        elif event_type in ("invoice.finalized", "invoice.payment_failed") and inv.status in ("paid", "void"):
            d.update(status="open", amount_paid=0, amount_remaining=d["amount_due"])
            transitions.update(paid_at=None, voided_at=None)
        return d

    def account_dict(self) -> dict[str, Any]:
        return _account_object(self)

    def balance_dict(self) -> dict[str, Any]:
        currencies = sorted({s.currency for s in self.subs}) or ["usd"]
        return {
            "object": "balance",
            "available": [{"amount": 0, "currency": c, "source_types": {"card": 0}} for c in currencies],
            "connect_reserved": [{"amount": 0, "currency": c} for c in currencies],
            "livemode": self.livemode,
            "pending": [{"amount": 0, "currency": c, "source_types": {"card": 0}} for c in currencies],
        }

    def subscription_items(self, sub_idx: int) -> tuple[Sub, State, tuple[int, int]]:
        sub = self.subs[sub_idx]
        state = sub.versions[-1]
        return sub, state, self.sub_period(sub, state, self.now)

    def item_owner(self, item_id: str) -> int | None:
        """Index of the subscription that currently has the subscription item `item_id`."""
        return self._item_owner.get(item_id)

    # ------------------------------------------------------------------ indexes
    def _finish(self) -> None:
        """(Re)build id maps, list tables and pre-encoded fragments after generation or a mutation."""
        self._customer_pos = {c.id: c.idx for c in self.customers}
        self._sub_pos = {s.id: s.idx for s in self.subs}
        self._invoice_pos = {inv.id: inv.idx for inv in self.invoices}
        self._price_pos = {p.id: p.idx for p in self.prices}
        self._product_pos = {p.id: p.idx for p in self.products}
        self._coupon_pos = {c.id: i for i, c in enumerate(self.coupons)}
        self._discount_pos = {d.id: i for i, d in enumerate(self.discounts)}
        self._event_pos = {e.id: i for i, e in enumerate(self.events)}
        if len(self._price_frag) != len(self.prices):
            self._price_frag = [orjson.Fragment(orjson.dumps(self.price_dict(p))) for p in self.prices]
            self._plan_frag = [orjson.Fragment(orjson.dumps(self.plan_dict(p))) for p in self.prices]
        subs, invs = self.subs, self.invoices
        hidden = ("canceled", "incomplete_expired")
        statuses = [s.versions[-1].status for s in subs]

        def table(resource: str, ids: list[str], created: list[int],
                  columns: dict[str, list[Any]] | None = None) -> Table:
            extra = self.raw_objects.get(resource, [])
            if extra:
                base = len(ids)
                self._raw_pos[resource] = {entry[0]: base + i for i, entry in enumerate(extra)}
                ids = ids + [entry[0] for entry in extra]
                created = created + [entry[1] for entry in extra]
                columns = {name: list(values) + [_raw_column(name, entry[3]) for entry in extra]
                           for name, values in (columns or {}).items()}
            return Table(ids, created, columns=columns)

        self._raw_pos = {}
        tables = {
            "subscriptions": table(
                "subscriptions", [s.id for s in subs], [s.created for s in subs],
                # Without `status`, Stripe hides canceled and incomplete_expired subscriptions.
                columns={"status": statuses, "default": [st not in hidden for st in statuses],
                         "customer": [s.customer for s in subs]}),
            "invoices": table(
                "invoices", [i.id for i in invs], [i.created for i in invs],
                columns={"subscription": [i.sub for i in invs], "customer": [i.customer for i in invs],
                         "status": [i.status for i in invs]}),
            "customers": table("customers", [c.id for c in self.customers], [c.created for c in self.customers],
                               columns={"email": [c.email for c in self.customers]}),
            "prices": table("prices", [p.id for p in self.prices], [p.created for p in self.prices]),
            "products": table("products", [p.id for p in self.products], [p.created for p in self.products]),
            "coupons": table("coupons", [c.id for c in self.coupons], [c.created for c in self.coupons]),
            "events": table("events", [e.id for e in self.events], [e.created for e in self.events],
                            columns={"type": [e.type for e in self.events]}),
        }
        records: list[tuple[Invoice | None, int, Line]] = [
            (inv, self._sub_pos[inv.sub], ln) for inv in invs if inv.sub is not None
            for ln in inv.lines if ln.invoice_item is not None]
        records.extend((None, sub_idx, ln) for sub_idx, ln in self.pending_items)
        self.invoice_item_records = records
        self._invoice_item_pos = {ln.invoice_item: i for i, (_, _, ln) in enumerate(records)}
        self._cache.pop("invoiceitems", None)
        tables["invoiceitems"] = table(
            "invoiceitems", [ln.invoice_item for _, _, ln in records], [ln.change_at for _, _, ln in records],
            columns={"pending": [inv is None for inv, _, _ in records],
                     "customer": [subs[i].customer for _, i, _ in records],
                     "invoice": [inv.id if inv is not None else None for inv, _, _ in records]})
        self._item_owner = {it.id: s.idx for s in subs for it in s.versions[-1].items}
        self.tables = tables

    # ------------------------------------------------------------------ mutation
    def mutate(self, fraction: float = 0.01, seed: int = 1, now: int | None = None) -> list[str]:
        """Change about `fraction` of the subscriptions at time `now` as customers would (upgrades, downgrades,
        quantity changes, cancellations now and at period end, new subscriptions) and append the invoices and
        events that Stripe would create. Returns the ids of the changed and created subscriptions."""
        with self.lock:
            now = max(self.now + 1, int(time.time())) if now is None else int(now)
            if now <= self.now:
                raise ValueError("mutate(now=...) must be later than the account's current time")
            rng = random.Random(f"{self.seed}:{seed}:{now}")
            old_now = self.now
            gen = _Generator(self, rng)
            self.now = gen.now = now
            live = [s for s in self.subs if s.versions[-1].status in ("active", "past_due", "trialing")
                    and not s.versions[-1].cancel_at_period_end]
            n_change = max(1, round(len(self.subs) * fraction)) if self.subs else 0
            chosen = rng.sample(live, min(len(live), n_change))
            changed: list[str] = []
            first_new_invoice = len(self.invoices)
            for sub in chosen:
                kind = rng.choices(["upgrade", "downgrade", "qty_up", "qty_down", "cancel_end", "cancel_now"],
                                   [25, 15, 20, 10, 15, 15])[0]
                if gen.apply_live_change(sub, kind, now, old_now):
                    changed.append(sub.id)
            n_new = max(1, round(n_change * 0.3)) if n_change and self.prices else 0
            for _ in range(n_new):
                changed.append(gen.new_subscription(now).id)
            new_invoices = list(range(first_new_invoice, len(self.invoices)))
            gen.number_invoices(new_invoices)
            self._customer_pos = {c.id: c.idx for c in self.customers}
            self._sub_pos = {s.id: s.idx for s in self.subs}
            gen.emit_events(old_now + 1, [self.subscription(i) for i in changed], new_invoices, gen.new_customers)
            # Stripe keeps 30 days of events: older ones disappear as time passes.
            cutoff = self.now - EVENT_WINDOW_S
            self.events = [e for e in self.events if e.created >= cutoff]
            self._cache.pop("events", None)
            self._cache.pop("customers", None)
            _settle_gc()
            self.invalidate("subscriptions", [self._sub_pos[i] for i in changed])
            self._finish()
            return changed


def _raw_column(name: str, obj: Any) -> Any:
    """The value an injected object contributes to a list index column (see `SandboxAccount._finish`)."""
    own = obj if isinstance(obj, dict) else {}
    if name == "default":  # shown without a status filter: everything but canceled and incomplete_expired
        return own.get("status") not in ("canceled", "incomplete_expired")
    value = own.get(name)
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, (str, int, bool)) or value is None else None


def _date(ts: int) -> str:
    return time.strftime("%d %b %Y", time.gmtime(ts))


def _account_object(acct: SandboxAccount) -> dict[str, Any]:
    req = {"alternatives": [], "current_deadline": None, "currently_due": [], "disabled_reason": None,
           "errors": [], "eventually_due": [], "past_due": [], "pending_verification": []}
    return {
        "id": acct.account_id,
        "object": "account",
        "business_profile": {
            "annual_revenue": None, "estimated_worker_count": 40, "mcc": "5734",
            "minority_owned_business_designation": None, "name": acct.name,
            "product_description": "Workflow software for teams", "support_address": None,
            "support_email": "support@sandbox.segflow.example", "support_phone": None,
            "support_url": None, "url": "https://sandbox.segflow.example",
        },
        "business_type": "company",
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": {"type": "account"},
        "country": "US",
        "created": acct.now - 1100 * DAY,
        "default_currency": "usd",
        "details_submitted": True,
        "email": "billing@sandbox.segflow.example",
        "external_accounts": {"object": "list", "data": [], "has_more": False,
                              "url": f"/v1/accounts/{acct.account_id}/external_accounts"},
        "future_requirements": dict(req),
        "metadata": {},
        "payouts_enabled": True,
        "requirements": dict(req),
        "settings": {
            "bacs_debit_payments": {"display_name": None, "service_user_number": None},
            "branding": {"icon": None, "logo": None, "primary_color": None, "secondary_color": None},
            "card_issuing": {"tos_acceptance": {"date": None, "ip": None}},
            "card_payments": {"decline_on": {"avs_failure": False, "cvc_failure": True},
                              "statement_descriptor_prefix": "SEGFLOW",
                              "statement_descriptor_prefix_kana": None, "statement_descriptor_prefix_kanji": None},
            "dashboard": {"display_name": acct.name, "timezone": "Etc/UTC"},
            "invoices": {"default_account_tax_ids": None, "hosted_payment_method_save": "offer"},
            "payments": {"statement_descriptor": "SEGFLOW SANDBOX", "statement_descriptor_kana": None,
                         "statement_descriptor_kanji": None, "statement_descriptor_prefix_kana": None,
                         "statement_descriptor_prefix_kanji": None},
            "payouts": {"debit_negative_balances": True, "schedule": {"delay_days": 2, "interval": "daily"},
                        "statement_descriptor": None},
            "sepa_debit_payments": {},
        },
        "tos_acceptance": {"date": acct.now - 1100 * DAY, "ip": "127.0.0.1", "user_agent": None},
        "type": "standard",
    }


# ====================================================================== generation
class _Generator:
    """Simulates subscriptions over time and writes their invoices, discounts, history and versions."""

    def __init__(self, acct: SandboxAccount, rng: random.Random) -> None:
        self.a = acct
        self.rng = rng
        self.now = acct.now
        self.origin = acct.now - 730 * DAY
        self.import_at = self.origin + 30 * DAY + 4321  # one second in which a migration created many objects
        self.new_customers: list[int] = []
        self.ended_customers: list[tuple[int, int]] = []  # (customer idx, ended_at) for reactivations
        # price lookups
        self.base: dict[tuple[str, str, int], list[cat.Price]] = {}
        self.addons: dict[tuple[str, str, int], list[cat.Price]] = {}
        self.special: dict[str, cat.Price] = {}
        for p in acct.prices:
            fam = (p.currency, p.interval or "", p.interval_count)
            if p.family == "base" and p.active and p.billing_scheme == "per_unit":
                self.base.setdefault(fam, []).append(p)
            elif p.family == "addon":
                self.addons.setdefault(fam, []).append(p)
        for p in acct.prices:
            if p.nickname:
                self.special[p.nickname] = p
        for v in self.base.values():
            v.sort(key=lambda p: p.tier_rank)
        self.coupon_by_id = {c.id: c for c in acct.coupons}

    # ---------------------------------------------------------------- catalog
    def build_catalog(self) -> None:
        a, ids = self.a, self.a.ids
        t0 = self.now - 1095 * DAY + 1234  # the catalogue was set up three years ago, in one script run
        products: list[cat.Product] = a.products
        prices: list[cat.Price] = a.prices

        def product(name: str, desc: str, created: int, unit_label: str | None = None) -> cat.Product:
            p = cat.Product(len(products), ids.short("prod", created), name, desc, created, unit_label,
                            updated=created)
            products.append(p)
            return p

        def price(prod: cat.Product, currency: str, interval: str | None, count: int, unit: int | None,
                  created: int, **kw: Any) -> cat.Price:
            p = cat.Price(len(prices), ids.long("price", created), prod.id, prod.name, currency, interval, count,
                          unit, created=created, **kw)
            prices.append(p)
            if prod.default_price is None:
                prod.default_price = p.id
            prod.updated = max(prod.updated, created)
            return p

        for name, desc, rank, seats, amounts in cat.BASE_PLANS:
            prod = product(name, desc, t0, "seat" if seats else None)
            for (cur, interval, count), amount in amounts.items():
                key = f"{name.lower()}_{cur}_{interval}{count if count > 1 else ''}"
                price(prod, cur, interval, count, amount, t0, family="base", tier_rank=rank, seats=seats,
                      lookup_key=key)
        pro = products[1]
        # A grandfathered price: inactive, still billed on old subscriptions.
        price(pro, "usd", "month", 1, 3900, t0 - 200 * DAY, family="legacy", tier_rank=2, active=False,
              nickname="Pro legacy 2023")
        ent = product("Enterprise", "Volume pricing per seat with a platform fee.", t0 + 60 * DAY, "seat")
        price(ent, "usd", "month", 1, None, t0 + 60 * DAY, family="enterprise", billing_scheme="tiered",
              tiers_mode="volume", tiers=list(cat.VOLUME_TIERS), nickname="Enterprise volume", seats=True)
        price(ent, "usd", "month", 1, None, t0 + 60 * DAY, family="enterprise", billing_scheme="tiered",
              tiers_mode="graduated", tiers=list(cat.GRADUATED_TIERS), nickname="Enterprise graduated",
              seats=True)
        addon_t = t0 + 90 * DAY
        for name, amount in cat.ADDONS:
            prod = product(name, f"Add-on: {name}.", addon_t, "seat" if name == "Extra seat" else None)
            price(prod, "usd", "month", 1, amount, addon_t, family="addon")
            if name in cat.ADDONS_EUR:
                price(prod, "eur", "month", 1, amount * 9 // 10, addon_t, family="addon")
            if name in cat.ADDONS_USD_YEAR:
                price(prod, "usd", "year", 1, amount * 10, addon_t, family="addon")
        api = product("API usage", "Metered API calls, billed monthly in arrears.", t0 + 200 * DAY)
        price(api, "usd", "month", 1, 2, t0 + 200 * DAY, family="usage", usage_type="metered",
              meter="mtr_" + ids.tag + "apicalls", nickname="API calls")
        sms = product("SMS notifications", "Billed per pack of 100 messages.", t0 + 250 * DAY)
        price(sms, "usd", "month", 1, 1000, t0 + 250 * DAY, family="usage", transform=(100, "up"),
              nickname="SMS packs")
        fee = product("Implementation fee", "One-time onboarding and implementation.", t0 + 10 * DAY)
        price(fee, "usd", None, 1, 50000, t0 + 10 * DAY, family="fee", nickname="Implementation fee")
        for k, c in enumerate(cat.COUPONS):
            coupon = cat.Coupon(**{**c.__dict__})
            coupon.created = t0 + 30 * DAY + k * 86400 * 40
            a.coupons.append(coupon)
        self.__init__(a, self.rng)  # refresh price lookups

    # ---------------------------------------------------------------- customers
    def new_customer(self, created: int, currency: str, discount_coupon: str | None = None) -> Customer:
        a, rng = self.a, self.rng
        c = Customer()
        c.idx = len(a.customers)
        c.id = a.ids.short("cus", created)
        c.created = created
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if rng.random() < 0.6:
            company = f"{rng.choice(COMPANY)} {rng.choice(SUFFIX)}"
            c.name = company
            domain = company.split()[0].lower()
        else:
            c.name = f"{first} {last}"
            domain = "example.com"
        c.email = f"{first.lower()}.{last.lower().replace('ü', 'ue')}{c.idx}@{domain.replace(' ', '')}" + (
            "" if "." in domain else ".example")
        c.country, c.city = rng.choice(PLACES[currency])
        c.currency = None
        c.discount = None
        c.prefix = f"{rng.randrange(16**8):08X}"
        c.seq = 0
        c.delinquent = False
        c.pm = None
        c.phone = None if rng.random() < 0.7 else f"+1 555 {rng.randrange(10**7):07d}"
        a.customers.append(c)
        if discount_coupon:
            di = self.new_discount(discount_coupon, c.id, None, None, created)
            c.discount = di
        if created >= self.now - EVENT_WINDOW_S:
            self.new_customers.append(c.idx)
        return c

    def new_discount(self, coupon: str, customer: str, sub: str | None, item: str | None, start: int) -> int:
        c = self.coupon_by_id[coupon]
        end = None
        if c.duration == "repeating":
            end = add_months(start, c.duration_in_months or 1)
        d = Discount(self.a.ids.long("di", start), coupon, customer, sub, item, start, end)
        self.a.discounts.append(d)
        c.times_redeemed += 1
        return len(self.a.discounts) - 1

    # ---------------------------------------------------------------- plans
    def random_plan(self, i: int) -> dict[str, Any]:
        rng = self.rng
        fam = rng.choices([f for f, _ in FAMILIES], [w for _, w in FAMILIES])[0]
        plan: dict[str, Any] = {"family": fam, "outcome": rng.choices([o for o, _ in OUTCOMES],
                                                                        [w for _, w in OUTCOMES])[0]}
        if rng.random() < 0.15:
            plan["imported"] = True
        plan["trial"] = rng.random() < 0.2
        if fam == ("usd", "month", 1):
            r = rng.random()
            if r < 0.04:
                plan["base"] = rng.choice(["Enterprise volume", "Enterprise graduated"])
            elif r < 0.07:
                plan["base"] = "Pro legacy 2023"
        if rng.random() < 0.25:
            plan["addons"] = rng.choice([1, 1, 2])
        if fam == ("usd", "month", 1):
            if rng.random() < 0.06:
                plan["metered"] = True
            if rng.random() < 0.03:
                plan["sms"] = True
            if rng.random() < 0.004:
                plan["addons"] = rng.randint(11, 14)
                plan["base"] = "Enterprise volume"
        r = rng.random()
        if r < 0.05:
            plan["coupon"] = "LAUNCH25"
        elif r < 0.07:
            plan["coupon"] = {"usd": "PARTNER10USD", "eur": "PARTNER5EUR", "jpy": "YEN1000"}[fam[0]]
        elif r < 0.10:
            plan["coupon"] = "WELCOME50"
        elif r < 0.13:
            plan["coupon"] = "SPRING20X3"
        if rng.random() < 0.03:
            plan["customer_coupon"] = "LOYALTY10"
        r = rng.random()
        if r < 0.25:
            plan["changes"] = [None]
        elif r < 0.35:
            plan["changes"] = [None, None]
        if rng.random() < 0.05 and self.ended_customers:
            plan["reactivate"] = True
        if rng.random() < 0.02:
            plan["oneoff"] = True
        return plan

    def forced_plans(self) -> list[dict[str, Any]]:
        """Scenarios every account has (even small ones), so tests always find each case."""
        d, m = DAY, ("usd", "month", 1)
        now = self.now
        return [
            {"family": m, "outcome": "active", "changes": [("upgrade", None)], "start": now - 200 * d},
            {"family": ("usd", "month", 1), "base": "Business", "qty": 8, "outcome": "active",
             "changes": [("qty_up", None), ("qty_down", None)], "start": now - 300 * d},
            {"family": m, "base": "Enterprise volume", "qty": 25, "addons": 14, "outcome": "active",
             "start": now - 150 * d},
            {"family": m, "outcome": "trialing", "trial": True, "start": now - 5 * d},
            {"family": m, "outcome": "active", "trial": True, "start": now - 60 * d},
            {"family": m, "outcome": "canceled_now", "start": now - 400 * d, "end_before": now - 100 * d},
            {"family": m, "outcome": "cancel_pending", "start": now - 100 * d},
            {"family": ("usd", "year", 1), "outcome": "canceled_end", "start": now - 500 * d},
            {"family": m, "outcome": "past_due", "start": now - 90 * d},
            {"family": m, "outcome": "unpaid", "start": now - 120 * d},
            {"family": m, "outcome": "incomplete", "start": now - 3 * 3600},
            {"family": m, "outcome": "incomplete_expired", "start": now - 40 * d},
            {"family": m, "outcome": "paused", "trial": True, "start": now - 50 * d},
            {"family": ("jpy", "month", 1), "base": "Pro", "outcome": "active", "start": now - 80 * d},
            {"family": ("eur", "year", 1), "base": "Business", "qty": 5, "addons": 1, "outcome": "active",
             "start": now - 420 * d},
            {"family": ("usd", "month", 3), "outcome": "active", "start": now - 250 * d},
            {"family": ("usd", "week", 1), "outcome": "active", "start": now - 70 * d},
            {"family": m, "base": "Enterprise volume", "qty": 15, "outcome": "active", "start": now - 95 * d},
            {"family": m, "base": "Enterprise graduated", "qty": 15, "outcome": "active", "start": now - 95 * d},
            {"family": m, "base": "Starter", "metered": True, "outcome": "active", "start": now - 130 * d},
            {"family": m, "sms": True, "outcome": "active", "start": now - 75 * d},
            {"family": m, "coupon": "LAUNCH25", "outcome": "active", "start": now - 210 * d},
            {"family": m, "coupon": "PARTNER10USD", "outcome": "active", "start": now - 190 * d},
            {"family": m, "coupon": "SPRING20X3", "outcome": "active", "start": now - 20 * d},
            {"family": m, "coupon": "WELCOME50", "outcome": "active", "start": now - 100 * d},
            {"family": m, "addons": 2, "item_coupon": "LAUNCH25", "outcome": "active", "start": now - 160 * d},
            {"family": m, "customer_coupon": "LOYALTY10", "outcome": "active", "start": now - 140 * d},
            {"family": m, "outcome": "active", "reactivate_of": 5, "start": now - 60 * d},
            {"family": m, "base": "Enterprise graduated", "qty": 12, "addons": 12, "oneoff": True,
             "outcome": "active", "start": now - 45 * d},
            {"family": m, "base": "Pro legacy 2023", "outcome": "active", "start": now - 700 * d},
            {"family": m, "base": "Starter", "outcome": "active", "changes": [("upgrade", now - 10 * d)],
             "start": now - 200 * d},
            {"family": m, "outcome": "cancel_pending", "cancel_request": now - 6 * d, "start": now - 300 * d},
            {"family": m, "base": "Pro", "outcome": "active", "changes": [("downgrade", now - 12 * d)],
             "start": now - 180 * d},
            {"family": m, "base": "Business", "qty": 20, "outcome": "active",
             "changes": [("qty_up", now - 4 * d)], "start": now - 240 * d},
            {"family": m, "outcome": "canceled_now", "start": now - 200 * d, "end_at": now - 8 * d},
            {"family": ("eur", "month", 1), "outcome": "active", "trial": True, "start": now - 25 * d},
            # Changes older than the event window that only invoices (or pending invoice items) date, in both
            # shapes Stripe renders proration lines in:
            # a yearly upgrade mid-year, invoiced at once (proration_behavior=always_invoice)
            {"family": ("usd", "year", 1), "base": "Starter", "outcome": "active", "parent": "invoice_item_details",
             "changes": [("upgrade", now - 100 * d)], "start": now - 230 * d},
            {"family": ("eur", "year", 1), "base": "Starter", "outcome": "active",
             "parent": "subscription_item_details", "changes": [("upgrade", now - 120 * d)], "start": now - 200 * d},
            # a monthly upgrade and a seat change
            {"family": m, "base": "Starter", "outcome": "active", "parent": "invoice_item_details",
             "changes": [("upgrade", now - 45 * d)], "start": now - 200 * d},
            {"family": m, "base": "Business", "qty": 10, "outcome": "active", "parent": "invoice_item_details",
             "changes": [("qty_up", now - 52 * d)], "start": now - 170 * d},
            # downgrades left as pending prorations (create_prorations) until the next renewal, months away
            {"family": ("usd", "year", 1), "base": "Business", "qty": 6, "outcome": "active",
             "parent": "invoice_item_details", "changes": [("downgrade", now - 90 * d)], "start": now - 300 * d},
            {"family": ("jpy", "year", 1), "base": "Pro", "outcome": "active", "parent": "subscription_item_details",
             "changes": [("qty_down", now - 60 * d), ("downgrade", now - 40 * d)], "start": now - 280 * d},
            # schedule phases: a new price from a renewal on, before and inside the event window
            {"family": m, "base": "Starter", "outcome": "active", "changes": [("phase:upgrade", now - 75 * d)],
             "start": now - 160 * d},
            {"family": m, "base": "Pro", "outcome": "active", "changes": [("phase:downgrade", now - 14 * d)],
             "start": now - 130 * d},
            # proration_behavior=none mid-period: in the current yearly period and in an older monthly one, before
            # the event window (nothing dates them), and inside it (the event does)
            {"family": ("usd", "year", 1), "base": "Business", "qty": 5, "outcome": "active",
             "changes": [("none:qty_up", now - 100 * d)], "start": now - 250 * d},
            {"family": m, "base": "Business", "qty": 8, "outcome": "active",
             "changes": [("none:qty_up", now - 70 * d)], "start": now - 200 * d},
            {"family": m, "base": "Pro", "outcome": "active", "changes": [("none:downgrade", now - 8 * d)],
             "start": now - 90 * d},
        ]

    # ---------------------------------------------------------------- one subscription
    def simulate(self, plan: dict[str, Any], sub_index: int) -> Sub:
        a, rng, now = self.a, self.rng, self.now
        cur, unit, count = plan["family"]
        outcome = plan.get("outcome", "active")
        trial = bool(plan.get("trial"))
        if outcome in ("trialing", "paused"):
            trial = True
        if outcome in ("incomplete", "incomplete_expired"):
            trial = False
        # ---- start time
        customer: Customer | None = None
        if "start" in plan:
            start = int(plan["start"])
        elif plan.get("imported"):
            start = self.import_at
        else:
            u = rng.random()
            start = int(self.origin + (now - 3600 - self.origin) * (u ** 0.7))
        if plan.get("reactivate_of") is not None and plan["reactivate_of"] < len(a.subs):
            prev = a.subs[plan["reactivate_of"]]
            customer = a.customers[a._customer_pos[prev.customer]] if a._customer_pos else next(
                c for c in a.customers if c.id == prev.customer)
            start = max(start, (prev.versions[-1].ended_at or start) + 3 * DAY)
        elif plan.get("reactivate") and self.ended_customers:
            cidx, ended = self.ended_customers.pop(rng.randrange(len(self.ended_customers)))
            if ended + 7 * DAY < now - 3600:
                start = rng.randint(ended + 7 * DAY, now - 3600)
                customer = a.customers[cidx]
                cur = customer.currency or cur
                if (cur, unit, count) not in self.base:
                    unit, count = "month", 1
        if outcome == "incomplete":
            start = max(start, now - 20 * 3600)
        if outcome == "trialing":
            start = max(start, now - 13 * DAY)
        if outcome == "paused":
            start = min(start, now - 20 * DAY)
        if outcome == "incomplete_expired":
            start = min(start, now - 2 * DAY)
        # ---- customer
        if customer is None:
            created = start if plan.get("imported") or plan.get("fresh") else start - rng.randint(0, 3 * DAY)
            customer = self.new_customer(created, cur, plan.get("customer_coupon"))
        if customer.currency is None:
            customer.currency = cur
        # ---- items
        fam = (cur, unit, count)
        bases = self.base.get(fam) or self.base[("usd", "month", 1)]
        base_name = plan.get("base")
        if base_name in self.special:
            base = self.special[base_name]
        elif base_name:
            base = next((p for p in bases if p.product_name == base_name), bases[0])
        else:
            base = rng.choices(bases, [40, 40, 20][: len(bases)])[0]
        if base.currency != cur or base.interval != unit:
            cur, unit, count = base.currency, base.interval or "month", base.interval_count
        qty = plan.get("qty") or (rng.choice([2, 3, 5, 8, 10, 12, 20, 35]) if base.seats else 1)
        item_specs: list[tuple[cat.Price, int | None]] = [(base, qty)]
        n_addons = plan.get("addons", 0)
        available = list(self.addons.get((cur, unit, count), []))
        if n_addons and available:
            for p in rng.sample(available, min(n_addons, len(available))):
                item_specs.append((p, qty if p.product_name == "Extra seat" and base.seats else rng.randint(1, 3)))
        if plan.get("metered") and (cur, unit) == ("usd", "month"):
            item_specs.append((self.special["API calls"], None))
        if plan.get("sms") and (cur, unit) == ("usd", "month"):
            item_specs.append((self.special["SMS packs"], rng.choice([250, 1000, 2400, 5000])))
        # ---- subscription record
        sub = Sub()
        sub.idx = sub_index
        sub.id = a.ids.long("sub", start)
        sub.customer = customer.id
        sub.currency = cur
        sub.start = sub.created = start
        sub.trial_start = start if trial else None
        sub.trial_end = start + 14 * DAY if trial else None
        sub.end_behavior = "pause" if outcome == "paused" else "create_invoice"
        sub.pm = None if outcome == "paused" else "pm_" + sub.id[4:]
        sub.feedback = rng.choice([None, "too_expensive", "missing_features", "switched_service", "unused"])
        anchor = sub.trial_end if trial else start
        sub.clock = Clock(anchor, unit, count)
        items = tuple(Item(a.ids.short("si", start), p.idx, q, start) for p, q in item_specs)
        if plan.get("item_coupon") and len(items) > 1:
            sub.item_discounts[items[1].id] = self.new_discount(plan["item_coupon"], customer.id, sub.id,
                                                                items[1].id, start)
        sub_discounts: tuple[int, ...] = ()
        if plan.get("coupon"):
            coupon = self.coupon_by_id[plan["coupon"]]
            if coupon.currency in (None, cur):
                sub_discounts = (self.new_discount(coupon.id, customer.id, sub.id, None, start),)
        status0 = "trialing" if trial else ("incomplete" if outcome.startswith("incomplete") else "active")
        req = "req_" + sub.id[4:18]
        sub.versions = [State(start, "customer.subscription.created", (), status0, items, False, None, None, None,
                              None, None, sub_discounts, req)]
        a.subs.append(sub)
        self._run(sub, plan, outcome, customer)
        return sub

    def _run(self, sub: Sub, plan: dict[str, Any], outcome: str, customer: Customer) -> None:
        """Walk the subscription's timeline: cycle invoices, changes, status transitions, cancellation."""
        a, rng, now = self.a, self.rng, self.now
        clock = sub.clock
        start = sub.start
        first_b = clock.anchor
        # ---- when does it stop, and how
        stop = now  # cycle invoices are generated for boundaries <= stop
        transitions: list[tuple[int, int, str, Any]] = []  # (t, order, action, payload)
        if sub.trial_end is not None and outcome not in ("paused",):
            if sub.trial_end - 3 * DAY <= now:
                transitions.append((sub.trial_end - 3 * DAY, 0, "trial_will_end", None))
        if outcome == "trialing":
            stop = -1
        elif outcome == "paused":
            stop = -1
            transitions.append((sub.trial_end, 1, "paused", None))
        elif outcome == "incomplete":
            stop = start
        elif outcome == "incomplete_expired":
            stop = start
            transitions.append((start + 23 * 3600, 1, "expire", None))
        else:
            k_now = clock.index_at(now) if now >= first_b else -1
            if outcome == "canceled_now":
                lo = first_b + DAY
                hi = plan.get("end_before", now - 3600)
                t_end = plan.get("end_at") or (rng.randint(lo, hi) if hi > lo else None)
                if t_end is not None and t_end <= now:
                    transitions.append((t_end, 5, "cancel_now", None))
                    stop = t_end
            elif outcome in ("canceled_end", "cancel_pending"):
                if outcome == "cancel_pending" and k_now >= 0:
                    ps, pe = clock.boundary(k_now), clock.boundary(k_now + 1)
                    t_req = plan.get("cancel_request") or rng.randint(ps, max(ps, now - 60))
                    t_req = max(t_req, ps)
                    transitions.append((t_req, 4, "cancel_request", pe))
                elif k_now >= 1:
                    j = rng.randint(1, k_now)
                    ps, pe = clock.boundary(j - 1), clock.boundary(j)
                    t_req = rng.randint(ps + 60, pe - 60)
                    transitions.append((t_req, 4, "cancel_request", pe))
                    transitions.append((pe, -1, "cancel_end", None))
                    stop = pe - 1
            elif outcome in ("past_due", "unpaid") and k_now >= 0:
                k_fail = k_now
                if outcome == "unpaid":
                    while k_fail > 0 and clock.boundary(k_fail) + 15 * DAY > now:
                        k_fail -= 1
                    # Stripe leaves a subscription unpaid once its payment retries are exhausted, so the failed
                    # renewal may lie in any period of its life, not only in the latest one.
                    first_charge = 0 if sub.trial_end is not None else 1
                    if k_fail > first_charge:
                        k_fail = rng.randint(first_charge, k_fail)
                b = clock.boundary(k_fail)
                if b + 3600 <= now and (k_fail > 0 or sub.trial_end is not None or b > start):
                    transitions.append((b + 3600, 3, "past_due", k_fail))
                    if outcome == "unpaid" and b + 15 * DAY <= now:
                        transitions.append((b + 15 * DAY, 3, "unpaid", k_fail))
                        stop = b
        # ---- cycle boundaries
        boundaries: list[int] = []
        if stop >= first_b:
            k = 0
            while True:
                b = clock.boundary(k)
                if b > stop:
                    break
                boundaries.append(b)
                k += 1
        if sub.trial_end is None or outcome in ("incomplete", "incomplete_expired"):
            pass
        for k, b in enumerate(boundaries):
            transitions.append((b, 2, "cycle", k))
        # ---- changes (upgrades, downgrades, quantity) strictly inside active periods
        active_until = min([t for t, _, act, _ in transitions if act in ("cancel_now", "past_due", "cancel_end",
                                                                          "cancel_request")] + [now - 3600])
        changes = plan.get("changes", [])
        phases: dict[int, str] = {}  # renewal time -> schedule phase change (upgrade / downgrade) starting then
        if outcome in ("trialing", "paused", "incomplete", "incomplete_expired"):
            changes = []  # never paid: nothing to upgrade or downgrade
        for change in changes:
            kind, t = change if isinstance(change, tuple) else (None, None)
            if t is None:
                lo = first_b + DAY
                if active_until - lo < 2 * DAY:
                    continue
                t = rng.randint(lo, active_until - DAY)
            if t <= first_b:
                continue
            kind = kind or rng.choice(["upgrade", "downgrade", "qty_up", "qty_down", "add_addon"])
            if kind.startswith("phase:"):
                # A subscription schedule's next phase starts at a renewal: the new price is billed by that
                # renewal's invoice, with no proration, and the renewal's own update reports it.
                b = clock.boundary(clock.index_at(t) + 1)
                if b <= now - 3600 and b < active_until:
                    phases[b] = kind.split(":", 1)[1]
                continue
            transitions.append((t, 3, "change", kind))
        transitions.sort(key=lambda x: (x[0], x[1]))

        # ---- walk
        seg_open: dict[str, tuple[int, int | None, int]] = {}  # item id -> (price, qty, since)
        history: list[Segment] = []
        st = sub.versions[0]
        for it in st.items:
            seg_open[it.id] = (it.price, it.quantity, start)
        status_hist = [(start, st.status)]
        latest: str | None = None
        pending: list[Line] = []  # proration lines waiting for the next cycle invoice
        once_used = False
        cutoff = now - EVENT_WINDOW_S
        state = st
        if sub.trial_end is not None or outcome.startswith("incomplete"):
            # The first invoice: $0 for a trial, unpaid for an incomplete subscription.
            inv = self._invoice(sub, customer, start, "subscription_create", start, start,
                                state, "trial" if sub.trial_end is not None else "sub",
                                (start, sub.trial_end or clock.boundary(1)), pending, once_used)
            if outcome == "incomplete":
                inv.status, inv.paid_at, inv.attempts = "open", None, 1
                inv.finalized_at = start
            elif outcome == "incomplete_expired":
                inv.status, inv.paid_at, inv.voided_at = "void", None, start + 23 * 3600
                inv.attempts = 1
            latest = inv.id
            state = state._replace(latest_invoice=latest)
            sub.versions[0] = state
        period = (start, sub.trial_end or clock.boundary(1))

        before = latest

        def push(t: int, event: str | None, changed: tuple[str, ...], **kw: Any) -> None:
            nonlocal state
            if t >= cutoff and sub.versions[-1].t < cutoff:
                # A silent baseline at the window start so the first event's previous_attributes are exact.
                sub.versions.append(state._replace(t=cutoff, event=None, changed=(), latest_invoice=before))
            kw.setdefault("latest_invoice", latest)
            state = state._replace(t=t, event=event, changed=changed, **kw)
            sub.versions.append(state)
            if "status" in kw:
                status_hist.append((t, kw["status"]))

        bounds = boundaries + [clock.boundary(len(boundaries)), clock.boundary(len(boundaries) + 1)]
        for t, _, action, payload in transitions:
            before = latest
            if action == "cycle":
                k = payload
                ps, pe = bounds[k], bounds[k + 1]
                period = (ps, pe)
                first = k == 0 and sub.trial_end is None
                reason = "subscription_create" if first else "subscription_cycle"
                prev_ps = bounds[k - 1] if k > 0 else None
                inv_period = (ps, ps) if first else ((prev_ps, ps) if prev_ps is not None else (sub.trial_start, ps))
                phase_items = self._changed_items(state.items, phases[t], t) if t in phases else None
                if phase_items is not None:
                    for o, n in zip(state.items, phase_items):
                        if o != n:
                            p0, q0, since = seg_open.pop(o.id)
                            history.append(Segment(sub.id, o.id, a.prices[p0].id, q0, since, t))
                            seg_open[n.id] = (n.price, n.quantity, t)
                    if t < cutoff:  # no event is kept for it: record the new phase's items now
                        push(t, "customer.subscription.updated", ("items",), items=phase_items)
                inv = self._invoice(sub, customer, ps, reason, inv_period[0], inv_period[1],
                                    state._replace(items=phase_items) if phase_items else state, "sub",
                                    (ps, pe), pending, once_used, metered_from=prev_ps)
                pending = []
                if inv.subtotal > 0:
                    once_used = True
                latest = inv.id
                if state.status == "trialing":
                    push(t, "customer.subscription.updated", ("status", "items", "latest_invoice"),
                         status="active", latest_invoice=latest)
                elif t >= cutoff and k > 0:
                    push(t, "customer.subscription.updated", ("items", "latest_invoice"), latest_invoice=latest,
                         **({"items": phase_items} if phase_items else {}))
                elif k == 0 and len(sub.versions) == 1:
                    state = sub.versions[0] = state._replace(latest_invoice=latest)
                if once_used and state.discounts and any(
                        self.coupon_by_id[a.discounts[di].coupon].duration == "once" for di in state.discounts):
                    # A `once` coupon is removed from the subscription after its first invoice.
                    kept = tuple(di for di in state.discounts
                                 if self.coupon_by_id[a.discounts[di].coupon].duration != "once")
                    if t >= cutoff:
                        push(t + 1, "customer.subscription.updated", ("discounts",), discounts=kept)
                    else:
                        state = state._replace(discounts=kept)
                        sub.versions[-1] = sub.versions[-1]._replace(discounts=kept)
            elif action == "change":
                behavior, _, change_kind = payload.rpartition(":")
                new_items = self._changed_items(state.items, change_kind, t)
                if new_items is None:
                    continue
                if behavior == "none":
                    # proration_behavior=none: the items change with no proration line; only the event (30 days)
                    # and the next renewal's invoice show it.
                    for iid in {it.id for it in state.items} | {it.id for it in new_items}:
                        o = next((it for it in state.items if it.id == iid), None)
                        n = next((it for it in new_items if it.id == iid), None)
                        if o == n:
                            continue
                        if o is not None:
                            p0, q0, since = seg_open.pop(iid)
                            history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, t))
                        if n is not None:
                            seg_open[iid] = (n.price, n.quantity, t)
                    push(t, "customer.subscription.updated", ("items",), items=new_items)
                    continue
                ps, pe = period
                in_item_details = rng.random() < 0.5 if "parent" not in plan else \
                    plan["parent"] == "invoice_item_details"
                credit_charge: list[Line] = []
                old_by_id = {it.id: it for it in state.items}
                new_by_id = {it.id: it for it in new_items}
                frac = (pe - t) / max(1, pe - ps)
                old_total = sum(self._amount(it) for it in state.items)
                new_total = sum(self._amount(it) for it in new_items)
                for iid in list(old_by_id) + [i for i in new_by_id if i not in old_by_id]:
                    o, n = old_by_id.get(iid), new_by_id.get(iid)
                    if o == n:
                        continue
                    ii = a.ids.long("ii", t)
                    if o is not None and a.prices[o.price].usage_type == "licensed":
                        credit_charge.append(Line(a.ids.long("il", t), "proration_credit", o.id, o.price,
                                                  o.quantity, -round(self._amount(o) * frac), t, pe, ii, (), t))
                    if n is not None and a.prices[n.price].usage_type == "licensed":
                        credit_charge.append(Line(a.ids.long("il", t), "proration_charge", n.id, n.price,
                                                  n.quantity, round(self._amount(n) * frac), t, pe,
                                                  a.ids.long("ii", t), (), t))
                    if o is not None:
                        p0, q0, since = seg_open.pop(iid)
                        history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, t))
                    if n is not None:
                        seg_open[iid] = (n.price, n.quantity, t)
                if in_item_details:
                    a.item_details_parent.update(ln.invoice_item for ln in credit_charge)
                if new_total > old_total:
                    # Upgrades are invoiced at once (proration_behavior=always_invoice).
                    inv = self._invoice(sub, customer, t, "subscription_update", t, t, state._replace(
                        items=new_items), "none", (t, pe), credit_charge, True)
                    latest = inv.id
                    push(t, "customer.subscription.updated", ("items", "latest_invoice"), items=new_items,
                         latest_invoice=latest)
                else:
                    # Downgrades leave proration items for the next invoice (create_prorations).
                    pending.extend(credit_charge)
                    push(t, "customer.subscription.updated", ("items",), items=new_items)
            elif action == "trial_will_end":
                if t >= cutoff:
                    push(t, "customer.subscription.trial_will_end", ())
            elif action == "paused":
                push(t, "customer.subscription.paused", ("status",), status="paused")
            elif action == "expire":
                push(t, "customer.subscription.updated", ("status", "ended_at"), status="incomplete_expired",
                     ended_at=t)
            elif action == "past_due":
                inv = self._find_cycle_invoice(sub, clock.boundary(payload))
                if inv is not None:
                    inv.status, inv.paid_at, inv.attempts = "open", None, 1
                customer.delinquent = True
                push(t, "customer.subscription.updated", ("status",), status="past_due")
            elif action == "unpaid":
                inv = self._find_cycle_invoice(sub, clock.boundary(payload))
                if inv is not None:
                    inv.attempts = 4
                push(t, "customer.subscription.updated", ("status",), status="unpaid")
            elif action == "cancel_request":
                push(t, "customer.subscription.updated",
                     ("cancel_at", "cancel_at_period_end", "canceled_at", "cancellation_details"),
                     cancel_at_period_end=True, cancel_at=payload, canceled_at=t, reason="cancellation_requested",
                     request="req_" + a.ids.short("x", t)[2:])
            elif action == "cancel_end":
                push(t, "customer.subscription.deleted", ("status", "ended_at"), status="canceled", ended_at=t)
            elif action == "cancel_now":
                push(t, "customer.subscription.deleted", ("status", "ended_at", "canceled_at"), status="canceled",
                     ended_at=t, canceled_at=t, reason="cancellation_requested",
                     request="req_" + a.ids.short("x", t)[2:])
        # Prorations still waiting for a renewal stay pending invoice items (also once the subscription ended).
        a.pending_items.extend((sub.idx, ln) for ln in pending)
        end = state.ended_at
        if state.status == "canceled" or state.status == "incomplete_expired":
            self.ended_customers.append((self.a._customer_pos.get(customer.id, customer.idx), end or now))
        for iid, (p0, q0, since) in seg_open.items():
            history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, end))
        a.history[sub.id] = history
        a.status_history[sub.id] = status_hist
        sub.versions[-1] = sub.versions[-1]._replace(latest_invoice=latest)

    def _amount(self, it: Item) -> int:
        p = self.a.prices[it.price]
        if p.usage_type == "metered":
            return 0
        return p.amount(it.quantity or 0)

    def _changed_items(self, items: tuple[Item, ...], kind: str, t: int) -> tuple[Item, ...] | None:
        a, rng = self.a, self.rng
        base = items[0]
        bp = a.prices[base.price]
        fam = (bp.currency, bp.interval or "", bp.interval_count)
        if kind in ("upgrade", "downgrade"):
            options = [p for p in self.base.get(fam, []) if (p.tier_rank > bp.tier_rank if kind == "upgrade"
                                                             else p.tier_rank < bp.tier_rank)]
            if not options:
                kind = "qty_up" if kind == "upgrade" else "qty_down"
            else:
                p = options[0] if kind == "upgrade" else options[-1]
                q = base.quantity if p.seats and bp.seats else (3 if p.seats else 1)
                # Changing the price keeps the subscription item (same si_ id), as Stripe does.
                return (Item(base.id, p.idx, q, base.created),) + items[1:]
        if kind in ("qty_up", "qty_down"):
            idx = next((i for i, it in enumerate(items) if a.prices[it.price].seats
                        or a.prices[it.price].transform), None)
            if idx is None:
                return self._changed_items(items, "add_addon" if kind == "qty_up" else "remove_addon", t)
            it = items[idx]
            q = it.quantity or 1
            step = max(1, q // 4)
            q2 = q + step if kind == "qty_up" else max(1, q - step)
            if q2 == q:
                return None
            return items[:idx] + (it._replace(quantity=q2),) + items[idx + 1:]
        if kind == "add_addon":
            used = {it.price for it in items}
            options = [p for p in self.addons.get(fam, []) if p.idx not in used]
            if not options or len(items) >= 20:
                return None
            p = rng.choice(options)
            return items + (Item(a.ids.short("si", t), p.idx, 1, t),)
        if kind == "remove_addon":
            if len(items) < 2:
                return None
            return items[:-1]
        return None

    def _find_cycle_invoice(self, sub: Sub, created: int) -> Invoice | None:
        for inv in reversed(self.a.invoices):
            if inv.sub == sub.id and inv.created == created:
                return inv
            if inv.sub == sub.id and inv.created < created:
                break
        return None

    def _invoice(self, sub: Sub, customer: Customer, created: int, reason: str, period_start: int,
                 period_end: int, state: State, kind: str, line_period: tuple[int, int], extra: list[Line],
                 once_used: bool, metered_from: int | None = None) -> Invoice:
        a, rng = self.a, self.rng
        lines: list[Line] = []
        ids = a.ids
        inv_id = ids.long("in", created)
        # Line ids share the invoice's id body (one id draw per invoice keeps large accounts fast to build).
        stem = "il_" + inv_id[3:-2]
        new = tuple.__new__
        if kind in ("sub", "trial"):
            for k, it in enumerate(state.items):
                p = a.prices[it.price]
                if p.usage_type == "metered":
                    if metered_from is not None:
                        usage = rng.randint(0, 40000)
                        lines.append(new(Line, (stem + _PAIRS[k], "metered", it.id, it.price, usage, p.amount(usage),
                                                metered_from, created, None, (), created)))
                    continue
                amount = 0 if kind == "trial" else p.amount(it.quantity or 0)
                lines.append(new(Line, (stem + _PAIRS[k], kind, it.id, it.price, it.quantity, amount,
                                        line_period[0], line_period[1], None, (), created)))
        lines.extend(extra)
        if reason == "subscription_create" and kind == "sub" and self._wants_fee(sub):
            fee = self.special["Implementation fee"]
            lines.append(Line(stem + _PAIRS[3000], "oneoff", None, fee.idx, 1, fee.unit_amount or 0, created,
                              created, ids.long("ii", created), (), created))
        subtotal = sum(ln.amount for ln in lines)
        # ---- discounts in effect at `created`
        dis: list[int] = []
        for di in state.discounts:
            d = a.discounts[di]
            c = self.coupon_by_id[d.coupon]
            if c.duration == "once" and (once_used or subtotal <= 0):
                continue
            if d.end is not None and created >= d.end:
                continue
            dis.append(di)
        if not dis and customer.discount is not None:
            dis.append(customer.discount)
        total_discounts: list[tuple[int, str]] = []
        if dis or sub.item_discounts:
            new_lines = []
            per_discount: dict[str, int] = {}
            for ln in lines:
                amounts: list[tuple[int, str]] = []
                item_di = sub.item_discounts.get(ln.item or "")
                for di in ([item_di] if item_di is not None else []) + dis:
                    c = self.coupon_by_id[a.discounts[di].coupon]
                    if c.percent_off and ln.kind != "oneoff":
                        amounts.append((round(ln.amount * c.percent_off / 100), a.discounts[di].id))
                for amt, did in amounts:
                    per_discount[did] = per_discount.get(did, 0) + amt
                new_lines.append(ln._replace(discount_amounts=tuple(amounts)) if amounts else ln)
            lines = new_lines
            for di in dis:
                c = self.coupon_by_id[a.discounts[di].coupon]
                if c.amount_off and subtotal > 0 and reason != "subscription_update":
                    amt = min(c.amount_off, subtotal)
                    per_discount[a.discounts[di].id] = amt
                    if lines:
                        lines[0] = lines[0]._replace(discount_amounts=lines[0].discount_amounts + (
                            (amt, a.discounts[di].id),))
            total_discounts = [(amt, did) for did, amt in per_discount.items()]
        discount_total = sum(x for x, _ in total_discounts)
        inv = Invoice()
        inv.idx = len(a.invoices)
        inv.id = inv_id
        inv.created = created
        inv.customer = customer.id
        inv.sub = sub.id
        inv.currency = sub.currency
        inv.reason = reason
        inv.period_start, inv.period_end = period_start, period_end
        inv.lines = lines
        inv.number = None
        inv.discounts = tuple(sorted({did for _, did in total_discounts})) if total_discounts else ()
        inv.total_discounts = total_discounts
        inv.subtotal = subtotal
        inv.total = subtotal - discount_total
        inv.attempts = 1 if inv.total > 0 else 0
        # Subscription invoices are finalized about an hour after creation (the first one at once).
        fin = created if reason in ("subscription_create", "subscription_update") else created + 3600
        if fin > self.now:
            inv.status, inv.finalized_at, inv.paid_at, inv.attempts = "draft", None, None, 0
        else:
            inv.status, inv.finalized_at, inv.paid_at = "paid", fin, fin + 2
        inv.voided_at = None
        a.invoices.append(inv)
        return inv

    def _wants_fee(self, sub: Sub) -> bool:
        return sub.currency == "usd" and (sub.idx % 53 == 29 or getattr(self, "_fee_for", None) == sub.idx)

    # ---------------------------------------------------------------- after generation
    def number_invoices(self, invoice_idxs: Iterable[int]) -> None:
        a = self.a
        pos = {c.id: c for c in a.customers}
        invoices = a.invoices
        created = {i: invoices[i].created for i in invoice_idxs}
        for i in sorted(created, key=created.__getitem__):
            inv = invoices[i]
            if inv.status == "draft":
                continue
            c = pos[inv.customer]
            c.seq += 1
            inv.number = f"{c.prefix}-{c.seq:04d}"

    def emit_events(self, since: int, subs: Iterable[Sub], invoices: Iterable[int],
                    customers: Iterable[int]) -> None:
        """Append the events of everything that happened from `since` (epoch seconds) to now."""
        a = self.a
        out: list[Event] = []
        ids = a.ids
        cutoff = since
        for sub in subs:
            for v, state in enumerate(sub.versions):
                if state.event is None or state.t < since or state.t > self.now:
                    continue
                out.append(Event(state.t, ids.long("evt", state.t), state.event, "sub", sub.idx, v, state.request))
        for i in invoices:
            inv = a.invoices[i]
            if inv.created < cutoff:
                continue
            req = None
            out.append(Event(inv.created, ids.long("evt", inv.created), "invoice.created", "invoice", i, 0, req))
            if inv.finalized_at is not None and inv.finalized_at <= self.now:
                out.append(Event(inv.finalized_at, ids.long("evt", inv.finalized_at), "invoice.finalized",
                                 "invoice", i, 0, req))
            if inv.paid_at is not None and inv.paid_at <= self.now:
                out.append(Event(inv.paid_at, ids.long("evt", inv.paid_at), "invoice.paid", "invoice", i, 0, req))
                out.append(Event(inv.paid_at, ids.long("evt", inv.paid_at), "invoice.payment_succeeded", "invoice",
                                 i, 0, req))
            if inv.status == "open" and inv.finalized_at is not None:
                t = inv.finalized_at + 5
                if t <= self.now:
                    out.append(Event(t, ids.long("evt", t), "invoice.payment_failed", "invoice", i, 0, req))
            if inv.voided_at is not None and inv.voided_at <= self.now:
                out.append(Event(inv.voided_at, ids.long("evt", inv.voided_at), "invoice.voided", "invoice", i, 0,
                                 req))
        for ci in customers:
            c = a.customers[ci]
            if c.created >= cutoff:
                out.append(Event(c.created, ids.long("evt", c.created), "customer.created", "customer", ci, 0,
                                 "req_" + c.id[4:]))
        a.events.extend(out)

    # ---------------------------------------------------------------- live changes (mutate)
    def apply_live_change(self, sub: Sub, kind: str, t: int, since: int) -> bool:
        a = self.a
        state = sub.versions[-1]
        customer = a.customers[a._customer_pos[sub.customer]]
        if state.status == "trialing" and kind not in ("cancel_now", "cancel_end"):
            kind = "cancel_end"
        # Renewals that happened since the last simulated time.
        self._catch_up(sub, customer, t, since)
        state = sub.versions[-1]
        period = a.sub_period(sub, state, t)
        hist = a.history[sub.id]
        req = "req_" + a.ids.short("x", t)[2:]
        if kind in ("upgrade", "downgrade", "qty_up", "qty_down"):
            new_items = self._changed_items(state.items, kind, t)
            if new_items is None or new_items == state.items:
                return False
            ps, pe = period
            frac = (pe - t) / max(1, pe - ps)
            lines: list[Line] = []
            old = {it.id: it for it in state.items}
            new = {it.id: it for it in new_items}
            for iid in list(old) + [i for i in new if i not in old]:
                o, n = old.get(iid), new.get(iid)
                if o == n:
                    continue
                if o is not None:
                    for k, seg in enumerate(hist):
                        if seg.item == iid and seg.end is None:
                            hist[k] = seg._replace(end=t)
                    if a.prices[o.price].usage_type == "licensed":
                        lines.append(Line(a.ids.long("il", t), "proration_credit", o.id, o.price, o.quantity,
                                          -round(self._amount(o) * frac), t, pe, a.ids.long("ii", t), (), t))
                if n is not None:
                    hist.append(Segment(sub.id, iid, a.prices[n.price].id, n.quantity, t, None))
                    if a.prices[n.price].usage_type == "licensed":
                        lines.append(Line(a.ids.long("il", t), "proration_charge", n.id, n.price, n.quantity,
                                          round(self._amount(n) * frac), t, pe, a.ids.long("ii", t), (), t))
            inv = self._invoice(sub, customer, t, "subscription_update", t, t, state._replace(items=new_items),
                                "none", (t, pe), lines, True)
            sub.versions.append(state._replace(t=t, event="customer.subscription.updated",
                                               changed=("items", "latest_invoice"), items=new_items,
                                               latest_invoice=inv.id, request=req))
            return True
        if kind == "cancel_end":
            cancel_at = period[1]
            if state.status == "trialing" and sub.trial_end:
                cancel_at = sub.trial_end
            sub.versions.append(state._replace(
                t=t, event="customer.subscription.updated",
                changed=("cancel_at", "cancel_at_period_end", "canceled_at", "cancellation_details"),
                cancel_at_period_end=True, cancel_at=cancel_at, canceled_at=t, reason="cancellation_requested",
                request=req))
            return True
        if kind == "cancel_now":
            sub.versions.append(state._replace(t=t, event="customer.subscription.deleted",
                                               changed=("status", "ended_at", "canceled_at"), status="canceled",
                                               ended_at=t, canceled_at=t, reason="cancellation_requested",
                                               request=req))
            a.status_history[sub.id].append((t, "canceled"))
            for k, seg in enumerate(hist):
                if seg.end is None:
                    hist[k] = seg._replace(end=t)
            return True
        return False

    def _catch_up(self, sub: Sub, customer: Customer, t: int, since: int) -> None:
        """Create the cycle invoices of periods that began between `since` (the account's previous time) and `t`."""
        state = sub.versions[-1]
        if state.status not in ("active", "past_due") or sub.trial_end and t < sub.trial_end:
            return
        k = sub.clock.index_at(since - 1) + 1
        while True:
            b = sub.clock.boundary(k)
            if b > t:
                break
            inv = self._invoice(sub, customer, b, "subscription_cycle", sub.clock.boundary(k - 1), b, state, "sub",
                                (b, sub.clock.boundary(k + 1)), [], True, metered_from=sub.clock.boundary(k - 1))
            state = state._replace(t=b, event="customer.subscription.updated", changed=("items", "latest_invoice"),
                                   latest_invoice=inv.id, request=None)
            sub.versions.append(state)
            k += 1

    def new_subscription(self, t: int) -> Sub:
        plan = self.random_plan(len(self.a.subs))
        plan.update(start=t, outcome="active", changes=[], imported=False, fresh=True)
        plan.pop("reactivate", None)
        plan["trial"] = self.rng.random() < 0.3
        return self.simulate(plan, len(self.a.subs))


def build_account(n_subscriptions: int = 1000, seed: int = 7, now: int | None = None, *,
                  livemode: bool = False) -> SandboxAccount:
    """A seeded sandbox account with `n_subscriptions` subscriptions and two years of history before `now`
    (epoch seconds, default: the current time). The same arguments always give the same account."""
    now = int(time.time()) if now is None else int(now)
    # Generation allocates millions of small long-lived objects: cyclic GC passes over them would only cost time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(n_subscriptions, seed, now, livemode)
    finally:
        if gc_was_enabled:
            _settle_gc()
            gc.enable()


def _settle_gc() -> None:
    """Move the account's objects out of the collector's young generations. Allocated with GC off, millions of
    objects would otherwise sit in a young generation that every minor collection traverses again, which makes a
    server process 20x slower on cold pages. Frozen objects are still freed by reference counting, and everything
    is unfrozen at exit so the final collection still sees it (extension modules check for leaks then)."""
    global _unfreeze_registered
    gc.freeze()
    if not _unfreeze_registered:
        atexit.register(gc.unfreeze)
        _unfreeze_registered = True


_unfreeze_registered = False


def _build(n_subscriptions: int, seed: int, now: int, livemode: bool) -> SandboxAccount:
    acct = SandboxAccount(seed, now, livemode)
    if n_subscriptions <= 0:
        acct._finish()
        return acct
    gen = _Generator(acct, acct.rng)
    gen.build_catalog()
    forced = gen.forced_plans() if n_subscriptions >= 40 else []
    for i in range(n_subscriptions):
        plan = forced[i] if i < len(forced) else gen.random_plan(i)
        if plan.get("oneoff"):
            gen._fee_for = i
        gen.simulate(plan, i)
        gen._fee_for = None
    # Prospects: customers who never subscribed (some created in the import batch).
    for k in range(max(1, n_subscriptions // 8)):
        created = gen.import_at if k % 5 == 0 else acct.rng.randint(gen.origin, now - 60)
        gen.new_customer(created, acct.rng.choice(["usd", "usd", "eur", "jpy"]))
    gen.number_invoices(range(len(acct.invoices)))
    cutoff = now - EVENT_WINDOW_S
    recent_invoices = [inv.idx for inv in acct.invoices if inv.created >= cutoff]
    gen.emit_events(cutoff, acct.subs, recent_invoices, [c.idx for c in acct.customers if c.created >= cutoff])
    acct._finish()
    return acct
