"""marts/bet_impact: per bet of the bets file, the actual MRR after its start against the forecast made only from
the data before it (`transform/bet_impact.py`). The file is SEGFLOW_BETS_FILE (default `bets.yaml`); a file that
breaks a rule fails this asset with the line and the reason, and nothing is written.
"""


import dagster as dg
import polars as pl

from segflow_pipeline import bets, config
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.defs.keys import BET_IMPACT, MRR_DAILY
from segflow_pipeline.defs.reporting import preview
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import bet_impact as impact
from segflow_pipeline.warehouse import tables as wh

MRR_DRIVERS_DAILY = dg.AssetKey(["marts", "mrr_drivers_daily"])

DESCRIPTION = ("Per bet (bets file), the MRR of its segment after the start against the forecast made from the data "
               "before it, with the 80 % and 95 % intervals, the difference, and whether it lies outside the 95 % "
               "interval.")
COLUMNS = {
    "integration": "the configured account's name", "bet": "the bet's name (bets file)",
    "currency": "the segment's currency (null when the segment has no MRR)",
    "start_date": "first day the bet is live", "end_date": "last day (null = still running)",
    "segment": "all MRR, product <id> or price <id>", "product": "the product filter", "price": "the price filter",
    "note": "the bet's note", "evaluated_on": "the day compared: the end, or the last day of data, at most 365 "
                                             "days after the start",
    "days_observed": "days from the start to evaluated_on, inclusive",
    "mrr_before_start": "the segment's MRR the day before the start",
    "actual_mrr": "the segment's MRR on evaluated_on",
    "forecast_mrr": "the forecast for evaluated_on made only from the data before the start",
    "lower_80": "80 % interval, low", "upper_80": "80 % interval, high", "lower_95": "95 % interval, low",
    "upper_95": "95 % interval, high", "difference": "actual_mrr - forecast_mrr",
    "difference_pct": "difference / forecast_mrr, as a fraction", "outside_95": "actual outside the 95 % interval",
    "verdict": "above, below or within the 95 % interval", "method": "the forecasting method",
    "status": "compared, or why not (not started, too little history before the start)",
}


@dg.asset(key=BET_IMPACT, group_name="marts", kinds={"polars", "duckdb"}, deps=[MRR_DAILY, MRR_DRIVERS_DAILY],
          partitions_def=PARTITIONS)
def bet_impact(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """Per bet (bets file), the MRR of its segment after the start against the forecast made from the data before
    it, with the 80 % and 95 % intervals, the difference, and whether it lies outside the 95 % interval."""
    integration = integration_of(context)
    path = config.bets_file()
    try:
        listed = bets.load_bets(path)
    except bets.BetsError as exc:
        raise dg.Failure(f"{exc}. Fix the file (or `segflow bets add` a new bet); marts.bet_impact is unchanged.") \
            from None
    with duckdb.integration_connection(integration) as con:
        daily = wh.read_table(con, "metrics", "mrr_daily", integration.name)
        drivers = wh.read_table(con, "marts", "mrr_drivers_daily", integration.name)
        frame = impact.bet_impact(listed, daily, drivers, integration.name)
        wh.replace_rows(con, "marts", "bet_impact", frame, integration.name)
    if not path.exists():
        context.log.info(f"no bets file at {path}: add a bet with `segflow bets add NAME --start YYYY-MM-DD`")
    outside = frame.filter(pl.col("outside_95").fill_null(False))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height,
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, str(t), description=COLUMNS.get(n))
                                                         for n, t in frame.schema.items()]),
        "bets_file": dg.MetadataValue.path(str(path.resolve())), "bets": len(listed),
        "outside_95": outside.height,
        "preview": preview(frame.select("bet", "segment", "currency", "evaluated_on", "actual_mrr", "forecast_mrr",
                                        "lower_95", "upper_95", "difference", "verdict", "status"), 20),
    })
