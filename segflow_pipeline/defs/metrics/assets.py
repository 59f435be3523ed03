"""metrics/mrr_daily: daily MRR per integration and currency, with movements (docs/mrr.md)."""


import datetime as dt

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.defs.checks import blocking_checks
from segflow_pipeline.defs.clock import run_as_of
from segflow_pipeline.defs.extract.assets import RAW_KEYS
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import CUSTOMER_MOVEMENTS, MRR_DAILY
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import mrr, schemas
from segflow_pipeline.transform.inputs import INPUT_SCHEMAS
from segflow_pipeline.warehouse.comments import PYTHON_TABLES
from segflow_pipeline.warehouse.mrr_tables import read_mrr_inputs, write_mrr_run

# The published columns, types and rules, from the Pandera model the run validates against (UI: Columns tab).
MRR_DAILY_COLUMNS = pandera_schema_to_dagster_type(schemas.MrrDaily).metadata["schema"]
# Each check's property, as the UI and a failed refresh's summary show it.
CHECKS = {
    "matches_schema": "Every row has the published columns and types (docs/tables.md): no nulls, one row per "
                      "(integration, currency, date), lowercase currency codes, amounts and counts never negative, "
                      "amounts that fit the contract's DECIMAL(18,2) (else an input amount or quantity is absurd), "
                      "arr = 12 × mrr, paying_customers <= active_subscriptions. Today's metrics.mrr_snapshots rows, "
                      "which later runs trust as the past, hold too: one per subscription, exact value "
                      "mrr_num / mrr_den with mrr_den > 0.",
    "movements_reconcile": "Every day, mrr(D) - mrr(D-1) = new + expansion + reactivation - contraction - churned, "
                           "to the cent (docs/mrr.md section 6).",
    "one_row_per_day": "Each (integration, currency) series has a row for every day from its first day to today: "
                       "no gaps.",
    "matches_live_subscriptions": "Today's MRR per currency equals the MRR computed afresh from the current "
                                  "subscription objects (status, items, prices with tiers, discounts) by code that "
                                  "shares nothing with the history rebuild; the subscriptions that differ are named.",
}


class MrrConfig(dg.Config):
    """Overrides of the integration's MRR options (docs/mrr.md); empty = the integration's own."""

    churn_recognition: str = ""  # canceled_at (Stripe's dashboard) | period_end
    discounts: str = ""  # forever (Stripe's default) | all | none

    def options(self, default: MrrOptions) -> MrrOptions:
        """The integration's options (`default`) unless this run overrides them."""
        overrides = {k: v for k, v in {"churn_recognition": self.churn_recognition,
                                        "discounts": self.discounts}.items() if v}
        return MrrOptions.from_mapping(overrides) if overrides else default


@dg.multi_asset(
    specs=[
        dg.AssetSpec(MRR_DAILY, group_name="metrics", kinds={"polars", "duckdb"},
                     deps=[RAW_KEYS[t] for t in INPUT_SCHEMAS],
                     metadata={"dagster/column_schema": MRR_DAILY_COLUMNS},
                     freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26)),
                     description=PYTHON_TABLES[("metrics", "mrr_daily")].description),
        dg.AssetSpec(CUSTOMER_MOVEMENTS, group_name="metrics", kinds={"polars", "duckdb"},
                     deps=[RAW_KEYS[t] for t in INPUT_SCHEMAS],
                     description=PYTHON_TABLES[("metrics", "mrr_customer_movements")].description),
    ],
    check_specs=[dg.AssetCheckSpec(name, asset=MRR_DAILY, blocking=True, description=text)
                 for name, text in CHECKS.items()],
    partitions_def=PARTITIONS,
)
def mrr_daily(context: dg.AssetExecutionContext, config: MrrConfig, duckdb: WarehouseResource):
    """Daily MRR and its customer movements. Every check runs before anything is written: a failure keeps the
    last tables."""
    integration = integration_of(context)
    now = run_as_of(context)
    with duckdb.integration_connection(integration) as con:
        run = mrr.mrr_run(read_mrr_inputs(con, integration.name), config.options(integration.options), now)
        results = yield from blocking_checks(run.failures, f"metrics.mrr_daily for '{integration.name}'",
                                             asset_key=MRR_DAILY)
        write_mrr_run(con, run, integration.name, now.date())
    if run.unusable.height:
        context.log.warning(f"{run.unusable.height} Stripe rows could not be used for MRR "
                            "(see metrics.mrr_unusable_rows)")
    yield dg.MaterializeResult(asset_key=MRR_DAILY, metadata=mrr_metadata(run.daily, now.date(), run.unusable.height),
                               check_results=results)
    yield dg.MaterializeResult(asset_key=CUSTOMER_MOVEMENTS, metadata={
        "dagster/row_count": run.customer_movements.height,
        "last_changes": preview(run.customer_movements.sort("date", descending=True), 15)})


def mrr_metadata(frame: pl.DataFrame, today: dt.date, unusable: int) -> dict:
    latest = frame.filter(pl.col("date") == today)
    metadata: dict = {"dagster/row_count": frame.height, "unusable_rows": unusable}
    for row in latest.iter_rows(named=True):
        metadata[f"mrr_{row['currency']}"] = dg.MetadataValue.float(float(row["mrr"]))
    last_30 = frame.filter(pl.col("date") > today - dt.timedelta(days=30)).sort("currency", "date", descending=[False, True])
    metadata["last_30_days"] = preview(last_30.select("date", "currency", "mrr", "new_mrr", "expansion_mrr",
                                                      "contraction_mrr", "churned_mrr", "reactivation_mrr",
                                                      "paying_customers"), 60)
    return metadata
