"""`transaction`: one DuckDB transaction around a block, committed when the block ends, rolled back when it raises
(any exception, KeyboardInterrupt too), the exception then going on to the caller. No Dagster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """`with transaction(con): ...`: everything the block writes through `con` lands at once or not at all."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
