"""marts/kpis_monthly_reporting: the monthly KPIs of all currencies together in the reporting currency.

Built in Polars from marts.kpis_monthly (per currency) and metrics.mrr_daily_reporting, with the rates of
SEGFLOW_FX_RATES; without that setting nothing is computed and the table is absent.
"""


import dagster as dg

from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.checks import blocking_checks
from segflow_pipeline.defs.keys import MRR_DAILY_REPORTING
from segflow_pipeline.defs.metrics.reporting_currency import absent_without_rates, read_rates, reporting_settings
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import reporting_currency as rc
from segflow_pipeline.warehouse import tables as wh

KPIS_MONTHLY = dg.AssetKey(["marts", "kpis_monthly"])
KPIS_MONTHLY_REPORTING = dg.AssetKey(["marts", "kpis_monthly_reporting"])
CHECKS = {
    "agrees_with_kpis_monthly": "Starting and ending MRR equal marts.kpis_monthly's per-currency values converted at "
                                "the rates of those days, and the cohorts' start equals starting MRR.",
    "rates_in_range": "GRR and logo churn between 0 and 1; NRR, quick ratio, MRR and movements not negative.",
}


@dg.asset(key=KPIS_MONTHLY_REPORTING, group_name="marts", kinds={"polars", "duckdb"},
          deps=[KPIS_MONTHLY, MRR_DAILY_REPORTING], partitions_def=PARTITIONS,
          description=rc.KPIS_REPORTING_DESCRIPTION,
          check_specs=[dg.AssetCheckSpec(name, asset=KPIS_MONTHLY_REPORTING, blocking=True, description=text)
                       for name, text in CHECKS.items()])
def kpis_monthly_reporting(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    integration = integration_of(context)
    settings = reporting_settings()
    with duckdb.integration_connection(integration) as con:
        if settings is None:
            yield absent_without_rates(con, "marts", "kpis_monthly_reporting", KPIS_MONTHLY_REPORTING, CHECKS)
            return
        rates = read_rates(settings)
        kpis = wh.read_table(con, "marts", "kpis_monthly", integration.name)
        daily = wh.read_table(con, "metrics", "mrr_daily_reporting", integration.name)
        frame = rc.kpis_reporting(kpis, daily, rates, settings.currency)
        failures = {"agrees_with_kpis_monthly": rc.conversion_mismatches(frame, kpis, rates, settings.currency),
                    "rates_in_range": rc.kpi_range_breaks(frame)}
        results = yield from blocking_checks(failures, f"marts.kpis_monthly_reporting for '{integration.name}'")
        wh.replace_rows(con, "marts", "kpis_monthly_reporting", frame, integration.name)
    yield dg.MaterializeResult(
        metadata={"dagster/row_count": frame.height, "reporting_currency": settings.currency,
                  "last_12_months": preview(frame.sort("month", descending=True), 12)},
        check_results=results)
