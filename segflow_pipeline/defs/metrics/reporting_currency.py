"""metrics/mrr_daily_reporting: every currency's daily MRR in one reporting currency (SEGFLOW_FX_RATES).

Without SEGFLOW_FX_RATES the asset computes nothing and the table is absent from the working file (and so from the
published one); its checks then report that they were not evaluated.
"""


import dagster as dg
import polars as pl

from segflow_pipeline import config
from segflow_pipeline.defs.checks import blocking_checks
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import MRR_DAILY, MRR_DAILY_REPORTING
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import reporting_currency as rc
from segflow_pipeline.warehouse import tables as wh

CHECKS = {
    "rates_cover_every_day": "Every day of every currency of metrics.mrr_daily has a rate on or before it "
                             "(failures name the currency and its first day without one).",
    "one_row_per_day": "One row per day of metrics.mrr_daily, no day missing and none extra.",
}


def reporting_settings() -> config.ReportingCurrency | None:
    """The run's reporting currency settings; a wrong setting fails the asset with what to fix."""
    try:
        return config.reporting_currency()
    except config.ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def read_rates(settings: config.ReportingCurrency) -> pl.DataFrame:
    """The rates file, checked (RATES_SCHEMA); an unusable file fails the asset naming the line."""
    where = str(settings.rates_file)
    try:
        raw = pl.read_csv(settings.rates_file, infer_schema=False)
        return rc.rates_table(raw, settings.currency, where)
    except (rc.RatesError, pl.exceptions.PolarsError, OSError) as exc:
        raise dg.Failure(description=f"SEGFLOW_FX_RATES: {exc}", allow_retries=False) from None


def not_evaluated(asset_key: dg.AssetKey, checks: dict[str, str]) -> list[dg.AssetCheckResult]:
    return [dg.AssetCheckResult(asset_key=asset_key, check_name=name, passed=True,
                                metadata={"evaluated": False, "why": "SEGFLOW_FX_RATES is not set"})
            for name in checks]


def absent_without_rates(con, schema: str, table: str, asset_key: dg.AssetKey,
                         checks: dict[str, str]) -> dg.MaterializeResult:
    """Without SEGFLOW_FX_RATES the table is absent: an older copy is dropped and the checks are not evaluated."""
    dropped = wh.drop_table(con, schema, table)
    return dg.MaterializeResult(metadata={"computed": False, "why": "SEGFLOW_FX_RATES is not set",
                                          "dropped_old_table": dropped},
                                check_results=not_evaluated(asset_key, checks))


@dg.asset(key=MRR_DAILY_REPORTING, group_name="metrics", kinds={"polars", "duckdb"}, deps=[MRR_DAILY],
          partitions_def=PARTITIONS, description=rc.DAILY_REPORTING_DESCRIPTION,
          check_specs=[dg.AssetCheckSpec(name, asset=MRR_DAILY_REPORTING, blocking=True, description=text)
                       for name, text in CHECKS.items()])
def mrr_daily_reporting(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    integration = integration_of(context)
    settings = reporting_settings()
    with duckdb.integration_connection(integration) as con:
        if settings is None:
            yield absent_without_rates(con, "metrics", "mrr_daily_reporting", MRR_DAILY_REPORTING, CHECKS)
            return
        rates = read_rates(settings)
        daily = wh.read_table(con, "metrics", "mrr_daily", integration.name)
        missing = rc.missing_rates(daily, rates, settings.currency)
        frame = rc.daily_reporting(daily, rates, settings.currency) if missing.height == 0 else None
        failures = {"rates_cover_every_day": missing}  # without every rate there is nothing to count days of
        if frame is not None:
            failures["one_row_per_day"] = rc.reporting_gaps(frame, daily)
        results = yield from blocking_checks(
            failures, f"metrics.mrr_daily_reporting for '{integration.name}':",
            reason=rc.missing_rates_message(missing, settings.currency) if missing.height else None)
        wh.replace_rows(con, "metrics", "mrr_daily_reporting", frame, integration.name)
    latest = frame.filter(pl.col("date") == pl.col("date").max())
    yield dg.MaterializeResult(
        metadata={"dagster/row_count": frame.height, "reporting_currency": settings.currency,
                  "rates_file": dg.MetadataValue.path(str(settings.rates_file)),
                  **({"mrr": dg.MetadataValue.float(float(latest["mrr"][0]))} if latest.height else {}),
                  "last_30_days": preview(frame.sort("date", descending=True), 30)},
        check_results=results)
