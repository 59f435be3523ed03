"""From each subscription's MRR intervals to the published daily series and its customer movements (docs/mrr.md
sections 1 and 6).

Belongs here: rounding each customer's MRR per day half-up to 0.01 (the only rounding), classifying each change
(new, expansion, reactivation, contraction, churned), `daily_mrr` (metrics.mrr_daily) and `customer_movements`
(metrics.mrr_customer_movements). Values change only at change points, so the work is done on change points with
cumulative sums; only the final per-currency series is expanded to one row per day.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.transform import money


MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")

# metrics.mrr_daily (docs/tables.md), in this column order.
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "date": pl.Date(),
    "currency": pl.Utf8(),
    "mrr": pl.Decimal(18, 2),
    "arr": pl.Decimal(18, 2),
    "active_subscriptions": pl.Int32(),
    "paying_customers": pl.Int32(),
    **{name: pl.Decimal(18, 2) for name in MOVEMENTS},
}

# metrics.mrr_customer_movements: one row per customer, currency and day its (rounded) MRR changed.
CUSTOMER_MOVEMENT_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8, "currency": pl.Utf8, "customer": pl.Utf8, "date": pl.Date,
    "previous_mrr": pl.Decimal(18, 2), "mrr": pl.Decimal(18, 2),
    "movement": pl.Utf8,  # new | expansion | reactivation | contraction | churned
    "amount": pl.Decimal(18, 2),  # positive, as in metrics.mrr_daily
}


def daily_mrr(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """metrics.mrr_daily (DAILY_SCHEMA): one row per (integration, currency, date) from the first day with MRR
    to `today` inclusive, no gaps, sorted by integration, currency, date."""
    series = ["integration", "currency"]
    changes = _customer_changes(intervals, today)
    per_day = changes.group_by(*series, "date").agg(
        pl.col("change").sum(), *[pl.col(m).sum() for m in MOVEMENTS], pl.col("paying_change").sum()
    )
    end = today + dt.timedelta(days=1)
    iv = intervals.filter(pl.col("valid_from") <= today).with_columns(
        pl.min_horizontal(pl.col("valid_to").fill_null(end), pl.lit(end)).alias("to_day")
    )
    # intervals hold only positive MRR, so a subscription is active exactly inside its intervals
    sub_counts = pl.concat([
        iv.select(*series, pl.col("valid_from").alias("date"), pl.lit(1, pl.Int64).alias("sub_change")),
        iv.filter(pl.col("to_day") <= today).select(*series, pl.col("to_day").alias("date"),
                                                    pl.lit(-1, pl.Int64).alias("sub_change")),
    ]).group_by(*series, "date").agg(pl.col("sub_change").sum())
    sparse = (
        per_day.join(sub_counts, on=[*series, "date"], how="full", coalesce=True)
        .with_columns(pl.col(c).fill_null(0) for c in ["change", *MOVEMENTS, "paying_change", "sub_change"])
        .sort(*series, "date")
        .with_columns(
            pl.col("change").cum_sum().over(series, order_by="date").alias("mrr_cents"),
            pl.col("paying_change").cum_sum().over(series, order_by="date").alias("paying"),
            pl.col("sub_change").cum_sum().over(series, order_by="date").alias("subs"),
        )
    )
    starts = sparse.filter(pl.col("mrr_cents") > 0).group_by(series).agg(pl.col("date").min().alias("start"))
    spine = (
        starts.with_columns(pl.date_ranges("start", pl.lit(today), interval="1d").alias("date"))
        .explode("date")
        .drop("start")
    )
    cumulative = ["mrr_cents", "paying", "subs"]
    daily = (
        spine.join(sparse, on=[*series, "date"], how="left")
        .sort(*series, "date")
        .with_columns(pl.col(c).forward_fill().over(series, order_by="date") for c in cumulative)
        .with_columns(pl.col(m).fill_null(0) for m in MOVEMENTS)
    )
    return daily.select(
        "integration", "date", "currency",
        money.cents_to_decimal(pl.col("mrr_cents")).alias("mrr"),
        money.cents_to_decimal(pl.col("mrr_cents") * 12).alias("arr"),
        pl.col("subs").cast(pl.Int32).alias("active_subscriptions"),
        pl.col("paying").cast(pl.Int32).alias("paying_customers"),
        *[money.cents_to_decimal(pl.col(m)).alias(m) for m in MOVEMENTS],
    ).sort("integration", "currency", "date").cast(DAILY_SCHEMA)


def customer_movements(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """metrics.mrr_customer_movements (CUSTOMER_MOVEMENT_SCHEMA): the customer-level rows behind the movements
    of `daily_mrr` (their amounts sum to its columns per day), for logo churn and drill-downs in BI."""
    changes = _customer_changes(intervals, today).filter(pl.col("change") != 0)
    movement = pl.coalesce(*[pl.when(pl.col(m) != 0).then(pl.lit(m.removesuffix("_mrr"))) for m in MOVEMENTS])
    return changes.select(
        "integration", "currency", "customer", "date",
        money.cents_to_decimal(pl.col("prev")).alias("previous_mrr"),
        money.cents_to_decimal(pl.col("cents")).alias("mrr"),
        movement.alias("movement"),
        money.cents_to_decimal(pl.sum_horizontal(*MOVEMENTS)).alias("amount"),
    ).sort("integration", "currency", "customer", "date").cast(CUSTOMER_MOVEMENT_SCHEMA)


def _customer_changes(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """Per (integration, currency, customer) and day its MRR changed: rounded cents before/after and the
    movement amounts in cents."""
    end = today + dt.timedelta(days=1)
    iv = intervals.filter(pl.col("valid_from") <= today).with_columns(
        pl.min_horizontal(pl.col("valid_to").fill_null(end), pl.lit(end)).alias("to_day")
    )
    keys = ["integration", "currency", "customer"]
    deltas = pl.concat([
        iv.select(*keys, pl.col("valid_from").alias("date"), pl.col("mrr_atoms").alias("delta"), "atoms_per_unit"),
        iv.filter(pl.col("to_day") <= today).select(
            *keys, pl.col("to_day").alias("date"), (pl.lit(0, pl.Int128) - pl.col("mrr_atoms")).alias("delta"), "atoms_per_unit"
        ),
    ])
    changes = (
        deltas.group_by(*keys, "date")
        .agg(pl.col("delta").sum(), pl.col("atoms_per_unit").first())
        .sort(*keys, "date")
        .with_columns(pl.col("delta").cum_sum().over(keys, order_by="date").alias("atoms"))
        .with_columns(money.half_up_cents(pl.col("atoms"), pl.col("atoms_per_unit")).alias("cents"))
        .with_columns(
            pl.col("cents").shift(1).over(keys, order_by="date").fill_null(0).alias("prev"),
            (pl.col("cents") > 0).cast(pl.Int64).alias("__pos"),
        )
        .with_columns(pl.col("__pos").cum_sum().over(keys, order_by="date").alias("__seen"))
        # "had MRR before" = some earlier day of the series had it (the count up to the previous change > 0)
        .with_columns(((pl.col("__seen") - pl.col("__pos")) > 0).alias("had_before"))
    )
    cents, prev = pl.col("cents"), pl.col("prev")
    starts = (prev == 0) & (cents > 0)
    return changes.with_columns(
        (cents - prev).alias("change"),
        pl.when(starts & ~pl.col("had_before")).then(cents).otherwise(0).alias("new_mrr"),
        pl.when((prev > 0) & (cents > prev)).then(cents - prev).otherwise(0).alias("expansion_mrr"),
        pl.when(starts & pl.col("had_before")).then(cents).otherwise(0).alias("reactivation_mrr"),
        pl.when((cents > 0) & (cents < prev)).then(prev - cents).otherwise(0).alias("contraction_mrr"),
        pl.when((cents == 0) & (prev > 0)).then(prev).otherwise(0).alias("churned_mrr"),
        ((cents > 0).cast(pl.Int64) - (prev > 0).cast(pl.Int64)).alias("paying_change"),
    )
