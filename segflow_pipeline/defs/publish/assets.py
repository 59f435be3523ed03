"""publish/segflow_duckdb: the file BI tools read, replaced atomically once every upstream check passed."""


import dagster as dg

from segflow_pipeline.defs.integrations import INTEGRATIONS
from segflow_pipeline.defs.marts.assets import MART_KEYS, MODELS
from segflow_pipeline.defs.marts.bets import BET_IMPACT
from segflow_pipeline.defs.marts.report import MRR_REPORT
from segflow_pipeline.defs.marts.reporting_currency import KPIS_MONTHLY_REPORTING
from segflow_pipeline.defs.metrics.assets import CUSTOMER_MOVEMENTS, MRR_DAILY
from segflow_pipeline.defs.metrics.reporting_currency import MRR_DAILY_REPORTING
from segflow_pipeline.defs.metrics.forecast import FORECAST_KEYS
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.defs.marts import bets
from segflow_pipeline.defs.metrics import forecast
from segflow_pipeline.transform import reporting_currency as rc
from segflow_pipeline.warehouse.comments import TableComment, published_comments

PUBLISHED = dg.AssetKey(["publish", "segflow_duckdb"])
# Tables built in Python outside stripe.* and metrics.mrr_*: each stage describes them beside its code.
OTHER_TABLE_COMMENTS: dict[tuple[str, str], TableComment] = {
    **{("metrics", table): TableComment(forecast.DESCRIPTIONS[table], forecast.COLUMNS[table])
       for table in forecast.DESCRIPTIONS},
    ("marts", "bet_impact"): TableComment(bets.DESCRIPTION, bets.COLUMNS),
    ("metrics", "mrr_daily_reporting"): TableComment(rc.DAILY_REPORTING_DESCRIPTION, rc.DAILY_REPORTING_COLUMNS),
    ("marts", "kpis_monthly_reporting"): TableComment(rc.KPIS_REPORTING_DESCRIPTION, rc.KPIS_REPORTING_COLUMNS),
}


@dg.asset(key=PUBLISHED, group_name="publish", kinds={"duckdb"},
          deps=[MRR_DAILY, CUSTOMER_MOVEMENTS, *MART_KEYS, MRR_REPORT, MRR_DAILY_REPORTING, KPIS_MONTHLY_REPORTING,
                *FORECAST_KEYS, BET_IMPACT],
          check_specs=[dg.AssetCheckSpec("readable_with_contract_tables", asset=PUBLISHED, blocking=True,
                                         description="The published file opens read-only and holds "
                                                     "metrics.mrr_daily and stripe.subscriptions, invoices, "
                                                     "customers, prices and coupons.")])
def segflow_duckdb(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """The DuckDB file at SEGFLOW_DUCKDB_PATH: every integration's stripe, metrics and marts tables, each table and
    column with its COMMENT (docs/tables.md), swapped in atomically so open readers keep a consistent snapshot and
    never block a refresh."""
    counts = duckdb.publish([i.name for i in INTEGRATIONS], comments=published_comments(MODELS, OTHER_TABLE_COMMENTS))
    reports = duckdb.publish_reports(context.run_id)
    with duckdb.get_connection() as con:
        present = {f"{s}.{t}" for s, t in con.execute(
            "select table_schema, table_name from information_schema.tables").fetchall()}
    missing = sorted({"metrics.mrr_daily", "stripe.subscriptions", "stripe.invoices", "stripe.customers",
                      "stripe.prices", "stripe.coupons"} - present)
    context.log.info(f"published {duckdb.published_path} ({len(counts)} tables)"
                     + (f" and the reports of {', '.join(reports)}" if reports else ""))
    yield dg.MaterializeResult(
        metadata={"path": str(duckdb.published_path.resolve()), "tables": len(counts),
                  **{f"rows.{name}": n for name, n in counts.items() if not name.startswith("stripe.")}},
        check_results=[dg.AssetCheckResult(check_name="readable_with_contract_tables", passed=not missing,
                                           metadata={"missing": ", ".join(missing) or "none"})],
    )
