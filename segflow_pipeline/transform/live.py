"""Today's MRR from the current Stripe objects alone: the independent side of the `matches_live_subscriptions` check.

Belongs here: the value of every subscription *now* (the run's `as_of`), computed straight from the synced
current objects — status and lifecycle dates, current items, prices with their tiers, coupons and discounts —
by the definition (docs/mrr.md sections 2-4), and the comparison with the published series. Not here: anything
about the past. This module deliberately shares no code with the history rebuild (`history.py`, `intervals.py`
and the steps they call) or with the transform's pricing and discount arithmetic (`pricing.py`): it exists to catch
their mistakes, so it computes the same numbers another way. It uses exact rational arithmetic
(`fractions.Fraction`) per subscription instead of the transform's vectorized common-denominator integers; it
runs once per refresh over the current objects, one value per subscription (its time is measured by
`benchmarks/bench_mrr.py`).

The only thing it takes from the transform is `unusable.unusable_rows`: rows the pipeline reports as unusable (an
unknown status or currency, a price that cannot be read) are left out of both sides, so a bad row is reported
once, as such, instead of also failing this check.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor
from typing import Any

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import currency
from segflow_pipeline.transform.unusable import unusable_rows  # the unusable-row rules only (module docstring)

# Monthly factor of a billing interval (docs/mrr.md section 3), divided by interval_count.
PER_MONTH: dict[str, Fraction] = {"month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12),
                                  "day": Fraction(365, 12)}
COUNTING = ("active", "past_due")

# DECIMAL(38,2), not the contract's (18,2): an absurd input (a quantity of 10^15) must reach the comparison and
# the schema check, not overflow here.
LIVE_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "currency": pl.Utf8(), "mrr": pl.Decimal(38, 2),
    "active_subscriptions": pl.Int32(), "paying_customers": pl.Int32(),
}
MISMATCH_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "currency": pl.Utf8(), "series_mrr": pl.Decimal(38, 2),
    "live_mrr": pl.Decimal(38, 2), "subscription": pl.Utf8(), "customer": pl.Utf8(),
    "series_subscription_mrr": pl.Decimal(38, 6), "live_subscription_mrr": pl.Decimal(38, 6),
}


@dataclass(frozen=True)
class SubscriptionValue:
    integration: str
    subscription: str
    customer: str
    currency: str
    mrr: Fraction  # major units, exact


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    return Fraction(Decimal(str(value))) if not isinstance(value, int) else Fraction(value)


def _unit_amount(decimal_value: Any, integer_value: Any) -> Fraction | None:
    """Minor units per unit: Stripe's `*_decimal` string when present, else the integer."""
    found = _fraction(decimal_value)
    return found if found is not None else _fraction(integer_value)


def _period_amount(price: dict, tiers: list[dict], quantity: int) -> Fraction:
    """Amount per billing period in minor units for `quantity` (docs/mrr.md section 3)."""
    if price["recurring_usage_type"] == "metered":
        return Fraction(0)
    if price["billing_scheme"] == "tiered":
        total, lower = Fraction(0), 0
        for tier in tiers:
            up_to = tier["up_to"]
            unit = _unit_amount(tier["unit_amount_decimal"], tier["unit_amount"]) or Fraction(0)
            flat = _unit_amount(tier["flat_amount_decimal"], tier["flat_amount"]) or Fraction(0)
            if price["tiers_mode"] == "volume":
                if up_to is None or quantity <= up_to:
                    return unit * quantity + flat
            elif quantity > lower:
                top = quantity if up_to is None else min(quantity, up_to)
                total += unit * (top - lower) + flat
            if up_to is None:
                break
            lower = up_to
        return total
    divide_by = price["transform_quantity_divide_by"]
    if divide_by:
        q = Fraction(quantity, divide_by)
        quantity = ceil(q) if price["transform_quantity_round"] == "up" else floor(q)
    return (_unit_amount(price["unit_amount_decimal"], price["unit_amount"]) or Fraction(0)) * quantity


