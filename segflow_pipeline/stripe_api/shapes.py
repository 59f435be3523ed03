"""Every API shape Stripe may send for the objects we sync, old and new, read into plain row tuples of the raw tables
(`raw_tables.TABLES`): one extractor per object kind. Pure: no I/O, no Dagster. `objects.py` turns the tuples of a
page into Arrow tables and quarantines what cannot be read.

Shapes handled (https://docs.stripe.com/changelog/basil and earlier versions):
- subscription `current_period_start/end` on the subscription (before 2025-03-31) or on its items (basil+);
- `invoice.subscription` (old) or `invoice.parent.subscription_details.subscription` (basil+);
- invoice line `type`/`price`/`plan`/`subscription`/`subscription_item`/`proration` at the top level (old) or
  `line.pricing.price_details.price` and `line.parent.{subscription_item,invoice_item}_details.*` (basil+);
- `discount` (one object, old) and `discounts` (list of ids or expanded objects); `discount.coupon` (object, old)
  or `discount.source.coupon` (id or object, current);
- prices with `tiers` (present only when expanded) and old `plan` objects; `deleted: true` stubs.

An extractor raises `ObjectError` (the quarantine reason) for an object it cannot read.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

Row = tuple
Emit = list[tuple[str, Row]]


class ObjectError(ValueError):
    """An object that cannot be turned into rows; the message is the quarantine reason."""


# ---------------------------------------------------------------------------------------------------------------
# Small readers. Expandable fields come as an id string or as the expanded object.


def id_of(value: Any) -> str | None:
    """The id of an expandable field: an id string as is, an expanded object's `id`."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("id")
        if inner is None or isinstance(inner, str):
            return inner
    raise ObjectError(f"expected an id or an object with an id, got {type(value).__name__}")


def _required_id(obj: Any) -> str:
    if not isinstance(obj, dict):
        raise ObjectError(f"not a JSON object ({type(obj).__name__})")
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise ObjectError("missing id")
    return value


