"""The MRR transform's tables in one integration's working file: reading its inputs, writing a run's outputs.

Inputs: the `stripe.*` tables the transform reads and the snapshots earlier runs recorded, as plain Polars frames
in the transform's `MrrInputs` (its input schema is `transform/inputs.py`: warehouse imports transform, never the
reverse; it reads only that narrow module). Outputs: the four `metrics` tables of a run (`mrr.MrrRun`), each
replaced in its own transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import duckdb
import polars as pl

from segflow_pipeline.transform.inputs import INPUT_SCHEMAS, MrrInputs
from segflow_pipeline.transform.snapshots import SNAPSHOT_SCHEMA
from segflow_pipeline.warehouse import tables


def read_mrr_inputs(con: duckdb.DuckDBPyConnection, integration: str) -> MrrInputs:
    """The integration's rows of every input table, and its `metrics.mrr_snapshots` (empty before the first run)."""
    frames = {table: tables.read_table(con, "stripe", table, integration) for table in INPUT_SCHEMAS}
    snapshots = (tables.read_table(con, "metrics", "mrr_snapshots", integration)
                 if tables.table_exists(con, "metrics", "mrr_snapshots") else pl.DataFrame(schema=SNAPSHOT_SCHEMA))
    return MrrInputs(**frames, snapshots=snapshots)


class MrrTables(Protocol):
    """What `write_mrr_run` writes (`transform.mrr.MrrRun` is one)."""

    daily: pl.DataFrame
    customer_movements: pl.DataFrame
    snapshots: pl.DataFrame
    unusable: pl.DataFrame


def write_mrr_run(con: duckdb.DuckDBPyConnection, run: MrrTables, integration: str, today: dt.date) -> None:
    """The run's metrics.mrr_daily, mrr_customer_movements and mrr_unusable_rows replace the integration's rows;
    its snapshot rows replace only today's (earlier days stay: later runs read them back)."""
    tables.replace_rows(con, "metrics", "mrr_daily", run.daily, integration)
    tables.replace_rows(con, "metrics", "mrr_customer_movements", run.customer_movements, integration)
    tables.replace_rows(con, "metrics", "mrr_snapshots", run.snapshots, integration, where={"date": today})
    tables.replace_rows(con, "metrics", "mrr_unusable_rows",
                        run.unusable.with_columns(pl.lit(integration).alias("integration")), integration)
