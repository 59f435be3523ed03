"""marts/<stem>: one asset per `dbt_like_sql/marts/<stem>.sql`, with its declared tests as blocking checks.

Deps come from the tables the SQL reads (`warehouse/sql_models.py` parses it with sqlglot): `metrics.mrr_daily`,
`stripe.<table>` and `marts.<stem>` map to those assets; anything else fails when the definitions load.
A run computes the model for one integration in its working file (every read restricted to that integration),
runs the tests on the result, and only if all pass replaces the integration's rows of `marts.<stem>`
(`tables.replace_rows`: delete + insert in one transaction); the publish asset then unions the integrations.
The `marts` schema of a working file holds only tables the marts build: a table an earlier version built and this
one does not (a model that was removed or renamed) is dropped when a mart is written, so it is not published again.
"""


import dagster as dg
import polars as pl

from segflow_pipeline.defs.checks import blocking_checks
from segflow_pipeline.defs.clock import run_as_of
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import BET_IMPACT, CUSTOMER_MOVEMENTS, MRR_DAILY
from segflow_pipeline.defs.marts.reporting_currency import KPIS_MONTHLY_REPORTING
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.warehouse import sql_models
from segflow_pipeline.warehouse import tables as wh
from segflow_pipeline.warehouse.sql_models import SqlModel, TableRef

# Asset key = where the table lives (STYLE.md), so upstream tables map to their assets' keys directly.
UPSTREAM: dict[TableRef, dg.AssetKey] = {
    TableRef("metrics", "mrr_daily"): MRR_DAILY,
    TableRef("metrics", "mrr_customer_movements"): CUSTOMER_MOVEMENTS,
    **{TableRef("stripe", table): dg.AssetKey(["stripe", table]) for table in TABLES},
}


def mart_asset(model: SqlModel, upstream: dict[TableRef, dg.AssetKey]) -> dg.AssetsDefinition:
    """The asset that builds `model`'s table for one integration, its tests as blocking checks."""
    key = dg.AssetKey([model.schema, model.name])

    @dg.asset(
        key=key,
        group_name="marts",
        kinds={"sql", "duckdb"},
        description=model.description,
        deps=[upstream[ref] for ref in model.refs],
        partitions_def=PARTITIONS,
        check_specs=[dg.AssetCheckSpec(test.name, asset=key, blocking=True, description=_test_text(test))
                     for test in model.tests],
        metadata={"sql_file": dg.MetadataValue.path(str(model.path or model.where))},
    )
    def _mart(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
        integration = integration_of(context)
        as_of = run_as_of(context)
        with duckdb.integration_connection(integration) as con:
            try:
                rows = sql_models.run_model(con, model, integration.name, as_of)
                failures = sql_models.test_failures(con, model, rows, integration.name, as_of)
            except sql_models.ModelError as exc:
                raise dg.Failure(str(exc)) from exc
            results = yield from blocking_checks(failures, f"{model.schema}.{model.name} for '{integration.name}'")
            frame = pl.from_arrow(rows)
            wh.replace_rows(con, model.schema, model.name, frame, integration.name)
            for retired in wh.tables_except(con, model.schema, MART_TABLES):
                wh.drop_table(con, model.schema, retired)
                context.log.info(f"dropped {model.schema}.{retired}: no model or asset builds it any more")
        yield dg.MaterializeResult(metadata=mart_metadata(frame), check_results=results)

    return _mart


def mart_metadata(frame: pl.DataFrame) -> dict[str, dg.MetadataValue | int]:
    columns = [dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    return {"dagster/row_count": frame.height, "dagster/column_schema": dg.TableSchema(columns=columns),
            "preview": preview(frame, 20)}


def _test_text(test: sql_models.DataTest) -> str:
    if test.kind == "expression":
        return f"Every row satisfies: {test.condition}"
    if test.kind == "query":
        return f"This query finds no rows (`this` = the table being built): {test.condition}"
    if test.kind == "unique":
        return f"One row per ({', '.join(test.columns)})"
    return f"Never null: {', '.join(test.columns)}"


MODELS: list[SqlModel] = sql_models.load_models()
sql_models.check_refs(MODELS, UPSTREAM)
MART_KEYS: list[dg.AssetKey] = [dg.AssetKey([m.schema, m.name]) for m in MODELS]
# Every table of the marts schema: the models' and the ones built in Python (`defs/marts/reporting_currency.py`,
# `defs/marts/bets.py`).
MART_TABLES: frozenset[str] = frozenset({m.name for m in MODELS} | {KPIS_MONTHLY_REPORTING.path[-1],
                                                                    BET_IMPACT.path[-1]})
MART_ASSETS: list[dg.AssetsDefinition] = [
    mart_asset(m, {**UPSTREAM, **{other.ref: key for other, key in zip(MODELS, MART_KEYS)}}) for m in MODELS
]