def _dict(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ObjectError(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(f"{name}: expected a list, got {type(value).__name__}")
    return value


def _dec(value: Any) -> str | None:
    """Stripe's `*_decimal` fields are strings; `percent_off` is a JSON number. Arrow casts the text exactly."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ObjectError("expected a decimal, got bool")
    if isinstance(value, (int, float)):
        return repr(value)
    raise ObjectError(f"expected a decimal, got {type(value).__name__}")


def _embedded(obj: dict, name: str) -> list:
    """Items of an embedded list object (`{"object": "list", "data": [...]}`), or of a plain list."""
    value = obj.get(name)
    if isinstance(value, dict):
        return _list(value.get("data"), f"{name}.data")
    return _list(value, name)


def _raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _coupon_of(discount: dict) -> str | None:
    # Current versions: discount.source = {"type": "coupon", "coupon": id|object}; older: discount.coupon = object.
    source = discount.get("source")
    if isinstance(source, dict) and source.get("coupon") is not None:
        return id_of(source["coupon"])
    return id_of(discount.get("coupon"))


def _discount_row(discount: dict, scope: str, target: str, *, customer: Any = None, subscription: str | None = None,
                  subscription_item: str | None = None) -> Row:
    coupon = _coupon_of(discount)
    discount_id = discount.get("id")
    if not discount_id:
        # Discounts from before multiple discounts existed (2021) carry no id: key them by what they attach.
        discount_id = f"{scope}:{target}:{coupon}"
    return (
        discount_id, scope, target,
        id_of(discount.get("customer")) or id_of(customer),
        id_of(discount.get("subscription")) or subscription,
        id_of(discount.get("subscription_item")) or subscription_item,
        coupon, discount.get("start"), discount.get("end"),
    )


def _discounts(obj: dict) -> list[dict | str]:
    """`discounts` (ids or objects) plus the legacy single `discount`, each discount once."""
    found: list[dict | str] = []
    seen: set[str] = set()
    legacy = obj.get("discount")
    legacy = _dict(legacy, "discount") if legacy is not None else None
    for entry in _list(obj.get("discounts"), "discounts"):
        if isinstance(entry, str):
            if legacy is not None and legacy.get("id") == entry:
                entry = legacy
        elif not isinstance(entry, dict):
            raise ObjectError(f"discounts: expected ids or objects, got {type(entry).__name__}")
        key = entry if isinstance(entry, str) else entry.get("id")
        if key and key in seen:
            continue
        if key:
            seen.add(key)
        found.append(entry)
    if legacy is not None and not (legacy.get("id") and legacy.get("id") in seen):
        found.append(legacy)
    return found


def _discount_rows(obj: dict, scope: str, target: str, **attached: Any) -> Emit:
    rows: Emit = []
    for entry in _discounts(obj):
        # An unexpanded id says a discount exists but not its coupon; keep the fact, coupon unknown.
        discount = {"id": entry} if isinstance(entry, str) else entry
        rows.append(("discounts", _discount_row(discount, scope, target, **attached)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# One extractor per object kind: object (+ context) → [(table, row without the integration column)].


def _customer(obj: Any, ctx: dict) -> Emit:
    cid = _required_id(obj)
    rows: Emit = [("customers", (
        cid, obj.get("created"), obj.get("email"), obj.get("name"), obj.get("currency"),
        obj.get("deleted", False), obj.get("livemode"), _raw(obj),
    ))]
    discount = obj.get("discount")
    if discount is not None:
        rows.append(("discounts", _discount_row(_dict(discount, "discount"), "customer", cid, customer=cid)))
    return rows


def _product(obj: Any, ctx: dict) -> Emit:
    pid = _required_id(obj)
    return [("products", (
        pid, obj.get("created"), obj.get("name"), obj.get("active"), obj.get("deleted", False), _raw(obj),
    ))]


def _tier_rows(price_id: str, tiers: list) -> Emit:
    rows: Emit = []
    for index, tier in enumerate(tiers):
        tier = _dict(tier, f"tiers[{index}]")
        up_to = tier.get("up_to")
        rows.append(("price_tiers", (
            price_id, index, None if up_to == "inf" else up_to,
            tier.get("unit_amount"), _dec(tier.get("unit_amount_decimal")),
            tier.get("flat_amount"), _dec(tier.get("flat_amount_decimal")),
        )))
    return rows


def _price(obj: Any, ctx: dict) -> Emit:
    pid = _required_id(obj)
    if obj.get("object") == "plan":
        # Plans (plan.* events, old line items) are prices in the older shape.
        recurring = {"interval": obj.get("interval"), "interval_count": obj.get("interval_count"),
                     "usage_type": obj.get("usage_type")}
        transform = _dict(obj.get("transform_usage"), "transform_usage")
        unit_amount, unit_decimal, kind = obj.get("amount"), obj.get("amount_decimal"), "recurring"
    else:
        recurring = _dict(obj.get("recurring"), "recurring")
        transform = _dict(obj.get("transform_quantity"), "transform_quantity")
        unit_amount, unit_decimal, kind = obj.get("unit_amount"), obj.get("unit_amount_decimal"), obj.get("type")
    rows: Emit = [("prices", (
        pid, obj.get("created"), id_of(obj.get("product")), obj.get("currency"), obj.get("active"), kind,
        obj.get("billing_scheme"), obj.get("tiers_mode"), unit_amount, _dec(unit_decimal),
        recurring.get("interval"), recurring.get("interval_count"), recurring.get("usage_type"),
        transform.get("divide_by"), transform.get("round"), obj.get("nickname"), obj.get("deleted", False),
        _raw(obj),
    ))]
    tiers = obj.get("tiers")  # present only when requested with expand[]=tiers / data.tiers
    if tiers is not None:
        rows.extend(_tier_rows(pid, _list(tiers, "tiers")))
    return rows


def _coupon(obj: Any, ctx: dict) -> Emit:
    cid = _required_id(obj)
    return [("coupons", (
        cid, obj.get("created"), obj.get("name"), _dec(obj.get("percent_off")), obj.get("amount_off"),
        obj.get("currency"), obj.get("duration"), obj.get("duration_in_months"), obj.get("valid"),
        obj.get("deleted", False), _raw(obj),
    ))]


def _item(obj: Any, subscription: str | None) -> Emit:
    iid = _required_id(obj)
    sub = id_of(obj.get("subscription")) or subscription
    price = id_of(obj.get("price")) or id_of(obj.get("plan"))
    rows: Emit = [("subscription_items", (
        iid, sub, price, obj.get("quantity"), obj.get("created"),
        obj.get("current_period_start"), obj.get("current_period_end"), _raw(obj),
    ))]
    rows.extend(_discount_rows(obj, "subscription_item", iid, subscription=sub, subscription_item=iid))
    return rows


def _subscription_item(obj: Any, ctx: dict) -> Emit:
    return _item(obj, ctx.get("subscription"))


def _subscription(obj: Any, ctx: dict) -> Emit:
    sid = _required_id(obj)
    items = _embedded(obj, "items")
    rows: Emit = []
    starts: list[int] = []
    ends: list[int] = []
    currency = obj.get("currency")
    for index, item in enumerate(items):
        item_rows = _item(item, sid)
        rows.extend(item_rows)
        if item.get("current_period_start") is not None:
            starts.append(item["current_period_start"])
        if item.get("current_period_end") is not None:
            ends.append(item["current_period_end"])
        if currency is None:
            # Subscriptions before `currency` existed: the items' price (or plan) currency.
            price = item.get("price") if isinstance(item.get("price"), dict) else item.get("plan")
            if isinstance(price, dict):
                currency = price.get("currency")
    # basil+ moved the period to the items; then the subscription's is the earliest start and the latest end.
    period_start = obj.get("current_period_start")
    period_end = obj.get("current_period_end")
    try:
        if period_start is None and starts:
            period_start = min(starts)
        if period_end is None and ends:
            period_end = max(ends)
    except TypeError:
        raise ObjectError("items: current_period_start/end must be integers") from None
    pause = _dict(obj.get("pause_collection"), "pause_collection")
    rows.insert(0, ("subscriptions", (
        sid, id_of(obj.get("customer")), obj.get("status"), currency, obj.get("created"),
        obj.get("start_date"), obj.get("trial_start"), obj.get("trial_end"),
        obj.get("cancel_at"), obj.get("cancel_at_period_end"), obj.get("canceled_at"), obj.get("ended_at"),
        period_start, period_end, pause.get("behavior"), obj.get("livemode"), _raw(obj),
    )))
    rows.extend(_discount_rows(obj, "subscription", sid, customer=obj.get("customer"), subscription=sid))
    return rows


def _line(obj: Any, invoice: str | None, customer: str | None) -> Row:
    lid = _required_id(obj)
    parent = obj.get("parent")
    if isinstance(parent, dict):
        # basil+: https://docs.stripe.com/changelog/basil/2025-03-31/add-parent-field-to-invoice-line-items
        parent_type = parent.get("type")
        details = parent.get(parent_type) if isinstance(parent_type, str) else None
        if not isinstance(details, dict):
            details = (_dict(parent.get("subscription_item_details"), "parent.subscription_item_details")
                       or _dict(parent.get("invoice_item_details"), "parent.invoice_item_details"))
            parent_type = ("subscription_item_details" if parent.get("subscription_item_details")
                           else "invoice_item_details" if details else None)
        line_type = {"subscription_item_details": "subscription", "invoice_item_details": "invoiceitem"}.get(
            parent_type, parent_type)
        subscription = id_of(details.get("subscription"))
        subscription_item = id_of(details.get("subscription_item"))
        proration = details.get("proration")
        pricing = _dict(obj.get("pricing"), "pricing")
        price = id_of(_dict(pricing.get("price_details"), "pricing.price_details").get("price"))
        if price is None:
            price = id_of(obj.get("price")) or id_of(obj.get("plan"))
    else:
        line_type = obj.get("type")
        subscription = id_of(obj.get("subscription"))
        subscription_item = id_of(obj.get("subscription_item"))
        proration = obj.get("proration")
        price = id_of(obj.get("price")) or id_of(obj.get("plan"))
    period = _dict(obj.get("period"), "period")
    return (
        lid, id_of(obj.get("invoice")) or invoice, customer, line_type, subscription, subscription_item, price,
        obj.get("quantity"), obj.get("amount"), obj.get("currency"), period.get("start"), period.get("end"),
        proration, _raw(obj),
    )


def _invoice_item(obj: Any, ctx: dict) -> Emit:
    """An invoice item: `parent.subscription_details.{subscription, subscription_item}` and
    `pricing.price_details.price` (basil+), or top-level `subscription`, `subscription_item`, `price`/`plan`."""
    iid = _required_id(obj)
    parent = _dict(obj.get("parent"), "parent")
    details = _dict(parent.get("subscription_details"), "parent.subscription_details")
    subscription = id_of(details.get("subscription")) or id_of(obj.get("subscription"))
    subscription_item = id_of(details.get("subscription_item")) or id_of(obj.get("subscription_item"))
    pricing = _dict(obj.get("pricing"), "pricing")
    price = (id_of(_dict(pricing.get("price_details"), "pricing.price_details").get("price"))
             or id_of(obj.get("price")) or id_of(obj.get("plan")))
    period = _dict(obj.get("period"), "period")
    return [("invoice_items", (
        iid, id_of(obj.get("customer")), subscription, subscription_item, price, obj.get("quantity"),
        obj.get("amount"), obj.get("currency"), obj.get("date"), period.get("start"), period.get("end"),
        obj.get("proration"), id_of(obj.get("invoice")), _raw(obj),
    ))]


def _invoice_line(obj: Any, ctx: dict) -> Emit:
    return [("invoice_lines", _line(obj, ctx.get("invoice"), ctx.get("customer")))]


def invoice_subscription(obj: dict) -> str | None:
    """The subscription an invoice bills: `invoice.subscription` (old) or its parent's subscription_details."""
    subscription = id_of(obj.get("subscription"))
    if subscription is None:
        parent = _dict(obj.get("parent"), "parent")
        subscription = id_of(_dict(parent.get("subscription_details"), "parent.subscription_details")
                           .get("subscription"))
    return subscription


def _invoice(obj: Any, ctx: dict) -> Emit:
    iid = _required_id(obj)
    customer = id_of(obj.get("customer"))
    transitions = _dict(obj.get("status_transitions"), "status_transitions")
    rows: Emit = [("invoices", (
        iid, customer, invoice_subscription(obj), obj.get("status"), obj.get("currency"), obj.get("created"),
        obj.get("period_start"), obj.get("period_end"), obj.get("billing_reason"), obj.get("subtotal"),
        obj.get("total"), obj.get("amount_due"), obj.get("amount_paid"), transitions.get("paid_at"),
        obj.get("livemode"), _raw(obj),
    ))]
    for line in _embedded(obj, "lines"):
        rows.append(("invoice_lines", _line(line, iid, customer)))
    return rows


def _event(obj: Any, ctx: dict) -> Emit:
    eid = _required_id(obj)
    data = _dict(obj.get("data"), "data")
    inner = data.get("object")
    inner = _dict(inner, "data.object") if inner is not None else None
    previous = data.get("previous_attributes")
    return [("events", (
        eid, obj.get("type"), obj.get("created"), obj.get("api_version"),
        inner.get("object") if inner else None, id_of(inner.get("id")) if inner else None,
        None if previous is None else orjson.dumps(previous),
        None if inner is None else orjson.dumps(inner),
    ))]


# object kind → (Stripe object name for quarantine rows, extractor)
EXTRACTORS: dict[str, tuple[str, Callable[[Any, dict], Emit]]] = {
    "customers": ("customer", _customer),
    "products": ("product", _product),
    "prices": ("price", _price),
    "coupons": ("coupon", _coupon),
    "subscriptions": ("subscription", _subscription),
    "subscription_items": ("subscription_item", _subscription_item),
    "invoices": ("invoice", _invoice),
    "invoice_lines": ("line_item", _invoice_line),
    "invoice_items": ("invoiceitem", _invoice_item),
    "events": ("event", _event),
}
