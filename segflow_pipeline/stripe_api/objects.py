"""Stripe object dicts → rows of the raw tables (`raw_tables.TABLES`), as Arrow tables. Pure: no I/O, no Dagster.

What belongs here: reading every API shape Stripe may send for the objects we sync, old and new, and turning a
list of objects (one page) into column-wise Arrow data. What does not: fetching, paging, storing (see `crawler.py`,
`sync.py` and the sink, `sink.py`).

Shapes handled (https://docs.stripe.com/changelog/basil and earlier versions):
- subscription `current_period_start/end` on the subscription (before 2025-03-31) or on its items (basil+);
- `invoice.subscription` (old) or `invoice.parent.subscription_details.subscription` (basil+);
- invoice line `type`/`price`/`plan`/`subscription`/`subscription_item`/`proration` at the top level (old) or
  `line.pricing.price_details.price` and `line.parent.{subscription_item,invoice_item}_details.*` (basil+);
- `discount` (one object, old) and `discounts` (list of ids or expanded objects); `discount.coupon` (object, old)
  or `discount.source.coupon` (id or object, current);
- prices with `tiers` (present only when expanded) and old `plan` objects; `deleted: true` stubs.

An object that cannot be read (not an object, no id, a value of the wrong type...) never raises: it becomes one
`quarantine` row with the reason, and the rest of the page is kept. The unit of quarantine is the object as
listed: a subscription with its embedded items and discounts, an invoice with its embedded lines, a price with
its tiers; lines and items paged separately are units of their own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from segflow_pipeline.raw_tables import BOOL, DEC, I64, STR, TABLES, TS
from segflow_pipeline.stripe_api.errors import UnexpectedBody, json_kind

Row = tuple
Emit = list[tuple[str, Row]]


class ObjectError(ValueError):
    """An object that cannot be turned into rows; the message is the quarantine reason."""


@dataclass
class Rows:
    """Rows for one or more raw tables, column-wise; `tables` holds only tables that got rows."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    quarantined_ids: list[tuple[str, str | None]] = field(default_factory=list)

    def count(self, table: str) -> int:
        t = self.tables.get(table)
        return 0 if t is None else t.num_rows

    @property
    def quarantined(self) -> int:
        return len(self.quarantined_ids)


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


# ---------------------------------------------------------------------------------------------------------------
# Column building: tuples → Arrow, type-checked per column; a column that fails is re-checked value by value to
# find the objects to quarantine, so well-formed pages pay no per-value check.

_US_PER_S = 1_000_000
# Rows are built on many sync threads. Arrow's default allocator (mimalloc) keeps a heap per thread and holds on
# to freed pages, which doubled the peak RSS of a 32-thread sync; the system allocator returns them.
POOL = pa.system_memory_pool()


