"""Invariants of metrics.mrr_daily that span rows: each returns the offending rows, empty when it holds.

Belongs here: movements reconcile day over day (docs/mrr.md section 6) and no day is missing. The column types and
per-row rules are the Pandera model in `schemas.py`; today's value against the current objects is `live.py`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl


def movement_breaks(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows where mrr(D) - mrr(D-1) != new + expansion + reactivation - contraction - churned (section 6);
    D-1 is the series' previous row (0 before the first). Columns: integration, currency, date, mrr,
    previous_mrr, mrr_change, movements."""
    series = ["integration", "currency"]
    checked = frame.sort(*series, "date").with_columns(
        pl.col("mrr").shift(1).over(series, order_by="date").fill_null(0).cast(pl.Decimal(18, 2)).alias("previous_mrr"),
    ).with_columns(
        (pl.col("mrr") - pl.col("previous_mrr")).alias("mrr_change"),
        (pl.col("new_mrr") + pl.col("expansion_mrr") + pl.col("reactivation_mrr") - pl.col("contraction_mrr")
         - pl.col("churned_mrr")).alias("movements"),
    )
    return checked.filter(pl.col("mrr_change") != pl.col("movements")).select(
        "integration", "currency", "date", "mrr", "previous_mrr", "mrr_change", "movements"
    )


def gap_rows(frame: pl.DataFrame, today: dt.date | None = None) -> pl.DataFrame:
    """(integration, currency, date) of every day missing between a series' first day and `today` (default:
    the latest date in the frame, which every series must reach)."""
    schema = {"integration": pl.Utf8, "currency": pl.Utf8, "date": pl.Date}
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    end = today if today is not None else frame.get_column("date").max()
    expected = (
        frame.group_by("integration", "currency")
        .agg(pl.col("date").min().alias("start"))
        .with_columns(pl.date_ranges("start", pl.lit(end, pl.Date), interval="1d").alias("date"))
        .explode("date")
        .drop("start")
        .filter(pl.col("date").is_not_null())
    )
    return (
        expected.join(frame.select("integration", "currency", "date"), on=["integration", "currency", "date"],
                      how="anti")
        .sort("integration", "currency", "date")
        .select(list(schema))
        .cast(schema)
    )
