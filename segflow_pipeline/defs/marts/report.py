"""marts/mrr_report: MRR charts and an HTML report per integration, published beside the DuckDB file BI reads.

Files: `<dir of SEGFLOW_DUCKDB_PATH>/reports/<integration>/mrr.png`, `bridge.png` and `mrr.html` (self-contained);
the charts also show in the asset's metadata in the Dagster UI. Rendering lives in `reporting/charts.py`. The files
are written aside and moved into place by the same run's publish step (`warehouse/files.py`), so a run that fails
never leaves charts newer than the published data.
"""


import datetime as dt

import dagster as dg

from segflow_pipeline.defs.clock import run_as_of
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.reporting import charts
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.warehouse import files as wh_files
from segflow_pipeline.warehouse import tables as wh

MRR_REPORT = dg.AssetKey(["marts", "mrr_report"])
MRR_DAILY = dg.AssetKey(["metrics", "mrr_daily"])
MRR_BRIDGE_MONTHLY = dg.AssetKey(["marts", "mrr_bridge_monthly"])


@dg.asset(key=MRR_REPORT, group_name="marts", kinds={"python", "html"}, deps=[MRR_DAILY, MRR_BRIDGE_MONTHLY],
          partitions_def=PARTITIONS)
def mrr_report(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """MRR per currency over time and the monthly movements (new, expansion, reactivation, contraction, churned),
    as PNG charts and one HTML page with the last 12 months, published beside the DuckDB file with it."""
    integration = integration_of(context)
    with duckdb.integration_connection(integration.name) as con:
        daily = wh.read_table(con, "metrics", "mrr_daily", integration.name)
        bridge = wh.read_table(con, "marts", "mrr_bridge_monthly", integration.name)
    folder = wh_files.pending_reports_dir(duckdb.published_path, integration.name, context.run_id)
    published = wh_files.reports_dir(duckdb.published_path, integration.name)
    files = charts.write_report(folder, integration.name, daily, bridge,
                                generated_at=run_as_of(context).replace(tzinfo=dt.timezone.utc))
    context.log.info(f"MRR report for '{integration.name}' ready; publishing puts it at {published / files.html.name}")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str((published / files.html.name).resolve())),
        "mrr_chart": dg.MetadataValue.md(charts.markdown_image("MRR per currency", files.mrr_image)),
        "bridge_chart": dg.MetadataValue.md(charts.markdown_image("Monthly MRR movements", files.bridge_image)),
        "mrr_png": dg.MetadataValue.path(str((published / files.mrr_png.name).resolve())),
        "bridge_png": dg.MetadataValue.path(str((published / files.bridge_png.name).resolve())),
        "currencies": dg.MetadataValue.text(", ".join(sorted(set(daily["currency"].to_list()))) or "none"),
    })