def _column(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    if kind == STR or kind == BOOL:
        return pa.array(values, kind, memory_pool=POOL)
    if kind == I64 or kind == TS:
        # Inferred, so floats and bools are refused instead of silently truncated.
        arr = pa.array(values, memory_pool=POOL)
        if arr.type == pa.null():
            arr = arr.cast(I64, memory_pool=POOL)
        elif arr.type != I64:
            raise ObjectError(f"expected integers, got {arr.type}")
        if kind == TS:
            arr = pc.multiply_checked(arr, _US_PER_S, memory_pool=POOL).cast(TS, memory_pool=POOL)
        return arr
    if kind == DEC:
        return pa.array(values, STR, memory_pool=POOL).cast(DEC, memory_pool=POOL)
    raise TypeError(f"no column builder for {kind}")


def _bad_values(values: Sequence[Any], kind: pa.DataType) -> list[int]:
    bad = []
    for index, value in enumerate(values):
        try:
            _column([value], kind)
        except (pa.ArrowException, ObjectError, OverflowError, TypeError, ValueError):
            bad.append(index)
    return bad


def _kind_label(value: Any) -> str:
    return type(value).__name__


class _Batch:
    """Collects the rows of a list of objects, then converts them into Arrow tables."""

    def __init__(self, integration: str, synced_at: dt.datetime) -> None:
        self.integration = integration
        self.synced_at = synced_at
        self.rows: dict[str, list[Row]] = {}
        self.owners: dict[str, list[int]] = {}
        self.units: list[tuple[str, Any]] = []
        self.quarantine: list[tuple[str, str | None, str, bytes | None]] = []
        self.dropped: set[int] = set()

    def add(self, object_type: str, extractor: Callable[[Any, dict], Emit], obj: Any, ctx: dict) -> None:
        unit = len(self.units)
        self.units.append((object_type, obj))
        try:
            emitted = extractor(obj, ctx)
        except Exception as exc:  # any malformed shape: quarantine, never stop the sync
            self._quarantine(unit, _reason(exc))
            return
        for table, row in emitted:
            self.rows.setdefault(table, []).append(row)
            self.owners.setdefault(table, []).append(unit)

    def _quarantine(self, unit: int, reason: str) -> None:
        object_type, obj = self.units[unit]
        object_id = (obj.get("id") or None) if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        try:
            raw = orjson.dumps(obj, default=repr)
        except TypeError:
            raw = repr(obj).encode()
        self.quarantine.append((object_type, object_id, reason, raw))
        self.dropped.add(unit)

    def build(self) -> Rows:
        while True:
            try:
                tables = {table: self._table(table, rows, self.owners[table]) for table, rows in self.rows.items()}
                break
            except _BadColumn as bad:
                for index in _bad_values(bad.column, bad.kind) or range(len(bad.column)):
                    if bad.owners[index] not in self.dropped:
                        value = bad.column[index]
                        self._quarantine(bad.owners[index],
                                         f"{bad.table}.{bad.name}: unexpected {_kind_label(value)} {value!r:.80}")
        result = Rows(tables={table: t for table, t in tables.items() if t is not None})
        if self.quarantine:
            result.quarantined_ids = [(q[0], q[1]) for q in self.quarantine]
            rows = [(*q, self.synced_at) for q in self.quarantine]
            result.tables["quarantine"] = self._table("quarantine", rows, None)
        return result

    def _table(self, table: str, rows: list[Row], owners: list[int] | None) -> pa.Table | None:
        if self.dropped and owners is not None:
            keep = [i for i, owner in enumerate(owners) if owner not in self.dropped]
            rows = [rows[i] for i in keep]
            owners = [owners[i] for i in keep]
        if not rows:
            return None
        schema = TABLES[table]
        arrays = [pa.array([self.integration] * len(rows), STR, memory_pool=POOL)]
        for field_, column in zip(list(schema)[1:], zip(*rows)):
            if table == "quarantine" and field_.type == TS:
                arrays.append(pa.array(column, TS, memory_pool=POOL))  # synced_at is ours, a datetime
                continue
            try:
                arrays.append(_column(column, field_.type))
            except (pa.ArrowException, ObjectError, OverflowError, TypeError, ValueError):
                raise _BadColumn(table, field_.name, field_.type, column, owners) from None
        return pa.Table.from_arrays(arrays, schema=schema)


class _BadColumn(Exception):
    def __init__(self, table: str, name: str, kind: pa.DataType, column: Sequence[Any], owners: list[int]) -> None:
        super().__init__(f"{table}.{name}")
        self.table, self.name, self.kind, self.column, self.owners = table, name, kind, column, owners


def _reason(exc: Exception) -> str:
    if isinstance(exc, ObjectError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"[:300]


def rows_of(kind: str, objects: Iterable[Any], integration: str, *, context: dict | None = None,
            synced_at: dt.datetime | None = None) -> Rows:
    """Rows of every table the objects of `kind` (a key of `EXTRACTORS`) fill, with quarantine rows for the rest.

    `context` gives what a paged child does not carry itself: `{"subscription": id}` for subscription items,
    `{"invoice": id, "customer": id}` for invoice lines.
    """
    object_type, extractor = EXTRACTORS[kind]
    batch = _Batch(integration, synced_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    ctx = context or {}
    for obj in objects:
        batch.add(object_type, extractor, obj, ctx)
    return batch.build()


def customer_rows(customers: Iterable[Any], integration: str) -> Rows:
    """`customers` rows and, for customers with a discount, `discounts` rows (scope customer)."""
    return rows_of("customers", customers, integration)


def product_rows(products: Iterable[Any], integration: str) -> Rows:
    return rows_of("products", products, integration)


def price_rows(prices: Iterable[Any], integration: str) -> Rows:
    """`prices` rows and `price_tiers` rows for prices listed with their tiers expanded."""
    return rows_of("prices", prices, integration)


def coupon_rows(coupons: Iterable[Any], integration: str) -> Rows:
    return rows_of("coupons", coupons, integration)


def subscription_rows(subscriptions: Iterable[Any], integration: str) -> Rows:
    """`subscriptions`, the embedded `subscription_items`, and `discounts` of the subscriptions and items."""
    return rows_of("subscriptions", subscriptions, integration)


def subscription_item_rows(items: Iterable[Any], integration: str, subscription: str) -> Rows:
    """Items paged through /v1/subscription_items beyond those the subscription embeds, with their discounts."""
    return rows_of("subscription_items", items, integration, context={"subscription": subscription})


def invoice_rows(invoices: Iterable[Any], integration: str) -> Rows:
    """`invoices` and the lines they embed (at most 10; the rest come from `invoice_line_rows`)."""
    return rows_of("invoices", invoices, integration)


def invoice_line_rows(lines: Iterable[Any], integration: str, invoice: str, customer: str | None) -> Rows:
    """Lines paged through /v1/invoices/{id}/lines; lines do not carry the customer, the invoice does."""
    return rows_of("invoice_lines", lines, integration, context={"invoice": invoice, "customer": customer})


def event_rows(events: Iterable[Any], integration: str) -> Rows:
    return rows_of("events", events, integration)


@dataclass
class Page:
    """One response body turned into rows, plus what paging needs to know about it.

    `truncated`: (parent id, last embedded child id, parent customer) of objects whose embedded list (`items`,
    `lines`) has more than it shows. `events`: (created, id, type, the ids part of data.object) per event.
    `deleted`: a retrieved object that says `deleted: true`.
    """

    rows: Rows
    has_more: bool = False
    last_id: str | None = None
    last_created: int | None = None
    newest_created: int | None = None
    last_second: int = 0           # objects of the page created in the same second as its last one
    truncated: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    deleted: bool = False
    embedded: dict[str, list[str]] = field(default_factory=dict)


# What an incremental sync asks Stripe to expand in the invoices it reads (`expand[]`): the customer and the
# subscription of each invoice, as current objects (https://docs.stripe.com/expand). The invoices' own rows keep
# the ids, as Stripe lists them unexpanded; the expanded objects become rows of their own (`take_expanded`).
INVOICE_EXPANSIONS = ("customer", "parent.subscription_details.subscription")
EXPANDED_KINDS = ("customers", "subscriptions")


def _complete_customer(obj: Any) -> bool:
    return (isinstance(obj, dict) and obj.get("object") == "customer" and isinstance(obj.get("id"), str)
            and not obj.get("deleted"))


def _complete_subscription(obj: Any) -> bool:
    """Whether an expanded subscription equals what the sync's own reads return: those expand its discounts and
    its items' discounts, which an expansion inside an invoice cannot reach (4 levels at most). With no discounts
    at all and every item embedded, there is nothing to expand, so the objects are the same."""
    if not (isinstance(obj, dict) and obj.get("object") == "subscription" and isinstance(obj.get("id"), str)):
        return False
    items = obj.get("items")
    if obj.get("discounts") != [] or obj.get("discount") is not None or not isinstance(items, dict):
        return False
    data = items.get("data")
    return (items.get("has_more") is False and isinstance(data, list)
            and all(isinstance(item, dict) and item.get("discounts") == [] for item in data))


def take_expanded(invoices: list) -> dict[str, list[dict]]:
    """Put ids back in place of the customer and subscription objects expanded in `invoices` (in place) and
    return those objects by kind, one per id, when they can stand for a read of their own (else the caller
    reads them by id)."""
    found: dict[str, dict[str, dict]] = {"customers": {}, "subscriptions": {}}
    for invoice in invoices:
        if not isinstance(invoice, dict):
            continue
        customer = invoice.get("customer")
        if isinstance(customer, dict):
            invoice["customer"] = customer.get("id")
            if _complete_customer(customer):
                found["customers"][customer["id"]] = customer
        parent = invoice.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, dict) else None
        subscription = details.get("subscription") if isinstance(details, dict) else None
        if isinstance(subscription, dict):
            details["subscription"] = subscription.get("id")
            if _complete_subscription(subscription):
                found["subscriptions"][subscription["id"]] = subscription
    return {kind: list(objs.values()) for kind, objs in found.items() if objs}


def merge_rows(parts: Iterable[Rows]) -> Rows:
    """One Rows of several, tables of the same name concatenated."""
    tables: dict[str, list[pa.Table]] = {}
    quarantined: list[tuple[str, str | None]] = []
    for part in parts:
        for name, table in part.tables.items():
            tables.setdefault(name, []).append(table)
        quarantined.extend(part.quarantined_ids)
    return Rows({name: t[0] if len(t) == 1 else pa.concat_tables(t, memory_pool=POOL) for name, t in tables.items()},
                quarantined)


_EMBEDDED = {"subscriptions": "items", "invoices": "lines"}
_FACT_KEYS = ("id", "object", "created", "customer", "subscription", "invoice")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def page_rows(kind: str, body: bytes, integration: str, context: dict | None = None, *,
              single: bool = False) -> Page:
    """A list page (`{"data": [...], "has_more": ...}`) or, with `single`, one retrieved object, as a `Page`.

    Takes the raw body so the parsed dicts never leave this call (they are ~40x the JSON's size). A list body that
    is not a JSON object with a `data` list raises `UnexpectedBody`.
    """
    parsed = orjson.loads(body)
    if single:
        if isinstance(parsed, dict) and parsed.get("deleted") is True:
            return Page(Rows(), deleted=True)
        data, has_more = [parsed], False
    else:
        # A list body that is not Stripe's list object is not one bad object to quarantine: nothing on it can be
        # trusted, paging included.
        if not isinstance(parsed, dict):
            raise UnexpectedBody(f"{json_kind(parsed)} where Stripe sends a list object")
        data = parsed.get("data")
        if not isinstance(data, list):
            raise UnexpectedBody(f"a JSON object without a `data` list ({json_kind(data)}) where Stripe sends a list")
        has_more = bool(parsed.get("has_more")) and bool(data)
    expanded = take_expanded(data) if kind == "invoices" and (context or {}).get("expanded") else {}
    rows = rows_of(kind, data, integration, context=context)
    if expanded:
        rows = merge_rows([rows, *(rows_of(other, objs, integration) for other, objs in expanded.items())])
    page = Page(rows, has_more=has_more)
    page.embedded = {other: [obj["id"] for obj in objs] for other, objs in expanded.items()}
    # The cursor is the last object with an id (a malformed one at the end must not end the paging).
    readable = [obj for obj in data if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"]]
    if readable:
        page.last_id = readable[-1]["id"]
        page.last_created = _int_or_none(readable[-1].get("created"))
        page.newest_created = _int_or_none(readable[0].get("created"))
        page.last_second = sum(1 for obj in readable if obj.get("created") == page.last_created)
    name = _EMBEDDED.get(kind)
    if name is not None:
        bad = {object_id for _, object_id in rows.quarantined_ids}
        for obj in data:
            if not isinstance(obj, dict) or obj.get("id") in bad:
                continue
            embedded = obj.get(name)
            if isinstance(embedded, dict) and embedded.get("has_more"):
                children = embedded.get("data")
                tail = children[-1] if isinstance(children, list) and children else None
                page.truncated.append((obj["id"], tail.get("id") if isinstance(tail, dict) else None,
                                       id_of(obj.get("customer"))))
    if kind == "events":
        for event in data:
            if isinstance(event, dict) and isinstance(event.get("data"), dict):
                obj = event["data"].get("object")
                if isinstance(obj, dict):
                    # Only what says which object changed: 30 days of whole objects would not fit in memory.
                    obj = {key: obj.get(key) for key in _FACT_KEYS}
                page.events.append((event.get("created") or 0, event.get("id") or "", event.get("type") or "", obj))
    return page
