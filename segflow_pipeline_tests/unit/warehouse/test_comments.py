"""Table and column comments: one source per table (the Python mapping, or the SQL model's own `-- @col` lines),
written into a DuckDB file with COMMENT ON."""

from __future__ import annotations

import re

import duckdb
import pytest

from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.transform import mrr
from segflow_pipeline.warehouse import comments, raw
from segflow_pipeline.warehouse import sql_models as sm

MODEL = """-- Monthly things per integration.
-- @col integration: the account.
-- @col month: first day of the month (UTC); it's a date.
-- test: unique(integration, month)
select integration, date_trunc('month', date)::date as month, sum(mrr) as mrr
from metrics.mrr_daily group by all
"""


def test_at_col_lines_describe_the_models_columns() -> None:
    model = sm.parse_model(MODEL, "marts", "things")
    assert model.columns == ("integration", "month", "mrr")
    assert model.column_comments == (("integration", "the account."),
                                     ("month", "first day of the month (UTC); it's a date."))
    assert [t.name for t in model.tests] == ["unique_integration_month"]


@pytest.mark.parametrize("line, message", [
    ("-- @col monthh: a typo", "names column(s) the select does not produce: monthh"),
    ("-- @col month", "write `-- @col <column>: <what it means>`"),
    ("-- @col month:   ", "write `-- @col <column>: <what it means>`"),
    ("-- @col integration: again", "describes integration twice"),
], ids=["unknown-column", "no-colon", "no-meaning", "twice"])
def test_at_col_lines_that_cannot_be_used_fail_at_load_time(line: str, message: str) -> None:
    with pytest.raises(sm.ModelError, match=re.escape(message)):
        sm.parse_model(MODEL.replace("-- test:", f"{line}\n-- test:"), "marts", "things")


def test_python_tables_describe_every_column_the_pipeline_writes() -> None:
    """Compared with the schemas the sync and the transform actually write, not with the mapping itself."""
    written = {("stripe", t): list(schema.names) for t, schema in TABLES.items()}
    written[("stripe", "sync_state")] = [c for c, _ in raw.STATE_COLUMNS]
    written[("metrics", "mrr_daily")] = list(mrr.DAILY_SCHEMA)
    written[("metrics", "mrr_customer_movements")] = list(mrr.CUSTOMER_MOVEMENT_SCHEMA)
    written[("metrics", "mrr_snapshots")] = list(mrr.SNAPSHOT_SCHEMA)
    written[("metrics", "mrr_unusable_rows")] = ["integration", *(c for c in mrr.UNUSABLE_SCHEMA if c != "integration")]
    assert set(comments.PYTHON_TABLES) == set(written)
    for table, columns in written.items():
        described = comments.PYTHON_TABLES[table]
        assert described.description.strip(), table
        assert sorted(described.columns) == sorted(columns), table
        assert all(text.strip() for text in described.columns.values()), table


def test_apply_comments_tables_and_columns_that_exist() -> None:
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("create table marts.things (integration varchar, month date, mrr decimal(18, 2))")
    model = sm.parse_model(MODEL, "marts", "things")
    comments.apply(con, comments.published_comments([model]))  # stripe.* and metrics.* are absent: skipped
    table = con.execute("select comment from duckdb_tables() where table_name = 'things'").fetchone()[0]
    columns = dict(con.execute("select column_name, comment from duckdb_columns() where table_name = 'things'"
                               ).fetchall())
    assert table == "Monthly things per integration."
    assert columns == {"integration": "the account.", "month": "first day of the month (UTC); it's a date.",
                       "mrr": None}  # no @col line, no comment: the published-file test names it

