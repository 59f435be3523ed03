"""metrics/mrr_forecast, metrics/mrr_forecast_accuracy, metrics/mrr_forecast_status: where MRR is heading in the
next 90 days, how accurate that forecast has been, and which series could not be forecast and why.

The method and its baselines live in `transform/forecast.py`; the chart in `reporting/forecast_chart.py`. Reads
metrics.mrr_daily (each currency) and, when another asset has written it, metrics.mrr_daily_reporting (the total in
the reporting currency). Every check runs before anything is written: a failure keeps the last tables.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from segflow_pipeline import bets, config
from segflow_pipeline.defs.checks import blocking_checks
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import BET_IMPACT, MRR_DAILY, MRR_DAILY_REPORTING
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.reporting import forecast_chart
from segflow_pipeline.reporting.charts import markdown_image
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import forecast
from segflow_pipeline.transform import forecast_accuracy as accuracy_of
from segflow_pipeline.warehouse import tables as wh

MRR_FORECAST = dg.AssetKey(["metrics", "mrr_forecast"])
MRR_FORECAST_ACCURACY = dg.AssetKey(["metrics", "mrr_forecast_accuracy"])
MRR_FORECAST_STATUS = dg.AssetKey(["metrics", "mrr_forecast_status"])
FORECAST_KEYS = (MRR_FORECAST, MRR_FORECAST_ACCURACY, MRR_FORECAST_STATUS)
CHECKS = {
    "intervals_ordered": "Every row: 0 <= lower_95 <= lower_80 <= mrr_forecast <= upper_80 <= upper_95.",
    "ninety_days_per_series": "Every series with at least 60 days of history has exactly the 90 days after its "
                              "last day, once each (counted from metrics.mrr_daily, not from the status table).",
    "short_history_stated": "A series with under 60 days of history has no forecast rows, and its status row "
                            "says so.",
}

# Each table's description (the asset's, and its COMMENT in the published file) and its columns'.
DESCRIPTIONS = {
    "mrr_forecast": "The next 90 days of MRR per currency, with 80 % and 95 % intervals and the expected new, "
                    "expansion, reactivation, contraction and churned MRR behind each day.",
    "mrr_forecast_accuracy": "How accurate the forecast has been: MAPE and interval coverage at 30, 60 and 90 days "
                             "from the month ends of the last 12 months, beside naive, linear trend and ETS.",
    "mrr_forecast_status": "One row per MRR series: forecast or not (and why), and the flows and rates the forecast "
                           "rests on.",
}
COLUMNS = {
    "mrr_forecast": {
        "integration": "the configured account's name", "currency": "lowercase ISO code of the series",
        "date": "the forecast day (UTC); the value is the expected state at the end of that day",
        "mrr_forecast": "expected MRR, major units: the last actual MRR plus the running sum of the expected "
                        "movements",
        "lower_80": "lower end of the 80 % interval", "upper_80": "upper end of the 80 % interval",
        "lower_95": "lower end of the 95 % interval", "upper_95": "upper end of the 95 % interval",
        "method": "the forecasting method (flows_rates: movements as flows and rates, docs/forecast.md)",
        "basis": "currency = the currency's own MRR; reporting = all currencies converted to the reporting currency",
        "origin_date": "the last day of actual MRR the forecast starts from",
        "horizon_day": "days after origin_date (1..90)",
        "new_mrr": "expected new MRR that day", "expansion_mrr": "expected expansion MRR that day",
        "reactivation_mrr": "expected reactivation MRR that day",
        "contraction_mrr": "expected contraction MRR that day (the contraction rate x the day before's MRR)",
        "churned_mrr": "expected churned MRR that day (the churn rate x the day before's MRR)",
    },
    "mrr_forecast_accuracy": {
        "integration": "the configured account's name", "currency": "lowercase ISO code of the series",
        "method": "flows_rates (published) or a baseline: naive (last value), linear_trend, ets (statsmodels)",
        "horizon_days": "days between the forecast origin and the day checked (30, 60, 90)",
        "origins": "month ends of the last 12 months whose forecast could be checked at this horizon",
        "mape": "mean absolute percentage error over the origins, as a fraction (0.05 = 5 %)",
        "coverage_80": "share of outcomes inside the 80 % interval", "coverage_95": "share inside the 95 % interval",
        "basis": "currency or reporting (see metrics.mrr_forecast)", "naive_mape": "the naive method's MAPE",
        "beats_naive": "whether this method's MAPE is below naive's (null for naive itself)",
        "note": "what the numbers mean for the published method, said plainly",
    },
    "mrr_forecast_status": {
        "integration": "the configured account's name", "currency": "lowercase ISO code of the series",
        "basis": "currency or reporting", "first_date": "first day of MRR history", "last_date": "last day",
        "history_days": "days of history", "forecast": "whether the series was forecast",
        "method": "the forecasting method", "reason": "why not, or what the forecast rests on",
        "last_mrr": "MRR on last_date", "mrr_in_90_days": "the forecast 90 days after last_date",
        "new_mrr_per_month": "the new-MRR flow the forecast assumes, per average month (30.44 days)",
        "expansion_mrr_per_month": "the expansion flow per month",
        "reactivation_mrr_per_month": "the reactivation flow per month",
        "contraction_rate_per_month": "share of MRR lost to contraction per month",
        "churn_rate_per_month": "share of MRR lost to churn per month",
    },
}


@dg.multi_asset(
    specs=[dg.AssetSpec(key, group_name="metrics", kinds={"polars", "duckdb"}, deps=[MRR_DAILY, MRR_DAILY_REPORTING],
                        description=DESCRIPTIONS[key.path[-1]]) for key in FORECAST_KEYS],
    check_specs=[dg.AssetCheckSpec(name, asset=MRR_FORECAST, blocking=True, description=text)
                 for name, text in CHECKS.items()],
    partitions_def=PARTITIONS,
)
def mrr_forecast(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """The forecast, its backtested accuracy and each series' status, for one integration."""
    integration = integration_of(context)
    with duckdb.integration_connection(integration) as con:
        histories = history_frames(con, integration.name)
        results = [forecast.mrr_forecast(h) for h in histories]
        frame = _concat([r.forecast for r in results], forecast.FORECAST_SCHEMA)
        status = _concat([r.status for r in results], forecast.STATUS_SCHEMA)
        accuracy = _concat([accuracy_of.forecast_accuracy(h) for h in histories], forecast.ACCURACY_SCHEMA)
        history = _concat([h.select(*forecast.SERIES_KEYS, "date", "mrr") for h in histories], None)
        failures = {
            "intervals_ordered": forecast.interval_order_breaks(frame),
            "ninety_days_per_series": forecast.horizon_breaks(frame, history),
            "short_history_stated": forecast.short_history_breaks(frame, status, history),
        }
        verdicts = yield from blocking_checks(failures, f"metrics.mrr_forecast for '{integration.name}'",
                                              asset_key=MRR_FORECAST, unchanged="the published tables are unchanged")
        wh.replace_rows(con, "metrics", "mrr_forecast", frame, integration.name)
        wh.replace_rows(con, "metrics", "mrr_forecast_accuracy", accuracy, integration.name)
        wh.replace_rows(con, "metrics", "mrr_forecast_status", status, integration.name)
    for row in status.filter(~pl.col("forecast")).iter_rows(named=True):
        context.log.warning(f"no MRR forecast for {row['currency']} ({row['basis']}) of '{integration.name}': "
                            f"{row['reason']}")
    image = forecast_chart.forecast_chart(history, frame, bet_markers(context), status,
                                          title=f"MRR forecast ({integration.name})")
    yield dg.MaterializeResult(asset_key=MRR_FORECAST, metadata=forecast_metadata(frame, status, image),
                               check_results=verdicts)
    yield dg.MaterializeResult(asset_key=MRR_FORECAST_ACCURACY, metadata={
        **table_metadata(accuracy, "mrr_forecast_accuracy"),
        "published_method": preview(accuracy.filter(pl.col("method") == forecast.METHOD).select(
            "currency", "basis", "horizon_days", "origins", "mape", "naive_mape", "coverage_80", "coverage_95",
            "note"), 30)})
    yield dg.MaterializeResult(asset_key=MRR_FORECAST_STATUS, metadata={
        **table_metadata(status, "mrr_forecast_status"), "series": preview(status, 30)})


