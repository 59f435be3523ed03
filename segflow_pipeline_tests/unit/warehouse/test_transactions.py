"""`transaction`: the block's writes land together when it ends, and none of them when it raises."""

import duckdb
import pytest

from segflow_pipeline.warehouse.transactions import transaction


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("create table t (x integer)")
    con.execute("insert into t values (1)")
    yield con
    con.close()


def rows(con) -> list[int]:
    return [x for (x,) in con.execute("select x from t order by x").fetchall()]


def test_the_block_s_writes_are_committed_together(con):
    with transaction(con):
        con.execute("insert into t values (2)")
        con.execute("delete from t where x = 1")
    assert rows(con) == [2]
    with transaction(con):
        con.execute("insert into t values (3)")
    assert rows(con) == [2, 3]


@pytest.mark.parametrize("error", [ValueError("bad rows"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_raising_block_leaves_nothing_and_the_error_goes_on(con, error):
    with pytest.raises(type(error)):
        with transaction(con):
            con.execute("insert into t values (2)")
            con.execute("delete from t where x = 1")
            raise error
    assert rows(con) == [1]


def test_a_failing_statement_rolls_back_what_came_before_it(con):
    with pytest.raises(duckdb.Error):
        with transaction(con):
            con.execute("insert into t values (2)")
            con.execute("insert into missing values (1)")
    assert rows(con) == [1]
