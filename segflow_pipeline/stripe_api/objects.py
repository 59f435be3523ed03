"""Stripe objects → rows of the raw tables (`raw_tables.TABLES`), as Arrow tables. Pure: no I/O, no Dagster.

What belongs here: turning a list of objects (one page) into column-wise Arrow data, with the shapes read by the
extractors of `shapes.py`. What does not: fetching, paging, storing (see `crawler.py`, `sync.py` and the sink,
`sink.py`).

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
from segflow_pipeline.stripe_api.shapes import EXTRACTORS, Emit, ObjectError, Row, id_of


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
