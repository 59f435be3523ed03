"""metrics/mrr_daily: daily MRR per integration and currency, with movements (docs/mrr.md)."""


import datetime as dt

import dagster as dg
import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.defs.clock import run_as_of
from segflow_pipeline.defs.extract.assets import RAW_KEYS
from segflow_pipeline.defs.keys import CUSTOMER_MOVEMENTS, MRR_DAILY
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.reporting import failure_metadata, preview
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import live, mrr, schemas
from segflow_pipeline.warehouse import tables as wh
from segflow_pipeline.warehouse.comments import PYTHON_TABLES

# `invoices` tells paid invoices from failed ones: an unpaid subscription without its status event stops counting at
# the end of the last *paid* period (docs/mrr.md section 2), never at the end of the invoice it failed to pay.
INPUT_TABLES = ("subscriptions", "subscription_items", "prices", "price_tiers", "coupons", "discounts", "customers",
                "invoice_lines", "invoice_items", "events", "invoices")
# Each check's property, as the UI and a failed refresh's summary show it.
CHECKS = {
    "matches_schema": "Every row has the published columns and types (docs/tables.md): no nulls, one row per "
                      "(integration, currency, date), lowercase currency codes, amounts and counts never negative, "
                      "amounts that fit the contract's DECIMAL(18,2) (else an input amount or quantity is absurd), "
                      "arr = 12 × mrr, paying_customers <= active_subscriptions.",
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


@dg.multi_asset(
    specs=[
        dg.AssetSpec(MRR_DAILY, group_name="metrics", kinds={"polars", "duckdb"},
                     deps=[RAW_KEYS[t] for t in INPUT_TABLES],
                     freshness_policy=dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26)),
                     description=PYTHON_TABLES[("metrics", "mrr_daily")].description),
        dg.AssetSpec(CUSTOMER_MOVEMENTS, group_name="metrics", kinds={"polars", "duckdb"},
                     deps=[RAW_KEYS[t] for t in INPUT_TABLES],
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
    options = MrrOptions.from_mapping({k: v for k, v in {"churn_recognition": config.churn_recognition,
                                                         "discounts": config.discounts}.items() if v}
                                      ) if (config.churn_recognition or config.discounts) else integration.options
    now = run_as_of(context)
    today = now.date()
    with duckdb.integration_connection(integration.name) as con:
        frames = {t: wh.read_table(con, "stripe", t, integration.name) for t in INPUT_TABLES}
        snapshots = (wh.read_table(con, "metrics", "mrr_snapshots", integration.name)
                     if wh.table_exists(con, "metrics", "mrr_snapshots") else pl.DataFrame(schema=mrr.SNAPSHOT_SCHEMA))
        inputs = mrr.MrrInputs(**frames, snapshots=snapshots)
        unusable = mrr.unusable_rows(inputs)
        intervals = mrr.subscription_mrr_intervals(inputs, options=options, as_of=now)
        frame = mrr.daily_mrr(intervals, today=today)
        movements = mrr.customer_movements(intervals, today)
        failures = {
            "matches_schema": schemas.failure_cases(schemas.MrrDaily, frame, keys=("currency", "date")),
            "movements_reconcile": mrr.movement_breaks(frame),
            "one_row_per_day": mrr.gap_rows(frame),
            "matches_live_subscriptions": live.live_mrr_mismatches(frame, intervals, inputs, options, now, unusable),
        }
        results = [dg.AssetCheckResult(asset_key=MRR_DAILY, check_name=name, passed=bad.height == 0,
                                       metadata=failure_metadata(bad) if bad.height else {"failing_rows": 0})
                   for name, bad in failures.items()]
        failed = [name for name, bad in failures.items() if bad.height]
        if failed:
            for result in results:
                yield result
            raise dg.Failure(
                f"metrics.mrr_daily for '{integration.name}' fails {', '.join(failed)}; nothing was written and the "
                "published table is unchanged. See the check results for the offending rows.")
        wh.replace_rows(con, "metrics", "mrr_daily", frame, integration.name)
        wh.replace_rows(con, "metrics", "mrr_customer_movements", movements, integration.name)
        wh.replace_rows(con, "metrics", "mrr_snapshots", mrr.snapshot_rows(intervals, day=today), integration.name,
                        where={"date": today})
        wh.replace_rows(con, "metrics", "mrr_unusable_rows", unusable.with_columns(
            pl.lit(integration.name).alias("integration")), integration.name)
    if unusable.height:
        context.log.warning(f"{unusable.height} Stripe rows could not be used for MRR (see metrics.mrr_unusable_rows)")
    yield dg.MaterializeResult(asset_key=MRR_DAILY, metadata=mrr_metadata(frame, today, unusable.height),
                               check_results=results)
    yield dg.MaterializeResult(asset_key=CUSTOMER_MOVEMENTS, metadata={
        "dagster/row_count": movements.height, "last_changes": preview(movements.sort("date", descending=True), 15)})


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