def history_frames(con: duckdb.DuckDBPyConnection, integration: str) -> list[pl.DataFrame]:
    """metrics.mrr_daily as `basis = 'currency'` series and, when the table exists, metrics.mrr_daily_reporting as
    `basis = 'reporting'` series (its reporting_currency as `currency`; its movements when it has them)."""
    movements = list(forecast.MOVEMENTS)
    daily = wh.read_table(con, "metrics", "mrr_daily", integration)
    frames = [daily.select("integration", pl.lit("currency").alias("basis"), "currency", "date", "mrr", *movements)]
    if wh.table_exists(con, "metrics", "mrr_daily_reporting"):
        reporting = wh.read_table(con, "metrics", "mrr_daily_reporting", integration)
        currency = "reporting_currency" if "reporting_currency" in reporting.columns else "currency"
        present = [m for m in movements if m in reporting.columns] if set(movements) <= set(reporting.columns) else []
        frames.append(reporting.select("integration", pl.lit("reporting").alias("basis"),
                                       pl.col(currency).alias("currency"), "date", "mrr", *present))
    return frames


def bet_markers(context: dg.AssetExecutionContext | None = None) -> list[tuple[str, dt.date]]:
    """(name, start) of each bet in the bets file, for chart markers; a broken file draws none (and is reported
    by marts/bet_impact, which fails on it)."""
    try:
        return [(b.name, b.start) for b in bets.load_bets(config.bets_file())]
    except bets.BetsError as exc:
        if context is not None:
            context.log.warning(f"bets not drawn on the chart: {exc}")
        return []


