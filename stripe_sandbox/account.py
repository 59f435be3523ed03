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

This module is the store (records, id maps, list tables, the encoded cache) and its two entry points; the
simulation is `simulation.Generator` (scenarios in `plans`, invoices and events in `invoicing`, later changes in
`live`), and the renderers are the mixins `objects.CatalogObjects` and `billing_objects.BillingObjects`.
"""

from __future__ import annotations

import atexit
import gc
import json
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson

from stripe_sandbox import catalog as cat
from stripe_sandbox import plans
from stripe_sandbox.billing_objects import BillingObjects
from stripe_sandbox.listing import Table
from stripe_sandbox.objects import CatalogObjects
from stripe_sandbox.records import (
    EVENT_WINDOW_S,
    Customer,
    Discount,
    Event,
    Ids,
    Invoice,
    Line,
    Segment,
    State,
    Sub,
    b62,
)
from stripe_sandbox.simulation import Generator


class SandboxAccount(BillingObjects, CatalogObjects):
    """One Stripe account's objects, indexes and cached renderings. Build it with `build_account`."""

    def __init__(self, seed: int, now: int, livemode: bool) -> None:
        self.seed, self.now, self.livemode = seed, now, livemode
        self.rng = random.Random(seed)
        self.ids = Ids(self.rng)
        self.account_id = "acct_1" + self.ids.tag + b62(seed % 3844**3, 3)[:5]
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
            gen = Generator(self, rng)
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
    cat.add_price_book(acct)
    gen = Generator(acct, acct.rng)
    forced = plans.forced_plans(now) if n_subscriptions >= 40 else []
    for i in range(n_subscriptions):
        plan = forced[i] if i < len(forced) else plans.random_plan(acct.rng, bool(gen.ended_customers))
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
