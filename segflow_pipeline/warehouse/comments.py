"""What every published table and column means, and writing it into the published file as DuckDB `COMMENT`s.

One source per table: the tables the pipeline writes from Python (`stripe.*`, `metrics.*`) are described in
`PYTHON_TABLES` below; each SQL model describes its own table in its file (first comment line = the table, then
`-- @col name: meaning` lines, read by `sql_models.parse_model`). `published_comments` merges both and `apply`
writes them with `COMMENT ON TABLE` / `COMMENT ON COLUMN`, so a BI tool shows them beside the data.
docs/tables.md says the same for people. No Dagster here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import duckdb


@dataclass(frozen=True)
class TableComment:
    """A table's description and one line per column."""

    description: str
    columns: Mapping[str, str] = field(default_factory=dict)


INTEGRATION = "The configured Stripe account this row belongs to (`default` for STRIPE_API_KEY)."
RAW = "The object exactly as Stripe sent it (JSON text), so nothing Stripe sent is lost."
ID = "Stripe's id of the object."
CREATED = "When the object was created in Stripe (UTC)."
LIVEMODE = "True for live-mode data, false for test mode."
DELETED = "True when Stripe reports the object as deleted."
CURRENCY = "Three-letter ISO currency code, lowercase, as Stripe writes it."
MINOR = "in the currency's minor unit (cents; yen for zero-decimal currencies)"

