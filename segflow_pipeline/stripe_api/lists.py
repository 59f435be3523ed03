"""Which Stripe lists a sync reads, with which parameters and expansions. No I/O, no Dagster."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from segflow_pipeline.stripe_api import objects

PAGE_SIZE = 100  # the most objects Stripe returns per page


@dataclass(frozen=True)
class ListSpec:
    """One Stripe list the full sync reads completely."""

    kind: str                      # key of objects.EXTRACTORS; also the main table
    path: str
    params: dict[str, Any]
    resource: str                  # what a restricted key needs to read it (error messages)
    retrieve_params: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)   # handed to `objects.page_rows` with every page

    def retrieve_path(self, object_id: str) -> str:
        return f"{self.path}/{urllib.parse.quote(object_id, safe='')}"


# Prorations a subscription update created that no invoice holds yet (https://docs.stripe.com/api/invoiceitems/list):
# they date a change until the next renewal invoices them. The pending set is small and shrinks when items are
# invoiced (no event says so), so every sync, full or incremental, lists it whole.
INVOICE_ITEMS = ListSpec("invoice_items", "/v1/invoiceitems", {"pending": "true"}, "invoices")
# Expansion depth is at most 4 and `data.` counts as one level (https://docs.stripe.com/expand#lists):
# data.items.data.discounts is the deepest we may ask for. Tiers only come when expanded.
LISTS: tuple[ListSpec, ...] = (
    ListSpec("customers", "/v1/customers", {}, "customers"),
    ListSpec("products", "/v1/products", {}, "products"),
    ListSpec("prices", "/v1/prices", {"expand": ["data.tiers"]}, "prices", {"expand": ["tiers"]}),
    ListSpec("coupons", "/v1/coupons", {}, "coupons"),
    # Without status, canceled and incomplete_expired subscriptions are hidden.
    ListSpec("subscriptions", "/v1/subscriptions",
             {"status": "all", "expand": ["data.discounts", "data.items.data.discounts"]}, "subscriptions",
             {"expand": ["discounts", "items.data.discounts"]}),
    ListSpec("invoices", "/v1/invoices", {}, "invoices"),
    INVOICE_ITEMS,
)
EVENTS = ListSpec("events", "/v1/events", {}, "events")
# An incremental sync reads invoices with their customer and subscription expanded: invoices are what most
# changes create, and their customers and subscriptions changed with them (`objects.take_expanded`).
INVOICES_EXPANDED = ListSpec(
    "invoices", "/v1/invoices", {"expand": [f"data.{path}" for path in objects.INVOICE_EXPANSIONS]}, "invoices",
    {"expand": list(objects.INVOICE_EXPANSIONS)}, context={"expanded": True})
BY_KIND = {spec.kind: spec for spec in (*LISTS, EVENTS)}
ITEMS = ListSpec("subscription_items", "/v1/subscription_items", {"expand": ["data.discounts"]}, "subscriptions")
LINES = ListSpec("invoice_lines", "/v1/invoices/{}/lines", {}, "invoices")
# Table each kind's quarantine rows are counted under.
MAIN_TABLE = {**{spec.kind: spec.kind for spec in (*LISTS, EVENTS)},
              "subscription_items": "subscription_items", "invoice_lines": "invoice_lines"}

