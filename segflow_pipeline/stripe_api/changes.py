"""Events -> which objects an incremental sync reads again, and how (by id or listed). Pure: no I/O, no Dagster.

An event's `data.object` is in the API version of the event, so the objects themselves are read again
(https://docs.stripe.com/api/events); events only say which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.lists import PAGE_SIZE


@dataclass
class ChangeSet:
    """Objects events say changed: ids per kind (with `created` when the event told it) and deleted ids."""

    reread: dict[str, dict[str, int | None]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)

    def mark(self, kind: str, object_id: Any, created: Any = None) -> None:
        if isinstance(object_id, str) and object_id:
            known = self.reread.setdefault(kind, {})
            if isinstance(created, int) or object_id not in known:
                known[object_id] = created if isinstance(created, int) else None
            self.deleted.get(kind, set()).discard(object_id)

    def delete(self, kind: str, object_id: Any) -> None:
        if isinstance(object_id, str) and object_id:
            self.deleted.setdefault(kind, set()).add(object_id)
            self.reread.get(kind, {}).pop(object_id, None)


_DELETED_KINDS = {"customer.deleted": "customers", "product.deleted": "products", "price.deleted": "prices",
                  "plan.deleted": "prices", "coupon.deleted": "coupons", "invoice.deleted": "invoices"}


def changed_objects(events: Iterable[tuple]) -> ChangeSet:
    """Which objects to read again (or mark deleted), from (created, id, type, data.object) of events.

    Events are applied oldest first, so the last word on an object wins (updated then deleted → deleted).
    """
    changes = ChangeSet()
    for _, _, kind_of_event, obj in sorted(events, key=lambda e: (e[0], e[1])):
        if not isinstance(obj, dict):
            continue
        object_id, created = obj.get("id"), obj.get("created")
        prefix = kind_of_event.split(".", 1)[0]
        if kind_of_event in _DELETED_KINDS:
            changes.delete(_DELETED_KINDS[kind_of_event], object_id)
        elif kind_of_event.startswith("customer.subscription."):
            # customer.subscription.deleted is a cancellation: the subscription stays, status canceled.
            changes.mark("subscriptions", object_id, created)
        elif kind_of_event.startswith("customer.discount."):
            if obj.get("subscription"):
                changes.mark("subscriptions", objects.id_of(obj.get("subscription")))
            elif obj.get("customer"):
                changes.mark("customers", objects.id_of(obj.get("customer")))
        elif kind_of_event in ("customer.created", "customer.updated"):
            changes.mark("customers", object_id, created)
        elif prefix == "customer" and obj.get("customer"):
            changes.mark("customers", objects.id_of(obj.get("customer")))  # customer.source.*, customer.tax_id.*
        elif prefix == "invoice":
            changes.mark("invoices", object_id, created)
            if kind_of_event in ("invoice.created", "invoice.finalized") and obj.get("customer"):
                # Numbering an invoice moves its customer's next_invoice_sequence, and Stripe sends no
                # customer.updated for that: read the customer again too.
                changes.mark("customers", objects.id_of(obj.get("customer")))
        elif prefix == "invoiceitem":
            if obj.get("invoice"):
                changes.mark("invoices", objects.id_of(obj.get("invoice")))
        elif prefix in ("price", "plan"):
            changes.mark("prices", object_id, created)
        elif prefix == "product":
            changes.mark("products", object_id, created)
        elif prefix == "coupon":
            changes.mark("coupons", object_id, created)
    return changes


def _pages(count: int) -> int:
    return -(-count // PAGE_SIZE)


def read_plan(ids: dict[str, int | None], since: int, stored: int) -> int | None:
    """How an incremental sync reads changed objects of one kind again: None = each by id; else list every
    object created at or after the returned second (100 per request), and the older ones by id.

    Objects created since the last sync are listed when there are a few; when more objects changed than one
    request in a hundred would list (`stored` objects of the kind are known), everything is listed (from 0).
    """
    new = sum(1 for created in ids.values() if created is not None and created >= since)
    by_id = len(ids)
    list_new = _pages(new) + (len(ids) - new) if new > 2 else by_id
    list_all = _pages(stored + new) + 1
    if list_all < min(by_id, list_new):
        return 0
    if list_new < by_id:
        return since
    return None