PYTHON_TABLES: dict[tuple[str, str], TableComment] = {
    ("stripe", "customers"): TableComment("Stripe customers, deleted ones marked.", {
        "integration": INTEGRATION, "id": ID, "created": CREATED, "email": "The customer's email address.",
        "name": "The customer's name.", "currency": "The customer's default currency, if Stripe set one.",
        "deleted": DELETED, "livemode": LIVEMODE, "raw": RAW}),
    ("stripe", "products"): TableComment("Stripe products.", {
        "integration": INTEGRATION, "id": ID, "created": CREATED, "name": "The product's name.",
        "active": "Whether the product can be sold now.", "deleted": DELETED, "raw": RAW}),
    ("stripe", "prices"): TableComment("Stripe prices with their recurring terms; tiers are in stripe.price_tiers.", {
        "integration": INTEGRATION, "id": ID, "created": CREATED, "product": "The product the price belongs to.",
        "currency": CURRENCY, "active": "Whether the price can be used for new purchases.",
        "type": "recurring or one_time.", "billing_scheme": "per_unit or tiered.",
        "tiers_mode": "volume or graduated for tiered prices, else null.",
        "unit_amount": f"Price per unit {MINOR}; null for tiered prices.",
        "unit_amount_decimal": f"Price per unit {MINOR} with Stripe's fractional precision.",
        "recurring_interval": "Billing interval: day, week, month or year; null for one-time prices.",
        "recurring_interval_count": "Number of intervals per billing period (3 with month = quarterly).",
        "recurring_usage_type": "licensed (a fixed quantity) or metered (usage-based, no MRR).",
        "transform_quantity_divide_by": "Stripe's transform_quantity: the quantity is divided by this before "
                                        "pricing.",
        "transform_quantity_round": "How the divided quantity is rounded: up or down.",
        "nickname": "The price's internal name.", "deleted": DELETED, "raw": RAW}),
    ("stripe", "price_tiers"): TableComment("The tiers of tiered prices, in Stripe's order (fetched expanded).", {
        "integration": INTEGRATION, "price": "The tiered price.",
        "tier_index": "Position of the tier, 0 = the lowest.",
        "up_to": "Highest quantity of the tier; null = no upper bound.",
        "unit_amount": f"Price per unit in the tier {MINOR}.",
        "unit_amount_decimal": f"Price per unit in the tier {MINOR}, with fractional precision.",
        "flat_amount": f"Flat fee of the tier {MINOR}.",
        "flat_amount_decimal": f"Flat fee of the tier {MINOR}, with fractional precision."}),
    ("stripe", "coupons"): TableComment("Stripe coupons: percent or amount off, and for how long.", {
        "integration": INTEGRATION, "id": ID, "created": CREATED, "name": "The coupon's name.",
        "percent_off": "Percentage taken off (20 = 20 %), or null.",
        "amount_off": f"Amount taken off per billing period {MINOR}, or null.",
        "currency": "Currency of amount_off.", "duration": "forever, once or repeating.",
        "duration_in_months": "For repeating coupons: how many months it applies.",
        "valid": "Whether the coupon can still be redeemed.", "deleted": DELETED, "raw": RAW}),
    ("stripe", "subscriptions"): TableComment(
        "Every subscription in its latest state (status=all, canceled included).", {
            "integration": INTEGRATION, "id": ID, "customer": "The customer who pays for it.",
            "status": "trialing, active, past_due, unpaid, paused, canceled, incomplete or incomplete_expired.",
            "currency": CURRENCY, "created": CREATED, "start_date": "When the subscription started (UTC).",
            "trial_start": "Start of its trial, if any.", "trial_end": "End of its trial, if any.",
            "cancel_at": "When a scheduled cancellation takes effect, if set.",
            "cancel_at_period_end": "True when it is set to cancel at the end of the current period.",
            "canceled_at": "When cancellation was requested (UTC).",
            "ended_at": "When the subscription ended, if it has.",
            "current_period_start": "Start of the current billing period (the earliest over its items).",
            "current_period_end": "End of the current billing period (the latest over its items).",
            "pause_collection_behavior": "How invoicing is paused (keep_as_draft, mark_uncollectible, void), "
                                         "if paused.",
            "livemode": LIVEMODE, "raw": RAW}),
    ("stripe", "subscription_items"): TableComment(
        "Every subscription item with its price and quantity, paged past what a subscription embeds.", {
            "integration": INTEGRATION, "id": ID, "subscription": "The subscription the item belongs to.",
            "price": "The item's price.", "quantity": "Quantity; null for metered items.", "created": CREATED,
            "current_period_start": "Start of the item's current billing period.",
            "current_period_end": "End of the item's current billing period.", "raw": RAW}),
    ("stripe", "discounts"): TableComment(
        "Discounts in effect on subscriptions, their items and customers, with their coupon.", {
            "integration": INTEGRATION, "id": "Stripe's id of the discount.",
            "scope": "What the discount is attached to: subscription, subscription_item or customer.",
            "target": "The id of the subscription, item or customer it is attached to.",
            "customer": "The customer concerned.", "subscription": "The subscription concerned, if any.",
            "subscription_item": "The subscription item concerned, if any.",
            "coupon": "The coupon applied (discount.source.coupon, or discount.coupon on older API versions).",
            "start": "When the discount started applying.", "end": "When it stops applying; null = never."}),
    ("stripe", "invoices"): TableComment("Every invoice.", {
        "integration": INTEGRATION, "id": ID, "customer": "The customer billed.",
        "subscription": "The subscription billed, if any.",
        "status": "draft, open, paid, uncollectible or void.", "currency": CURRENCY, "created": CREATED,
        "period_start": "Start of the period the invoice covers.", "period_end": "End of that period.",
        "billing_reason": "Why it was created (subscription_cycle, subscription_create, "
                          "subscription_update, manual, ...).",
        "subtotal": f"Total before discounts and tax {MINOR}.", "total": f"Total {MINOR}.",
        "amount_due": f"Amount due {MINOR}.", "amount_paid": f"Amount paid {MINOR}.",
        "paid_at": "When it was paid, if it was.", "livemode": LIVEMODE, "raw": RAW}),
    ("stripe", "invoice_lines"): TableComment("Every invoice line, paged past the 10 an invoice embeds.", {
        "integration": INTEGRATION, "id": ID, "invoice": "The invoice the line is on.",
        "customer": "The customer billed.", "type": "subscription (a regular period) or invoiceitem.",
        "subscription": "The subscription the line bills, if any.",
        "subscription_item": "The subscription item the line bills, if known.", "price": "The line's price.",
        "quantity": "Quantity billed.", "amount": f"Line amount {MINOR}; negative for credits.",
        "currency": CURRENCY, "period_start": "Start of the period the line covers.",
        "period_end": "End of that period.", "proration": "True for a proration (a mid-period change).",
        "raw": RAW}),
    ("stripe", "invoice_items"): TableComment(
        "Pending invoice items: prorations a subscription update created that no invoice holds yet. They date a "
        "change until the next renewal invoices them (then they are invoice lines).", {
            "integration": INTEGRATION, "id": ID, "customer": "The customer to be billed.",
            "subscription": "The subscription whose update created it.",
            "subscription_item": "The subscription item it prorates, when Stripe names it.",
            "price": "The price it prorates.", "quantity": "Quantity prorated.",
            "amount": f"Amount {MINOR}; negative for the credit of the old state, positive for the new one.",
            "currency": CURRENCY, "date": "When it was created: the moment of the change, for a proration.",
            "period_start": "Start of the period it covers (the change).", "period_end": "End of that period.",
            "proration": "True for a proration.", "invoice": "The invoice holding it; null while pending.",
            "raw": RAW}),
    ("stripe", "events"): TableComment(
        "Stripe events of the last 30 days (Stripe keeps no more); they date subscription changes.", {
            "integration": INTEGRATION, "id": ID, "type": "Event type, e.g. customer.subscription.updated.",
            "created": "When the event happened (UTC).", "api_version": "API version the payload is rendered in.",
            "object_type": "Type of data.object (subscription, invoice, ...).",
            "object_id": "Id of data.object.",
            "previous_attributes": "JSON text of data.previous_attributes: the values before the change.",
            "data_object": "JSON text of data.object: the object after the change."}),
    ("stripe", "quarantine"): TableComment(
        "Objects Stripe sent that could not be turned into rows, with the reason (never silently dropped).", {
            "integration": INTEGRATION, "object_type": "Kind of object (subscription, invoice, ...).",
            "object_id": "Its Stripe id, if it had one.", "reason": "Why it could not be read.", "raw": RAW,
            "synced_at": "When the sync met it (UTC)."}),
    ("stripe", "sync_state"): TableComment(
        "Where each integration's last successful sync left off; the next sync continues from there.", {
            "integration": INTEGRATION, "last_event_id": "Newest event read.",
            "last_event_created": "When that event happened: the next incremental sync reads events after it.",
            "last_full_sync_at": "When the last full sync ran.", "last_sync_at": "When the last sync ran.",
            "last_mode": "full or incremental.",
            "source": "Which account the cursor belongs to: the key's mode and masked key, never the key."}),
    ("metrics", "mrr_daily"): TableComment(
        "Daily MRR per integration and currency, with its movements (docs/mrr.md): one row per day, no gaps, "
        "from the first day with MRR to today.", {
            "integration": INTEGRATION, "date": "UTC day; values are the state at the end of that day (for "
                                                "today: at the time of the refresh).",
            "currency": CURRENCY,
            "mrr": "Monthly recurring revenue in major units: the sum of customers' MRR, each rounded to 0.01.",
            "arr": "12 × mrr.", "active_subscriptions": "Subscriptions with MRR > 0.",
            "paying_customers": "Customers with MRR > 0.",
            "new_mrr": "MRR of customers who had none before and never had any (positive).",
            "expansion_mrr": "MRR added by paying customers who now pay more (positive).",
            "reactivation_mrr": "MRR of customers who had MRR before, then none, and pay again (positive).",
            "contraction_mrr": "MRR lost by customers who pay less but still pay (positive).",
            "churned_mrr": "MRR lost by customers whose MRR fell to 0 (positive)."}),
    ("metrics", "mrr_customer_movements"): TableComment(
        "The customer-level rows behind metrics.mrr_daily's movements: one row per customer, currency and day "
        "the customer's MRR changed.", {
            "integration": INTEGRATION, "currency": CURRENCY, "customer": "The Stripe customer id.",
            "date": "UTC day of the change (end of day).", "previous_mrr": "The customer's MRR the day before.",
            "mrr": "The customer's MRR at the end of the day.",
            "movement": "new, expansion, reactivation, contraction or churned.",
            "amount": "Size of the change, positive; per day these sum to metrics.mrr_daily's movement columns."}),
    ("metrics", "mrr_snapshots"): TableComment(
        "Each refresh's MRR per subscription on the day it ran: the exact record later rebuilds of history trust "
        "first.", {
            "integration": INTEGRATION, "date": "The UTC day of the refresh.",
            "subscription": "The Stripe subscription id.", "customer": "Its customer.", "currency": CURRENCY,
            "mrr": "The subscription's MRR that day, rounded half-up to 0.01 major units.",
            "mrr_num": "Exact MRR as a fraction: numerator.",
            "mrr_den": "Exact MRR as a fraction: denominator (major units = mrr_num / mrr_den)."}),
    ("metrics", "mrr_unusable_rows"): TableComment(
        "Stripe rows the MRR transform had to leave out, with the reason (e.g. a subscription without currency).", {
            "integration": INTEGRATION, "object_type": "subscription, subscription_item, price or coupon.",
            "object_id": "Its Stripe id.", "reason": "Why it cannot be used for MRR."}),
}