def _cancel_requests(events: pl.DataFrame) -> dict[tuple[str, str], dt.datetime]:
    """(integration, subscription) -> time of the latest event that scheduled its cancellation."""
    found: dict[tuple[str, str], dt.datetime] = {}
    subs = events.filter(pl.col("type").str.starts_with("customer.subscription."))
    for row in subs.select("integration", "object_id", "created", "previous_attributes", "data_object").iter_rows():
        integration, object_id, created, previous, obj = row
        try:
            before = json.loads(previous) if previous else {}
            after = json.loads(obj) if obj else {}
        except ValueError:
            continue
        if not isinstance(before, dict) or not isinstance(after, dict):
            continue
        sub = object_id or after.get("id")
        requested = (after.get("cancel_at_period_end") is True and before.get("cancel_at_period_end") is False) or (
            "cancel_at" in before and after.get("cancel_at") is not None)
        if sub and requested and created is not None:
            key = (integration, sub)
            found[key] = max(found.get(key, created), created)
    return found


def _counts_now(sub: dict, requested: dt.datetime | None, options: MrrOptions, now: dt.datetime) -> bool:
    """Does the subscription count at `now` (docs/mrr.md section 2)?"""
    status = sub["status"]
    start = sub["start_date"] or sub["created"]
    if start is None or start > now:
        return False
    trial_end = sub["trial_end"]
    if status == "trialing" and trial_end is None:
        return False
    if trial_end is not None and trial_end > now:
        return False  # trialing: counts from trial_end on, as active
    scheduled = bool(sub["cancel_at_period_end"]) or sub["cancel_at"] is not None
    if options.churn_recognition == "period_end":
        scheduled_stop = sub["cancel_at"] or sub["current_period_end"] or sub["ended_at"]
    else:
        scheduled_stop = sub["canceled_at"] or requested or sub["cancel_at"] or sub["ended_at"]
    if status == "canceled":
        stop = scheduled_stop if scheduled else (sub["ended_at"] or sub["canceled_at"])
        return stop is not None and stop > now
    if status not in (*COUNTING, "trialing"):
        return False  # unpaid, paused, incomplete, incomplete_expired: not now
    return not (scheduled and scheduled_stop is not None and scheduled_stop <= now)


def _in_effect(discount: dict, coupon: dict, options: MrrOptions, now: dt.datetime) -> bool:
    if options.discounts == "none":
        return False
    if options.discounts == "forever" and coupon["duration"] != "forever":
        return False
    return (discount["start"] is None or discount["start"] <= now) and (discount["end"] is None or
                                                                         discount["end"] > now)


def _discounted(amount: Fraction, coupons: list[dict], per_minor: Fraction) -> Fraction:
    """Percentages multiply, then each amount_off (minor units per billing period) is taken once, normalized."""
    if not coupons:
        return amount
    for coupon in coupons:
        if coupon["percent_off"] is not None:
            amount *= 1 - _fraction(coupon["percent_off"]) / 100
    for coupon in coupons:
        if coupon["amount_off"]:
            amount -= coupon["amount_off"] * per_minor
    return max(Fraction(0), amount)


