"""The MRR drivers (marts.mrr_drivers_monthly: the monthly bridge split by product and billing interval) checked
against the bridge they split (marts.mrr_bridge_monthly).

Belongs here: the predicate behind the `sums_to_bridge` check. Not here: the split itself (SQL,
`dbt_like_sql/marts/mrr_drivers_daily.sql` and `mrr_drivers_monthly.sql`), Dagster or DuckDB.
"""

from __future__ import annotations

import polars as pl

BRIDGE_COLUMNS = ("starting_mrr", "new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr",
                  "ending_mrr")
KEYS = ("integration", "currency", "month")


def bridge_breaks(drivers: pl.DataFrame, bridge: pl.DataFrame) -> pl.DataFrame:
    """Months where the drivers' rows, summed, differ from the bridge in any column by as much as a cent, or where
    one side has the month and the other not (a side without the month counts as 0 everywhere). One row per
    offending (integration, currency, month) with both sides' values."""
    summed = drivers.group_by(*KEYS).agg(*(pl.col(c).sum().alias(f"drivers_{c}") for c in BRIDGE_COLUMNS))
    expected = bridge.select(*KEYS, *(pl.col(c).alias(f"bridge_{c}") for c in BRIDGE_COLUMNS))
    joined = expected.join(summed, on=list(KEYS), how="full", coalesce=True)
    # a missing side: the bridge always has the month, and zero rows of drivers mean zero MRR moved
    same = [pl.col(f"drivers_{c}").fill_null(0) == pl.col(f"bridge_{c}").fill_null(0) for c in BRIDGE_COLUMNS]
    present = pl.col("bridge_starting_mrr").is_not_null()
    return joined.filter(~(pl.all_horizontal(same) & present)).sort(*KEYS)