def published_comments(models: Iterable[object] = (),
                       others: Mapping[tuple[str, str], TableComment] | None = None) -> dict[tuple[str, str], TableComment]:
    """Every table's comments: `PYTHON_TABLES`, `others` (tables other stages build in Python and describe beside
    their code: forecasts, bets, the reporting currency) and, for each SQL model (`sql_models.SqlModel`), its own."""
    merged = {**PYTHON_TABLES, **(others or {})}
    for model in models:
        merged[(model.schema, model.name)] = TableComment(model.description, dict(model.column_comments))
    return merged


def apply(con: duckdb.DuckDBPyConnection, comments: Mapping[tuple[str, str], TableComment]) -> None:
    """`COMMENT ON` every table of `comments` present on `con`, and each of its columns that exists."""
    present: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in con.execute(
            "select schema_name, table_name, column_name from duckdb_columns() "
            "where database_name = current_database()").fetchall():
        present.setdefault((schema, table), set()).add(column)
    for (schema, table), comment in comments.items():
        columns = present.get((schema, table))
        if columns is None:
            continue
        con.execute(f'comment on table "{schema}"."{table}" is {_literal(comment.description)}')
        for column, text in comment.columns.items():
            if column in columns:
                con.execute(f'comment on column "{schema}"."{table}"."{column}" is {_literal(text)}')


def _literal(text: str) -> str:
    # COMMENT ON takes no bound parameters (DuckDB's parser refuses `?` there): a quoted literal, quotes doubled.
    return "'" + text.replace("'", "''") + "'"