def subscription_values(inputs: Any, unusable: pl.DataFrame, options: MrrOptions = MrrOptions(),
                        as_of: dt.datetime | None = None) -> list[SubscriptionValue]:
    """The exact MRR at `as_of` of every subscription that counts then, from the current objects only.

    `inputs` is an `inputs.MrrInputs` (raw `stripe.*` frames); `unusable` is `unusable_rows(inputs)`.
    """
    now = _naive_utc(as_of or dt.datetime.now(dt.timezone.utc))
    bad = {(r[0], r[1], r[2]) for r in unusable.select("integration", "object_type", "object_id").iter_rows()}
    prices = {(r["integration"], r["id"]): r for r in inputs.prices.iter_rows(named=True)}
    tiers: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in inputs.price_tiers.sort("tier_index").iter_rows(named=True):
        tiers[(r["integration"], r["price"])].append(r)
    coupons = {(r["integration"], r["id"]): r for r in inputs.coupons.iter_rows(named=True)}
    items: dict[tuple[str, str], list[tuple[str, str, int | None]]] = defaultdict(list)
    for integration, sub_id, item_id, price_id, quantity in inputs.subscription_items.select(
            "integration", "subscription", "id", "price", "quantity").iter_rows():
        items[(integration, sub_id)].append((item_id, price_id, quantity))
    by_target: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    own: set[tuple[str, str]] = set()
    for r in inputs.discounts.iter_rows(named=True):
        by_target[(r["integration"], r["scope"], r["target"])].append(r)
        if r["scope"] == "subscription":
            own.add((r["integration"], r["target"]))
    requests = _cancel_requests(inputs.events) if options.churn_recognition != "period_end" else {}

    def coupons_of(integration: str, scope: str, target: str, cur: str) -> list[dict]:
        chosen: list[dict] = []
        for d in by_target.get((integration, scope, target), ()):
            coupon = coupons.get((integration, d["coupon"]))
            if coupon is None or (integration, "coupon", d["coupon"]) in bad:
                continue
            if coupon["amount_off"] and (coupon["currency"] or "").lower() != cur:
                continue  # amount_off is in the coupon's currency: only subscriptions billed in it
            if _in_effect(d, coupon, options, now):
                chosen.append(coupon)
        return chosen

    # (integration, price, quantity, currency) -> (monthly value in major units, monthly factor per minor unit);
    # None when the price cannot be used. Most items share a handful of prices and quantities.
    item_values: dict[tuple[str, str, int, str], tuple[Fraction, Fraction] | None] = {}

    def item_value(integration: str, price_id: str, quantity: int, cur: str) -> tuple[Fraction, Fraction] | None:
        key = (integration, price_id, quantity, cur)
        if key not in item_values:
            price = prices.get((integration, price_id))
            if (price is None or (integration, "price", price_id) in bad
                    or price["recurring_interval"] not in PER_MONTH):
                item_values[key] = None
            else:
                factor = (PER_MONTH[price["recurring_interval"]] / (price["recurring_interval_count"] or 1)
                          / 10 ** currency.exponent(cur))
                amount = _period_amount(price, tiers.get((integration, price_id), []), quantity)
                item_values[key] = (amount * factor, factor)
        return item_values[key]

    columns = ("integration", "id", "customer", "status", "currency", "created", "start_date", "trial_end",
               "cancel_at", "cancel_at_period_end", "canceled_at", "ended_at", "current_period_end")
    out: list[SubscriptionValue] = []
    for sub in inputs.subscriptions.select(columns).iter_rows(named=True):
        integration, sid = sub["integration"], sub["id"]
        if (integration, "subscription", sid) in bad or sub["customer"] is None:
            continue
        if not _counts_now(sub, requests.get((integration, sid)), options, now):
            continue
        cur = (sub["currency"] or "").lower()
        total, per_minor_off = Fraction(0), None
        for item_id, price_id, quantity in items.get((integration, sid), ()):
            if (integration, "subscription_item", item_id) in bad:
                continue
            valued = item_value(integration, price_id, 1 if quantity is None else quantity, cur)
            if valued is None:
                continue
            value, factor = valued
            per_minor_off = factor if per_minor_off is None else min(per_minor_off, factor)
            total += _discounted(value, coupons_of(integration, "subscription_item", item_id, cur), factor)
        sub_coupons = coupons_of(integration, "subscription", sid, cur)
        if (integration, sid) not in own:
            sub_coupons = coupons_of(integration, "customer", sub["customer"], cur)
        total = _discounted(total, sub_coupons, per_minor_off or Fraction(0))
        if total > 0:
            out.append(SubscriptionValue(integration, sid, sub["customer"], cur, total))
    return out


def _cents(value: Fraction) -> int:
    return floor(value * 100 + Fraction(1, 2))


def current_mrr_from(values: list[SubscriptionValue]) -> pl.DataFrame:
    """MRR per (integration, currency) from subscription values: each customer's sum rounded half-up to 0.01,
    then summed (docs/mrr.md section 1). LIVE_SCHEMA."""
    customers: dict[tuple[str, str, str], Fraction] = defaultdict(Fraction)
    subscriptions: dict[tuple[str, str], int] = defaultdict(int)
    for v in values:
        customers[(v.integration, v.currency, v.customer)] += v.mrr
        subscriptions[(v.integration, v.currency)] += 1
    cents: dict[tuple[str, str], int] = defaultdict(int)
    paying: dict[tuple[str, str], int] = defaultdict(int)
    for (integration, cur, _), value in customers.items():
        rounded = _cents(value)
        cents[(integration, cur)] += rounded
        paying[(integration, cur)] += rounded > 0
    rows = [(i, c, Decimal(cents[(i, c)]) / 100, subscriptions[(i, c)], paying[(i, c)])
            for (i, c) in sorted(cents)]
    return pl.DataFrame(rows, schema=LIVE_SCHEMA, orient="row")


