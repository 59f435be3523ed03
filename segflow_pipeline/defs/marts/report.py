"""marts/mrr_report: MRR charts and an HTML report per integration, written beside the DuckDB file BI reads.

Files: `<dir of SEGFLOW_DUCKDB_PATH>/reports/<integration>/mrr.png`, `bridge.png` and `mrr.html` (self-contained);
the charts also show in the asset's metadata in the Dagster UI. Rendering lives in `reporting/charts.py`.
"""


import datetime as dt

import dagster as dg

from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.metrics import forecast as forecast_section
from segflow_pipeline.reporting import charts
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.warehouse import tables as wh

MRR_REPORT = dg.AssetKey(["marts", "mrr_report"])
MRR_DAILY = dg.AssetKey(["metrics", "mrr_daily"])
MRR_BRIDGE_MONTHLY = dg.AssetKey(["marts", "mrr_bridge_monthly"])


@dg.asset(key=MRR_REPORT, group_name="marts", kinds={"python", "html"},
          deps=[MRR_DAILY, MRR_BRIDGE_MONTHLY, *forecast_section.REPORT_DEPS], partitions_def=PARTITIONS)
def mrr_report(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """MRR per currency over time and the monthly movements (new, expansion, reactivation, contraction, churned),
    as PNG charts and one HTML page with the last 12 months, beside the DuckDB file."""
    integration = integration_of(context)
    with duckdb.integration_connection(integration.name) as con:
        daily = wh.read_table(con, "metrics", "mrr_daily", integration.name)
        bridge = wh.read_table(con, "marts", "mrr_bridge_monthly", integration.name)
        forecast_tables = forecast_section.report_tables(con, integration.name)
    folder = duckdb.published_path.parent / "reports" / integration.name
    files = charts.write_report(folder, integration.name, daily, bridge,
                                generated_at=dt.datetime.now(dt.timezone.utc))
    context.log.info(f"MRR report for '{integration.name}' written to {files.html}")
    metadata = {
        "report": dg.MetadataValue.path(str(files.html.resolve())),
        "mrr_chart": dg.MetadataValue.md(charts.markdown_image("MRR per currency", files.mrr_image)),
        "bridge_chart": dg.MetadataValue.md(charts.markdown_image("Monthly MRR movements", files.bridge_image)),
        "mrr_png": dg.MetadataValue.path(str(files.mrr_png.resolve())),
        "bridge_png": dg.MetadataValue.path(str(files.bridge_png.resolve())),
        "currencies": dg.MetadataValue.text(", ".join(sorted(set(daily["currency"].to_list()))) or "none"),
    }
    if forecast_tables is not None:  # the forecast band after the history, bets marked, in the page and the UI
        metadata.update(forecast_section.write_report_section(folder, files.html, forecast_tables, integration.name))
    return dg.MaterializeResult(metadata=metadata)
