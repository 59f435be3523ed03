"""The MRR transform in one call: `mrr_run` turns the `stripe.*` frames into every `metrics` table the MRR asset
writes and the offending rows of each invariant (docs/mrr.md). The path it takes is described in the package
docstring (`transform/__init__.py`); each step lives in its own module and is re-exported here, so callers name
one module: `mrr.subscription_mrr_intervals`, `mrr.daily_mrr`, `mrr.movement_breaks`, ...

Not here: Dagster, DuckDB or any I/O. Whoever calls `mrr_run` writes the tables only when every invariant holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import live, schemas
from segflow_pipeline.transform.daily import (CUSTOMER_MOVEMENT_SCHEMA, DAILY_SCHEMA, MOVEMENTS, customer_movements,
                                              daily_mrr)
from segflow_pipeline.transform.inputs import INPUT_SCHEMAS, MrrInputs
from segflow_pipeline.transform.intervals import INTERVAL_SCHEMA, subscription_mrr_intervals
from segflow_pipeline.transform.invariants import gap_rows, movement_breaks
from segflow_pipeline.transform.snapshots import SNAPSHOT_SCHEMA, snapshot_rows
from segflow_pipeline.transform.unusable import UNUSABLE_SCHEMA, unusable_rows

__all__ = [
    "CUSTOMER_MOVEMENT_SCHEMA", "DAILY_SCHEMA", "INPUT_SCHEMAS", "INTERVAL_SCHEMA", "MOVEMENTS", "SNAPSHOT_SCHEMA",
    "UNUSABLE_SCHEMA", "MrrInputs", "MrrRun", "customer_movements", "daily_mrr", "gap_rows", "movement_breaks",
    "mrr_run", "schema_failures", "snapshot_rows", "subscription_mrr_intervals", "unusable_rows",
]


@dataclass(frozen=True)
class MrrRun:
    """What one run computes: the tables to write and, per invariant, its offending rows (empty = holds)."""

    daily: pl.DataFrame  # metrics.mrr_daily (DAILY_SCHEMA)
    customer_movements: pl.DataFrame  # metrics.mrr_customer_movements (CUSTOMER_MOVEMENT_SCHEMA)
    snapshots: pl.DataFrame  # today's metrics.mrr_snapshots rows (SNAPSHOT_SCHEMA)
    unusable: pl.DataFrame  # metrics.mrr_unusable_rows (UNUSABLE_SCHEMA)
    # matches_schema, movements_reconcile, one_row_per_day, matches_live_subscriptions -> offending rows
    failures: dict[str, pl.DataFrame]

    @property
    def failed(self) -> list[str]:
        return [name for name, bad in self.failures.items() if bad.height]


def mrr_run(inputs: MrrInputs, options: MrrOptions, now: dt.datetime) -> MrrRun:
    """Every MRR table for the day of `now` and the invariants checked on them. `matches_live_subscriptions`
    compares today's value with the current objects computed by `live.py`, which shares nothing with the
    history rebuild (independent truth)."""
    today = now.date()
    unusable = unusable_rows(inputs)
    intervals = subscription_mrr_intervals(inputs, options=options, as_of=now)
    daily = daily_mrr(intervals, today=today)
    snapshots = snapshot_rows(intervals, day=today)
    failures = {
        "matches_schema": schema_failures(daily, snapshots),
        "movements_reconcile": movement_breaks(daily),
        "one_row_per_day": gap_rows(daily),
        "matches_live_subscriptions": live.live_mrr_mismatches(daily, intervals, inputs, options, now, unusable),
    }
    return MrrRun(daily=daily, customer_movements=customer_movements(intervals, today),
                  snapshots=snapshots, unusable=unusable, failures=failures)


def schema_failures(daily: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """Every Pandera failure of the two tables a run writes and later runs trust: metrics.mrr_daily (keyed by
    currency and date) and today's metrics.mrr_snapshots rows (keyed by subscription and date), with `table`."""
    return pl.concat([
        schemas.failure_cases(schemas.MrrDaily, daily, keys=("currency", "date"))
        .with_columns(pl.lit("metrics.mrr_daily").alias("table")),
        schemas.failure_cases(schemas.MrrSnapshots, snapshots, keys=("subscription", "date"))
        .with_columns(pl.lit("metrics.mrr_snapshots").alias("table")),
    ], how="diagonal_relaxed")
