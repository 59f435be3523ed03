"""The raw tables of schema `stripe`: one Arrow schema per table, and the sync's cursor. No Dagster, no I/O.

The interface between the packages that meet at these rows, so that neither imports the other: `stripe_api`
builds them from Stripe objects (`objects.py`) and hands them to a sink (`stripe_api/sink.py`); `warehouse` derives
the DuckDB tables from them and stores them (`warehouse/raw.py`); the MRR transform reads them.

Conventions: every table starts with `integration` (the configured account's name) and has `raw` (the object as
Stripe sent it, JSON text) so nothing Stripe sent is lost. Times are naive TIMESTAMP in UTC (microseconds).
Amounts are integers in the currency's minor unit (`*_decimal` columns keep Stripe's fractional minor units as
DECIMAL(38,12)). Primary key: (integration, id) unless said otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us")
DEC = pa.decimal128(38, 12)
STR = pa.string()
I64 = pa.int64()
BOOL = pa.bool_()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([("integration", STR), *fields])


TABLES: dict[str, pa.Schema] = {
    "customers": _schema(
        ("id", STR), ("created", TS), ("email", STR), ("name", STR), ("currency", STR),
        ("deleted", BOOL), ("livemode", BOOL), ("raw", STR),
    ),
    "products": _schema(
        ("id", STR), ("created", TS), ("name", STR), ("active", BOOL), ("deleted", BOOL), ("raw", STR),
    ),
    "prices": _schema(
        ("id", STR), ("created", TS), ("product", STR), ("currency", STR), ("active", BOOL), ("type", STR),
        ("billing_scheme", STR),                # per_unit | tiered
        ("tiers_mode", STR),                    # volume | graduated | null
        ("unit_amount", I64), ("unit_amount_decimal", DEC),
        ("recurring_interval", STR),            # day | week | month | year | null (one-time price)
        ("recurring_interval_count", I64),
        ("recurring_usage_type", STR),          # licensed | metered
        ("transform_quantity_divide_by", I64), ("transform_quantity_round", STR),  # up | down
        ("nickname", STR), ("deleted", BOOL), ("raw", STR),
    ),
    # One row per tier of a tiered price, in Stripe's order (tier_index 0 = lowest). up_to null = infinity.
    "price_tiers": _schema(
        ("price", STR), ("tier_index", I64), ("up_to", I64),
        ("unit_amount", I64), ("unit_amount_decimal", DEC), ("flat_amount", I64), ("flat_amount_decimal", DEC),
    ),
    "coupons": _schema(
        ("id", STR), ("created", TS), ("name", STR),
        ("percent_off", DEC), ("amount_off", I64), ("currency", STR),
        ("duration", STR),                      # forever | once | repeating
        ("duration_in_months", I64), ("valid", BOOL), ("deleted", BOOL), ("raw", STR),
    ),
    "subscriptions": _schema(
        ("id", STR), ("customer", STR), ("status", STR), ("currency", STR), ("created", TS),
        ("start_date", TS), ("trial_start", TS), ("trial_end", TS),
        ("cancel_at", TS), ("cancel_at_period_end", BOOL), ("canceled_at", TS), ("ended_at", TS),
        # basil+ keeps periods on items; older versions on the subscription. Here: the subscription's own or the
        # earliest start / latest end over its items.
        ("current_period_start", TS), ("current_period_end", TS),
        ("pause_collection_behavior", STR), ("livemode", BOOL), ("raw", STR),
    ),
    # Every item, paged past what the subscription embeds. Primary key (integration, id).
    "subscription_items": _schema(
        ("id", STR), ("subscription", STR), ("price", STR), ("quantity", I64), ("created", TS),
        ("current_period_start", TS), ("current_period_end", TS), ("raw", STR),
    ),
    # Discounts in effect on subscriptions, items and customers. Primary key (integration, id, scope, target):
    # the same discount id can show on a subscription and on its customer.
    "discounts": _schema(
        ("id", STR),
        ("scope", STR),                         # subscription | subscription_item | customer
        ("target", STR),                        # the subscription, item or customer id it is attached to
        ("customer", STR), ("subscription", STR), ("subscription_item", STR),
        ("coupon", STR),                        # coupon id: discount.source.coupon (current) or discount.coupon (old)
        ("start", TS), ("end", TS),
    ),
    "invoices": _schema(
        ("id", STR), ("customer", STR), ("subscription", STR), ("status", STR), ("currency", STR),
        ("created", TS), ("period_start", TS), ("period_end", TS), ("billing_reason", STR),
        ("subtotal", I64), ("total", I64), ("amount_due", I64), ("amount_paid", I64),
        ("paid_at", TS), ("livemode", BOOL), ("raw", STR),
    ),
    # Every line of every invoice (paged through /v1/invoices/{id}/lines past the 10 embedded).
    "invoice_lines": _schema(
        ("id", STR), ("invoice", STR), ("customer", STR),
        ("type", STR),                          # subscription | invoiceitem
        ("subscription", STR), ("subscription_item", STR), ("price", STR),
        ("quantity", I64), ("amount", I64), ("currency", STR),
        ("period_start", TS), ("period_end", TS), ("proration", BOOL), ("raw", STR),
    ),
    # Pending invoice items (/v1/invoiceitems?pending=true): prorations a subscription update created that no
    # invoice holds yet. They date a change until the next renewal invoices them (then they are invoice lines).
    # `date` is when the item was created (the change, for a proration).
    "invoice_items": _schema(
        ("id", STR), ("customer", STR), ("subscription", STR), ("subscription_item", STR), ("price", STR),
        ("quantity", I64), ("amount", I64), ("currency", STR), ("date", TS),
        ("period_start", TS), ("period_end", TS), ("proration", BOOL), ("invoice", STR), ("raw", STR),
    ),
    # customer.subscription.*, invoice.*, price.*, coupon.* ... of the last 30 days, as listed.
    "events": _schema(
        ("id", STR), ("type", STR), ("created", TS), ("api_version", STR),
        ("object_type", STR), ("object_id", STR),
        ("previous_attributes", STR),           # JSON text of data.previous_attributes, or null
        ("data_object", STR),                   # JSON text of data.object (in the event's api_version)
    ),
    # Objects that could not be turned into rows: kept with the reason, never silently dropped.
    "quarantine": _schema(
        ("object_type", STR), ("object_id", STR), ("reason", STR), ("raw", STR), ("synced_at", TS),
    ),
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    **{name: ("integration", "id") for name in TABLES},
    "price_tiers": ("integration", "price", "tier_index"),
    "discounts": ("integration", "id", "scope", "target"),
    "quarantine": ("integration", "object_type", "object_id"),
}

# Tables that keep objects Stripe deleted, flagged `deleted = true` (Stripe stops listing them).
DELETABLE = tuple(name for name, schema in TABLES.items() if "deleted" in schema.names)

# When a row's object was fetched, on the sync's clock: (request started << 32) | (answer arrived). A sync hands
# its rows to the sink with this column; the sink uses it to order two versions of one object and drops it before
# the rows land in `stripe.*`.
FETCHED = "_fetched"
FETCH_BITS = 32


def fetch_tag(started: int, arrived: int) -> int:
    return (started << FETCH_BITS) | arrived


@dataclass(frozen=True)
class SyncState:
    """Where the last successful sync of an integration left off, and which account it read (`stripe.sync_state`).

    `source` names the account without the key: the key's mode and its masked form (`sk_test_…abcd`, as shown
    in the dashboard). A cursor of one account must never drive an incremental sync of another.
    """

    integration: str
    last_event_id: str | None
    last_event_created: dt.datetime | None
    last_full_sync_at: dt.datetime | None
    last_sync_at: dt.datetime | None
    last_mode: str | None
    source: str | None = None
