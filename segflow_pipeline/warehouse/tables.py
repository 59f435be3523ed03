"""Reading and writing whole tables of one integration in its working DuckDB file, moving data as Arrow.

Writes are one transaction each (delete the integration's rows, insert the new ones): a crash leaves the old rows.
Identifiers come from our own constants; values are always bound parameters.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import duckdb

from segflow_pipeline.warehouse.transactions import transaction


def read_table(con: duckdb.DuckDBPyConnection, schema: str, table: str, integration: str,
               exclude: tuple[str, ...] = ("raw",)) -> pl.DataFrame:
    """Rows of one integration, without the bulky JSON columns unless asked for."""
    columns = [c for (c,) in con.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, table]).fetchall() if c not in exclude]
    if not columns:
        raise LookupError(f"table {schema}.{table} does not exist yet: materialize its upstream assets first")
    select = ", ".join(f'"{c}"' for c in columns)
    return con.sql(f'select {select} from "{schema}"."{table}" where integration = ?', params=[integration]).pl()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, table]).fetchone()[0] > 0


def replace_rows(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame, integration: str,
                 where: dict[str, object] | None = None) -> int:
    """Replace the integration's rows (optionally only those matching `where`) with `frame`, atomically.

    The table is created from the frame's Arrow schema; if an older run created it with other columns, it is
    recreated (other integrations' rows of a changed table are dropped with it and come back on their next run).
    """
    arrow = frame.to_arrow()
    with transaction(con):
        con.execute(f'create schema if not exists "{schema}"')
        _ensure_shape(con, schema, table, arrow.schema)
        conditions = {"integration": integration, **(where or {})}
        clause = " and ".join(f'"{c}" = ?' for c in conditions)
        con.execute(f'delete from "{schema}"."{table}" where {clause}', list(conditions.values()))
        con.register("_incoming", arrow)
        con.execute(f'insert into "{schema}"."{table}" by name select * from _incoming')
        con.unregister("_incoming")
    return arrow.num_rows


def _ensure_shape(con: duckdb.DuckDBPyConnection, schema: str, table: str, arrow_schema: pa.Schema) -> None:
    con.register("_shape", pa.table({f.name: pa.array([], type=f.type) for f in arrow_schema}))
    wanted = con.execute("select column_name, column_type from (describe select * from _shape)").fetchall()
    existing = con.execute(
        "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, table]).fetchall()
    if existing and existing != wanted:
        con.execute(f'drop table "{schema}"."{table}"')
        existing = []
    if not existing:
        con.execute(f'create table "{schema}"."{table}" as select * from _shape')
    con.unregister("_shape")


def drop_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Drop a table of the working file if it exists (a table that is no longer built); returns whether it did."""
    if not table_exists(con, schema, table):
        return False
    con.execute(f'drop table "{schema}"."{table}"')
    return True


def tables_except(con: duckdb.DuckDBPyConnection, schema: str, keep: frozenset[str] | set[str]) -> list[str]:
    """The tables of `schema` whose names are not in `keep`, sorted."""
    names = con.execute("select table_name from information_schema.tables where table_schema = ? and "
                        "table_type = 'BASE TABLE' order by table_name", [schema]).fetchall()
    return [name for (name,) in names if name not in keep]