def forecast_metadata(frame: pl.DataFrame, status: pl.DataFrame, image: bytes) -> dict:
    metadata: dict = {**table_metadata(frame, "mrr_forecast"),
                      "forecast_chart": dg.MetadataValue.md(markdown_image("MRR forecast", image))}
    for row in status.filter(pl.col("forecast")).iter_rows(named=True):
        suffix = "" if row["basis"] == "currency" else f"_{row['basis']}"
        metadata[f"mrr_in_90_days_{row['currency']}{suffix}"] = dg.MetadataValue.float(float(row["mrr_in_90_days"]))
    skipped = status.filter(~pl.col("forecast"))
    metadata["series_without_forecast"] = dg.MetadataValue.md(
        "\n".join(f"- {r['currency']} ({r['basis']}): {r['reason']}" for r in skipped.iter_rows(named=True))
        or "none")
    metadata["next_30_days"] = preview(frame.filter(pl.col("horizon_day") <= 30).select(
        "currency", "basis", "date", "mrr_forecast", "lower_80", "upper_80", "lower_95", "upper_95"), 30)
    return metadata


def table_metadata(frame: pl.DataFrame, table: str) -> dict:
    docs = COLUMNS[table]
    columns = [dg.TableColumn(name, str(dtype), description=docs.get(name)) for name, dtype in frame.schema.items()]
    return {"dagster/row_count": frame.height, "dagster/column_schema": dg.TableSchema(columns=columns)}


def _concat(frames: list[pl.DataFrame], schema: dict | None) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if frames:
        return pl.concat(frames, how="vertical_relaxed")
    if schema is not None:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(schema={"integration": pl.Utf8, "basis": pl.Utf8, "currency": pl.Utf8, "date": pl.Date,
                                "mrr": pl.Decimal(18, 2)})


# --- the forecast section of marts/mrr_report ---------------------------------------------------------------------

REPORT_DEPS = [*FORECAST_KEYS, BET_IMPACT]


def report_tables(con: duckdb.DuckDBPyConnection, integration: str) -> dict[str, pl.DataFrame] | None:
    """What the report's forecast section shows (history, forecast, status, accuracy, bet_impact), or None before
    the forecast has ever run."""
    if not wh.table_exists(con, "metrics", "mrr_forecast"):
        return None
    tables = {"history": _concat([h.select(*forecast.SERIES_KEYS, "date", "mrr")
                                  for h in history_frames(con, integration)], None)}
    for name in ("mrr_forecast", "mrr_forecast_status", "mrr_forecast_accuracy"):
        tables[name] = wh.read_table(con, "metrics", name, integration)
    tables["bet_impact"] = (wh.read_table(con, "marts", "bet_impact", integration)
                            if wh.table_exists(con, "marts", "bet_impact") else None)
    return tables


def write_report_section(folder: Path, html_page: Path, tables: dict[str, pl.DataFrame | None],
                         integration: str) -> dict:
    """forecast.png beside the report and the forecast section in its page; the report asset's metadata for it."""
    impact = tables["bet_impact"]
    markers = sorted({(r["bet"], r["start_date"]) for r in impact.iter_rows(named=True)}) if impact is not None \
        else []
    image = forecast_chart.forecast_chart(tables["history"], tables["mrr_forecast"], markers,
                                          tables["mrr_forecast_status"], title=f"MRR forecast ({integration})")
    png = forecast_chart.write_forecast_report(folder, html_page, image, tables["mrr_forecast_status"],
                                               tables["mrr_forecast_accuracy"], impact)
    return {"forecast_chart": dg.MetadataValue.md(markdown_image("MRR forecast", image)),
            "forecast_png": dg.MetadataValue.path(str(png.resolve()))}
