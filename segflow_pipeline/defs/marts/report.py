"""marts/mrr_report: MRR charts and an HTML report per integration, published beside the DuckDB file BI reads.

Files: `<dir of SEGFLOW_DUCKDB_PATH>/reports/<integration>/mrr.html` (self-contained), which opens with this month's
headline KPIs and the last 12 months, and the charts it shows as PNGs beside it: `kpis.png`, `cohorts.png`,
`mrr.png`, `bridge.png`, and `total.png` when a reporting currency is set. The charts also show in the asset's
metadata in the Dagster UI. Rendering lives in `reporting/charts.py`.
The report comes after the publish of the data (`publish/segflow_duckdb`), off its path: a chart that cannot be
drawn fails this asset only, and the run's data is published all the same. It reads the account's working file as
that publish left it, writes its files aside and moves them into place itself, all at once
(`warehouse/files.publish_reports`), so readers see the previous report or the new one, never half of one, and
never charts newer than the published data.
"""


import datetime as dt
import shutil

import dagster as dg

from segflow_pipeline.defs.clock import run_as_of
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import MRR_BRIDGE_MONTHLY, MRR_DAILY, MRR_DAILY_REPORTING
from segflow_pipeline.defs.marts.reporting_currency import KPIS_MONTHLY, KPIS_MONTHLY_REPORTING
from segflow_pipeline.defs.metrics import forecast as forecast_section
from segflow_pipeline.defs.publish.assets import PUBLISHED
from segflow_pipeline.reporting import charts
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.stripe_api.keys import redact
from segflow_pipeline.warehouse import files as wh_files
from segflow_pipeline.warehouse import tables as wh

MRR_REPORT = dg.AssetKey(["marts", "mrr_report"])
COHORT_RETENTION = dg.AssetKey(["marts", "cohort_retention"])


@dg.asset(key=MRR_REPORT, group_name="marts", kinds={"python", "html"},
          deps=[MRR_DAILY, MRR_BRIDGE_MONTHLY, KPIS_MONTHLY, COHORT_RETENTION, MRR_DAILY_REPORTING,
                KPIS_MONTHLY_REPORTING, *forecast_section.REPORT_DEPS, PUBLISHED],
          partitions_def=PARTITIONS)
def mrr_report(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """This month's headline KPIs and the last 12 months per currency (MRR, net new MRR, NRR, GRR, logo churn, ARPA),
    cohort retention heat maps, MRR and its monthly movements, and the total in the reporting currency when one is
    set: PNG charts and one HTML page beside the DuckDB file, once the data is published."""
    integration = integration_of(context)
    with duckdb.integration_connection(integration) as con:
        daily = wh.read_table(con, "metrics", "mrr_daily", integration.name)
        bridge = wh.read_table(con, "marts", "mrr_bridge_monthly", integration.name)
        kpis = wh.read_table(con, "marts", "kpis_monthly", integration.name)
        cohorts = wh.read_table(con, "marts", "cohort_retention", integration.name)
        # present only with a reporting currency (SEGFLOW_FX_RATES)
        reporting = wh.table_exists(con, "metrics", "mrr_daily_reporting") and wh.table_exists(
            con, "marts", "kpis_monthly_reporting")
        reporting_daily = wh.read_table(con, "metrics", "mrr_daily_reporting", integration.name) if reporting else None
        reporting_kpis = wh.read_table(con, "marts", "kpis_monthly_reporting", integration.name) if reporting else None
        forecast_tables = forecast_section.report_tables(con, integration.name)
    folder = wh_files.pending_reports_dir(duckdb.home(integration), integration.name, context.run_id)
    published = wh_files.reports_dir(duckdb.workspace_path(integration.workspace), integration.name)
    try:
        metadata = _render(context, folder, published, integration.name, daily, bridge, kpis, cohorts,
                           reporting_daily, reporting_kpis, forecast_tables)
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise dg.Failure(description=redact(
            f"the MRR report of {integration.name!r} could not be drawn ({type(exc).__name__}: {exc}). The data "
            f"was published all the same; {published} keeps the previous report. Run `segflow refresh "
            f"--integration {integration.name}` again once fixed; if it fails the same way, report the run id."),
            allow_retries=False) from exc
    moved = duckdb.publish_reports(context.run_id, integration.workspace)
    context.log.info(f"MRR report for '{integration.name}' published at {published / 'mrr.html'}"
                     if integration.name in moved else f"no MRR report to publish for '{integration.name}'")
    return dg.MaterializeResult(metadata=metadata)


def _render(context: dg.AssetExecutionContext, folder, published, integration: str, daily, bridge, kpis, cohorts,
            reporting_daily, reporting_kpis, forecast_tables) -> dict:
    """Write the charts and the page into `folder` (pending); the metadata names them where they will be."""
    files = charts.write_report(folder, integration, daily, bridge,
                                generated_at=run_as_of(context).replace(tzinfo=dt.timezone.utc),
                                kpis=kpis, cohorts=cohorts, reporting_daily=reporting_daily,
                                reporting_kpis=reporting_kpis)
    images = [("kpis_chart", "Headline KPIs, last 12 months", files.kpis_image, files.kpis_png),
              ("cohorts_chart", "Cohort retention", files.cohorts_image, files.cohorts_png),
              ("total_chart", "Total MRR in the reporting currency", files.total_image, files.total_png),
              ("mrr_chart", "MRR per currency", files.mrr_image, files.mrr_png),
              ("bridge_chart", "Monthly MRR movements", files.bridge_image, files.bridge_png)]
    metadata: dict = {"report": dg.MetadataValue.path(str((published / files.html.name).resolve()))}
    for name, alt, image, path in images:
        if image is not None and path is not None:
            metadata[name] = dg.MetadataValue.md(charts.markdown_image(alt, image))
            metadata[name.replace("_chart", "_png")] = dg.MetadataValue.path(str((published / path.name).resolve()))
    metadata["currencies"] = dg.MetadataValue.text(", ".join(sorted(set(daily["currency"].to_list()))) or "none")
    if reporting_kpis is not None and reporting_kpis.height:
        metadata["reporting_currency"] = dg.MetadataValue.text(reporting_kpis["reporting_currency"][0])
    if forecast_tables is not None:  # the forecast band after the history, bets marked, in the page and the UI
        section = forecast_section.write_report_section(folder, files.html, forecast_tables, integration)
        section["forecast_png"] = dg.MetadataValue.path(str((published / "forecast.png").resolve()))
        metadata.update(section)
    return metadata
