"""What the MRR transform reads: its input schema, the frames bundled as `MrrInputs`, and conforming them.

Belongs here: the columns and types the transform reads from each `stripe.*` table (`INPUT_SCHEMAS`, owned here:
whoever loads the tables gives at least these columns; extra columns are dropped, missing ones are null) and the
run's moment as naive UTC. Not here: reading the tables (`warehouse/mrr_inputs.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import polars as pl

from segflow_pipeline.transform.snapshots import SNAPSHOT_SCHEMA

_TS = pl.Datetime("us")  # the raw tables hold naive UTC timestamps
_AMOUNT = pl.Decimal(38, 12)  # Stripe's *_decimal amounts: minor units with up to 12 fractional digits

# The `stripe.*` columns the transform reads, with the types it reads them as.
INPUT_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "subscriptions": {
        "integration": pl.String(), "id": pl.String(), "customer": pl.String(), "status": pl.String(),
        "currency": pl.String(), "created": _TS, "start_date": _TS, "trial_end": _TS, "cancel_at": _TS,
        "cancel_at_period_end": pl.Boolean(), "canceled_at": _TS, "ended_at": _TS, "current_period_start": _TS,
        "current_period_end": _TS,
    },
    "subscription_items": {
        "integration": pl.String(), "id": pl.String(), "subscription": pl.String(), "price": pl.String(),
        "quantity": pl.Int64(), "created": _TS,
    },
    "prices": {
        "integration": pl.String(), "id": pl.String(), "currency": pl.String(), "type": pl.String(),
        "billing_scheme": pl.String(), "tiers_mode": pl.String(), "unit_amount": pl.Int64(),
        "unit_amount_decimal": _AMOUNT, "recurring_interval": pl.String(), "recurring_interval_count": pl.Int64(),
        "recurring_usage_type": pl.String(), "transform_quantity_divide_by": pl.Int64(),
        "transform_quantity_round": pl.String(),
    },
    "price_tiers": {
        "integration": pl.String(), "price": pl.String(), "tier_index": pl.Int64(), "up_to": pl.Int64(),
        "unit_amount": pl.Int64(), "unit_amount_decimal": _AMOUNT, "flat_amount": pl.Int64(),
        "flat_amount_decimal": _AMOUNT,
    },
    "coupons": {
        "integration": pl.String(), "id": pl.String(), "percent_off": _AMOUNT, "amount_off": pl.Int64(),
        "currency": pl.String(), "duration": pl.String(),
    },
    "discounts": {
        "integration": pl.String(), "id": pl.String(), "scope": pl.String(), "target": pl.String(),
        "customer": pl.String(), "subscription": pl.String(), "subscription_item": pl.String(),
        "coupon": pl.String(), "start": _TS, "end": _TS,
    },
    "customers": {"integration": pl.String(), "id": pl.String()},
    "invoice_lines": {
        "integration": pl.String(), "id": pl.String(), "invoice": pl.String(), "type": pl.String(),
        "subscription": pl.String(), "subscription_item": pl.String(), "price": pl.String(),
        "quantity": pl.Int64(), "amount": pl.Int64(), "period_start": _TS, "period_end": _TS,
        "proration": pl.Boolean(),
    },
    "invoice_items": {
        "integration": pl.String(), "id": pl.String(), "subscription": pl.String(),
        "subscription_item": pl.String(), "price": pl.String(), "quantity": pl.Int64(), "amount": pl.Int64(),
        "period_start": _TS, "period_end": _TS, "proration": pl.Boolean(), "invoice": pl.String(),
    },
    "events": {
        "integration": pl.String(), "id": pl.String(), "type": pl.String(), "created": _TS,
        "object_id": pl.String(), "previous_attributes": pl.String(), "data_object": pl.String(),
    },
    # tells paid invoices from failed ones: an unpaid subscription without its status event stops counting at the
    # end of the last *paid* period (docs/mrr.md section 2), never at the end of the invoice it failed to pay
    "invoices": {"integration": pl.String(), "id": pl.String(), "status": pl.String()},
}


@dataclass(frozen=True)
class MrrInputs:
    """The `stripe.*` tables the transform reads (at least the columns of INPUT_SCHEMAS), plus the snapshots
    earlier runs recorded (SNAPSHOT_SCHEMA, may be empty). `invoices` is optional: when given, the unpaid
    fallback (section 2) only trusts lines of paid invoices."""

    subscriptions: pl.DataFrame
    subscription_items: pl.DataFrame
    prices: pl.DataFrame
    price_tiers: pl.DataFrame
    coupons: pl.DataFrame
    discounts: pl.DataFrame
    customers: pl.DataFrame
    invoice_lines: pl.DataFrame
    events: pl.DataFrame
    snapshots: pl.DataFrame
    invoices: pl.DataFrame | None = None
    invoice_items: pl.DataFrame | None = None  # pending invoice items (prorations not invoiced yet)


def _conform(frame: pl.DataFrame | None, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The frame with exactly `schema`'s columns and types; missing columns are null, casts are lenient."""
    if frame is None:
        return pl.DataFrame(schema=schema)
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    return frame.with_columns(missing).select(
        [pl.col(name).cast(dtype, strict=False) for name, dtype in schema.items()]
    )


def conform_inputs(inputs: MrrInputs) -> MrrInputs:
    """The inputs with exactly the columns and types the transform reads (missing columns null)."""
    conformed = {}
    for f in fields(MrrInputs):
        frame = getattr(inputs, f.name)
        if f.name == "snapshots":
            conformed[f.name] = _conform_snapshots(frame)
        elif f.name == "invoices" and frame is None:
            conformed[f.name] = None  # without an invoices table every finalized line counts as paid
        else:
            conformed[f.name] = _conform(frame, INPUT_SCHEMAS[f.name])
    return MrrInputs(**conformed)


def _conform_snapshots(frame: pl.DataFrame | None) -> pl.DataFrame:
    if frame is None or frame.height == 0:
        return pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    keep_mrr = frame.schema.get("mrr") if "mrr" in frame.columns else None
    schema = {**SNAPSHOT_SCHEMA}
    if isinstance(keep_mrr, pl.Decimal):
        schema["mrr"] = keep_mrr  # the recorded scale is the exact value when mrr_num/mrr_den are absent
    return _conform(frame, schema)


def as_of_utc(as_of: dt.datetime | None) -> dt.datetime:
    """The run's moment as naive UTC (the raw tables hold naive UTC timestamps)."""
    if as_of is None:
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if as_of.tzinfo is not None:
        return as_of.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return as_of