def current_mrr(inputs: Any, options: MrrOptions = MrrOptions(), as_of: dt.datetime | None = None) -> pl.DataFrame:
    """Today's MRR per (integration, currency) computed from the current objects alone (LIVE_SCHEMA)."""
    return current_mrr_from(subscription_values(inputs, unusable_rows(inputs), options, as_of))


def mismatches(series_today: pl.DataFrame, series_subscriptions: pl.DataFrame,
               values: list[SubscriptionValue]) -> pl.DataFrame:
    """Where today's published MRR differs from the current objects' (MISMATCH_SCHEMA), one row per subscription
    valued differently (a currency whose total differs without any such subscription gets one row without).

    `series_today`: integration, currency, mrr (today's rows of the series); `series_subscriptions`:
    integration, subscription, customer, currency, mrr_atoms, atoms_per_unit (each subscription's value today in
    the series). Empty when they agree.
    """
    live = current_mrr_from(values)
    totals = (
        series_today.select("integration", "currency", pl.col("mrr").cast(pl.Decimal(38, 2)).alias("series_mrr"))
        .join(live.select("integration", "currency", pl.col("mrr").alias("live_mrr")),
              on=["integration", "currency"], how="full", coalesce=True)
        .with_columns(pl.col("series_mrr", "live_mrr").fill_null(Decimal(0)))
        .filter(pl.col("series_mrr") != pl.col("live_mrr"))
    )
    if totals.height == 0:
        return pl.DataFrame(schema=MISMATCH_SCHEMA)
    wrong = {(r[0], r[1]): (r[2], r[3]) for r in totals.iter_rows()}
    series_values = {(r[0], r[1]): (r[2], r[3], Fraction(int(r[4]), int(r[5])))
                     for r in series_subscriptions.select("integration", "subscription", "customer", "currency",
                                                          "mrr_atoms", "atoms_per_unit").iter_rows()}
    live_values = {(v.integration, v.subscription): (v.customer, v.currency, v.mrr) for v in values}
    rows, named = [], set()
    for key in sorted(set(series_values) | set(live_values)):
        customer, cur, a = series_values.get(key, (None, None, Fraction(0)))
        live_customer, live_cur, b = live_values.get(key, (None, None, Fraction(0)))
        cur, customer = cur or live_cur, customer or live_customer
        if a == b or (key[0], cur) not in wrong:
            continue
        named.add((key[0], cur))
        rows.append((key[0], cur, *wrong[(key[0], cur)], key[1], customer,
                     _decimal(a), _decimal(b)))
    rows += [(i, c, *wrong[(i, c)], None, None, None, None) for (i, c) in sorted(wrong) if (i, c) not in named]
    return pl.DataFrame(rows, schema=MISMATCH_SCHEMA, orient="row")


def _decimal(value: Fraction) -> Decimal:
    """A subscription's value for the report, to 6 places (huge values included: they are what a reader must see)."""
    return round(Decimal(value.numerator) / Decimal(value.denominator), 6)


def live_mrr_mismatches(frame: pl.DataFrame, intervals: pl.DataFrame, inputs: Any,
                        options: MrrOptions = MrrOptions(), as_of: dt.datetime | None = None,
                        unusable: pl.DataFrame | None = None) -> pl.DataFrame:
    """The `matches_live_subscriptions` predicate: today's rows of the published series (`frame`, built from
    `intervals`) against the current objects in `inputs`, valued here without the history rebuild. Offending
    rows (MISMATCH_SCHEMA) name each subscription valued differently; empty when today agrees to the cent."""
    now = _naive_utc(as_of or dt.datetime.now(dt.timezone.utc))
    today = now.date()
    unusable = unusable_rows(inputs) if unusable is None else unusable
    values = subscription_values(inputs, unusable, options, now)
    counting_today = intervals.filter(
        (pl.col("valid_from") <= today) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > today)))
    return mismatches(frame.filter(pl.col("date") == today), counting_today, values)
