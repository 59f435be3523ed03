"""What a run records of each subscription's MRR for today, and how later runs read it back (docs/mrr.md
section 5, rule 1: the pipeline's own snapshots are the most trusted source of the past).

Belongs here: the `metrics.mrr_snapshots` schema, the rows a run writes (`snapshot_rows`) and reading recorded rows
back as exact values, covered day ranges and runs of equal value. Not here: how they win over other sources
(`intervals.py`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.transform import money

# metrics.mrr_snapshots: what a run records per subscription for today, read back by later runs (section 5,
# rule 1). `mrr` is the subscription's MRR rounded half-up to 0.01 for people reading the table; the exact
# value is mrr_num / mrr_den (DECIMAL(38,0) integers), which is what later runs use.
SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "date": pl.Date(),
    "subscription": pl.Utf8(),
    "customer": pl.Utf8(),
    "currency": pl.Utf8(),
    "mrr": pl.Decimal(18, 2),
    "mrr_num": pl.Decimal(38, 0),
    "mrr_den": pl.Decimal(38, 0),
}


def snapshot_rows(intervals: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Each subscription's MRR on `day` as metrics.mrr_snapshots rows (SNAPSHOT_SCHEMA), exact in
    mrr_num / mrr_den; subscriptions without MRR are not listed."""
    live = intervals.filter(
        (pl.col("valid_from") <= day) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > day))
    )
    return live.select(
        "integration",
        pl.lit(day, pl.Date).alias("date"),
        "subscription", "customer", "currency",
        money.cents_to_decimal(money.half_up_cents(pl.col("mrr_atoms"), pl.col("atoms_per_unit"))).alias("mrr"),
        pl.col("mrr_atoms").cast(pl.Decimal(38, 0)).alias("mrr_num"),
        pl.col("atoms_per_unit").cast(pl.Decimal(38, 0)).alias("mrr_den"),
    ).sort("integration", "subscription").cast(SNAPSHOT_SCHEMA)


def snapshot_exact(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Snapshot rows with their exact value as num/den (Int128): `mrr_num`/`mrr_den` when recorded, else the
    `mrr` decimal at its own scale."""
    mrr_dtype = snapshots.schema.get("mrr")
    scale = getattr(mrr_dtype, "scale", None) or 0
    frame = snapshots
    for name in ("mrr_num", "mrr_den"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Int128).alias(name))
    from_decimal = (
        pl.col("mrr").cast(pl.Decimal(38, scale)).to_physical().cast(pl.Int128)
        if isinstance(mrr_dtype, pl.Decimal)
        else pl.lit(None, pl.Int128)
    )
    exact = pl.col("mrr_num").is_not_null() & pl.col("mrr_den").is_not_null() & (pl.col("mrr_den").cast(pl.Int128) > 0)
    return frame.select(
        "integration", "date", "subscription", "customer", pl.col("currency").str.to_lowercase(),
        pl.when(exact).then(pl.col("mrr_num").cast(pl.Int128)).otherwise(from_decimal).alias("num"),
        pl.when(exact).then(pl.col("mrr_den").cast(pl.Int128)).otherwise(pl.lit(10**scale, pl.Int128)).alias("den"),
    ).filter(pl.col("num").is_not_null() & (pl.col("num") >= 0))


def snapshot_cover(exact: pl.DataFrame) -> pl.DataFrame:
    """Day ranges each integration has snapshots for (integration, from_day, to_day): on those days the
    snapshot is the whole truth, a subscription missing from it had no MRR."""
    days = exact.select("integration", "date").unique().sort("integration", "date")
    gap = pl.col("date") - pl.col("date").shift(1).over("integration", order_by="date") != dt.timedelta(days=1)
    return (
        days.with_columns(gap.fill_null(True).cast(pl.Int64).alias("new_run"))
        .with_columns(pl.col("new_run").cum_sum().over("integration", order_by="date").alias("run"))
        .group_by("integration", "run")
        .agg(pl.col("date").min().alias("from_day"), (pl.col("date").max() + dt.timedelta(days=1)).alias("to_day"))
        .drop("run")
        .sort("integration", "from_day")
    )


def snapshot_runs(exact: pl.DataFrame, atoms_per_unit: int) -> pl.DataFrame:
    """Snapshot values as runs of equal value per subscription (integration, subscription, customer, currency,
    from_day, to_day, atoms) on the run's common denominator."""
    keys = ["integration", "subscription"]
    frame = (
        exact.with_columns((pl.col("num") * (pl.lit(atoms_per_unit, pl.Int128) // pl.col("den"))).alias("atoms"))
        .sort(*keys, "date")
    )
    new_run = (
        (pl.col("date") - pl.col("date").shift(1).over(keys, order_by="date") != dt.timedelta(days=1))
        | (pl.col("atoms") != pl.col("atoms").shift(1).over(keys, order_by="date"))
    ).fill_null(True)
    return (
        frame.with_columns(new_run.cast(pl.Int64).alias("new_run"))
        .with_columns(pl.col("new_run").cum_sum().over(keys, order_by="date").alias("run"))
        .group_by(*keys, "run")
        .agg(
            pl.col("customer").first(),
            pl.col("currency").first(),
            pl.col("date").min().alias("from_day"),
            (pl.col("date").max() + dt.timedelta(days=1)).alias("to_day"),
            pl.col("atoms").first(),
        )
        .drop("run")
    )
