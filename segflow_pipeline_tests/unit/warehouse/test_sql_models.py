"""SQL models: parsing, table references (sqlglot), test declarations, and every marts model run on a hand-made
DuckDB file with the contract's metrics.mrr_daily columns and the raw stripe tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.warehouse import sql_models as sm
from segflow_pipeline.warehouse.tables import replace_rows

D = Decimal
AS_OF = dt.datetime(2025, 3, 5, 12, 0)
TODAY = AS_OF.date()
INTEGRATION = "acme"


# --- parsing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from metrics.mrr_daily", ["metrics.mrr_daily"]),
        ("with d as (select * from metrics.mrr_daily) select * from d join marts.mrr_monthly m using (month)",
         ["marts.mrr_monthly", "metrics.mrr_daily"]),
        ("select * from stripe.subscriptions s where s.id in (select subscription from stripe.subscription_items)",
         ["stripe.subscription_items", "stripe.subscriptions"]),
        ("select * from metrics.mrr_daily a join metrics.mrr_daily b using (date)", ["metrics.mrr_daily"]),
        ("select * from range(3) r, unnest([1, 2]) u", []),
        ("with a as (select 1 x), b as (select * from a) select * from b", []),
    ],
    ids=["one-table", "cte-and-join", "subquery", "self-join-once", "row-generators", "ctes-only"],
)
def test_table_refs_found_by_parsing(sql: str, expected: list[str]) -> None:
    assert [str(r) for r in sm.table_refs(sql)] == expected


def test_table_refs_ignore_names_in_strings_and_comments() -> None:
    sql = "-- reads metrics.old_table\nselect 'from stripe.invoices' as note from metrics.mrr_daily"
    assert [str(r) for r in sm.table_refs(sql)] == ["metrics.mrr_daily"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("select * from mrr_daily", "neither a CTE nor schema-qualified"),
        ("select * from read_csv('x.csv')", "not a table"),
        ("select * from other_db.metrics.mrr_daily", "names a database"),
    ],
    ids=["unqualified", "file-reader", "three-part-name"],
)
def test_table_refs_refuse_what_is_not_a_warehouse_table(sql: str, message: str) -> None:
    with pytest.raises(sm.ModelError, match=message):
        sm.table_refs(sql)


def model(name: str, sql: str, schema: str = "marts") -> sm.SqlModel:
    return sm.parse_model(f"-- The {name} table.\n{sql}", schema, name)


def test_unknown_reference_fails_with_the_tables_that_exist() -> None:
    models = [model("a", "select * from metrics.mrr_daily"), model("b", "select * from metrics.mrr_dialy")]
    with pytest.raises(sm.ModelError, match=r"b\.sql reads unknown table\(s\) metrics\.mrr_dialy.*metrics\.mrr_daily"):
        sm.check_refs(models, {sm.TableRef("metrics", "mrr_daily")})


def test_known_references_include_other_models() -> None:
    models = [model("a", "select * from metrics.mrr_daily"), model("b", "select * from marts.a")]
    assert models[1].refs == (sm.TableRef("marts", "a"),) and models[0].ref == sm.TableRef("marts", "a")
    assert sm.check_refs(models, {sm.TableRef("metrics", "mrr_daily")}) is None  # b reads a: accepted
    # the same reference without model a among the models is unknown, and named
    with pytest.raises(sm.ModelError, match=r"b\.sql reads unknown table\(s\) marts\.a\. Models may read: "
                                            r"marts\.b, metrics\.mrr_daily\."):
        sm.check_refs(models[1:], {sm.TableRef("metrics", "mrr_daily")})


def test_models_come_after_the_models_they_read() -> None:
    models = [model("c", "select * from marts.b"), model("b", "select * from marts.a"),
              model("a", "select * from metrics.mrr_daily")]
    assert [m.name for m in sm.in_dependency_order(models)] == ["a", "b", "c"]


def test_a_cycle_between_models_fails() -> None:
    with pytest.raises(sm.ModelError, match="cycle"):
        sm.in_dependency_order([model("a", "select * from marts.b"), model("b", "select * from marts.a")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("select 1 as x", "first line must be a `-- description`"),
        ("-- test: unique(x)\nselect 1 as x", "first line must be a `-- description`"),
        ("-- Two.\nselect 1 as x; select 2 as y", "exactly one select"),
        ("-- Delete.\ndelete from metrics.mrr_daily", "exactly one select"),
        ("-- Param.\nselect $today as d", "unknown parameter"),
        ("-- Broken.\nselect from where", "not valid DuckDB SQL"),
    ],
    ids=["no-description", "test-before-description", "two-statements", "not-a-select", "unknown-parameter",
         "syntax-error"],
)
def test_parse_model_refuses_broken_files(text: str, message: str) -> None:
    with pytest.raises(sm.ModelError, match=message):
        sm.parse_model(text, "marts", "broken")


def test_test_declarations() -> None:
    text = """-- Description.
-- test: unique(integration, currency, month)
-- test: not_null(mrr)
-- test: not_null(integration, month)
--   test: expression(starting_mrr + new_mrr = ending_mrr) as movements_reconcile
-- a comment mentioning test: is not a test
select 1 as x
"""
    assert sm.test_declarations(text) == (
        sm.DataTest("unique_integration_currency_month", "unique", ("integration", "currency", "month")),
        sm.DataTest("not_null_mrr", "not_null", ("mrr",)),
        sm.DataTest("not_null", "not_null", ("integration", "month")),
        sm.DataTest("movements_reconcile", "expression", condition="starting_mrr + new_mrr = ending_mrr"),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-- test: expression(mrr >= 0)", "name the property"),
        ("-- test: unique(lower(currency))", "plain column names"),
        ("-- test: unique()", "plain column names"),
        ("-- test: accepted_values(currency)", "cannot read test"),
        ("-- test: not_null(mrr) as Bad-Name", "snake_case"),
        ("-- test: expression(mrr >= ) as broken", "not valid SQL"),
        ("-- test: not_null(mrr)\n-- test: not_null(mrr)", "two tests are named not_null_mrr"),
    ],
    ids=["unnamed-expression", "not-a-column", "no-columns", "unknown-kind", "bad-name", "bad-expression",
         "duplicate-name"],
)
def test_test_declarations_refuse_what_cannot_be_checked(line: str, message: str) -> None:
    with pytest.raises(sm.ModelError, match=message):
        sm.test_declarations(line, "m.sql")


def test_a_query_test_may_span_comment_lines() -> None:
    text = """-- Description.
-- test: query(
--     select t.* from this as t
--     join marts.other as o on o.k = t.k   -- a comment
--     where t.v <> o.v and t.note <> ')'
-- ) as agrees_with_other
-- test: not_null(k)
-- @col k: the key (a free-text line, not a test)
select 1 as k
"""
    query, not_null = sm.test_declarations(text)
    assert query.kind == "query" and query.name == "agrees_with_other"
    assert "JOIN marts.other AS o ON o.k = t.k" in query.condition and "')'" in query.condition
    assert not_null == sm.DataTest("not_null_k", "not_null", ("k",))


def test_tables_a_query_test_reads_are_dependencies() -> None:
    m = model("k", "select 1 as k from metrics.mrr_daily\n-- test: query(select * from this join marts.b using (k))"
                   " as matches_b")
    assert [str(r) for r in m.refs] == ["marts.b", "metrics.mrr_daily"]
    with pytest.raises(sm.ModelError, match="unknown table"):
        sm.check_refs([m], {sm.TableRef("metrics", "mrr_daily")})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-- test: query(select * from this)", "name the property"),
        ("-- test: query(delete from this) as d", "one select"),
        ("-- test: query(select * from other) as o", "neither a CTE nor schema-qualified"),
        ("-- test: query(select * from read_csv('x')) as o", "not a table"),
        ("-- test: query(select $when from this) as p", "unknown parameter"),
    ],
    ids=["unnamed", "not-a-select", "unqualified-table", "file-reader", "unknown-parameter"],
)
def test_query_tests_refuse_what_cannot_run(line: str, message: str) -> None:
    with pytest.raises(sm.ModelError, match=message):
        sm.test_declarations(line, "m.sql")


def test_a_query_test_returns_its_rows_and_reads_only_the_integration() -> None:
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("create table marts.ref as select * from (values ('a', 1, 10), ('a', 2, 20), ('b', 1, 99)) "
                "v(integration, k, v)")
    m = model("t", "select 1 as k\n-- test: query(select t.k, t.v, r.v as ref_v from this as t "
                   "full join marts.ref as r on r.integration = t.integration and r.k = t.k "
                   "where t.v is distinct from r.v) as matches_ref")
    rows = pa.table({"integration": ["a", "a"], "k": [1, 2], "v": [10, 21]})
    bad = sm.test_failures(con, m, rows, "a")["matches_ref"]
    assert bad.rows() == [(2, 21, 20)]  # integration b's row is never compared
    assert sm.test_failures(con, m, pa.table({"integration": ["a", "a"], "k": [1, 2], "v": [10, 20]}),
                            "a")["matches_ref"].height == 0


def test_failing_rows_sql_finds_exactly_the_bad_rows() -> None:
    con = duckdb.connect()
    con.register("rel", pa.table({"k": [1, 1, 2, 3], "v": [1, 1, None, -5]}))
    assert con.sql(sm.failing_rows_sql(sm.DataTest("u", "unique", ("k",)), "rel")).fetchall() == [(1, 2)]
    assert con.sql(sm.failing_rows_sql(sm.DataTest("n", "not_null", ("k", "v")), "rel")).fetchall() == [(2, None)]
    positive = sm.DataTest("p", "expression", condition="v > 0")
    assert sorted(con.sql(sm.failing_rows_sql(positive, "rel")).fetchall(), key=str) == [(2, None), (3, -5)]


def test_scoped_sql_reads_only_the_integrations_rows() -> None:
    con = duckdb.connect()
    con.execute("create schema metrics")
    con.execute("create table metrics.t as select * from (values ('a', 1), ('b', 10)) v(integration, x)")
    scoped = sm.scoped_sql(model("t_sum", "select integration, sum(x) as x from metrics.t as t group by integration"))
    assert con.sql(scoped, params=sm.parameters_for(scoped, "a", AS_OF)).fetchall() == [("a", 1)]


def test_parameters_for_binds_only_what_the_sql_uses() -> None:
    assert sm.parameters_for("select $as_of as t", "a", AS_OF) == {"as_of": AS_OF}
    assert sm.parameters_for("select 1 as x", "a", AS_OF) == {}


def test_the_project_models_parse_and_read_known_tables() -> None:
    models = sm.load_models()
    known = sm.known_tables({"stripe": TABLES, "metrics": ["mrr_daily", "mrr_customer_movements"]})
    sm.check_refs(models, known)
    names = [m.name for m in models]
    assert {"mrr_monthly", "mrr_bridge_monthly", "mrr_by_product", "kpis_monthly", "cohort_retention",
            "movement_customers", "trials_monthly"} <= set(names)
    assert "customer_metrics_monthly" not in names  # replaced by kpis_monthly
    assert names.index("mrr_monthly") < names.index("mrr_bridge_monthly") < names.index("kpis_monthly")
    # a table a query test reads is a dependency too: the bridge is built before the drill-down checked against it
    assert names.index("mrr_bridge_monthly") < names.index("movement_customers")
    for m in models:
        assert m.description and not m.description.startswith("--")
        assert any(t.kind == "unique" and t.columns[0] == "integration" for t in m.tests), m.name


# --- the models on a hand-made warehouse ---------------------------------------------------------------------------

# Daily usd story of integration "acme" (end-of-day values):
#   Jan 30 A starts at 100 (new), Jan 31 B starts at 50 (new)                     -> Jan ends at 150
#   Feb 10 A 100->130 (expansion 30), Feb 15 B 50->30 (contraction 20),
#   Feb 20 B leaves (churned 30), Feb 25 C starts at 70 after a trial (new 70)     -> Feb ends at 200
#   Mar 3 B comes back at 30 (reactivation)                                        -> Mar 5 (today) 230
# eur: F starts at 40 on Mar 1. Integration "other" shares the file with a usd row that must never show up.
USD_CHANGES = {
    dt.date(2025, 1, 30): {"new_mrr": D("100")},
    dt.date(2025, 1, 31): {"new_mrr": D("50")},
    dt.date(2025, 2, 10): {"expansion_mrr": D("30")},
    dt.date(2025, 2, 15): {"contraction_mrr": D("20")},
    dt.date(2025, 2, 20): {"churned_mrr": D("30")},
    dt.date(2025, 2, 25): {"new_mrr": D("70")},
    dt.date(2025, 3, 3): {"reactivation_mrr": D("30")},
}
PAYING_USD = {dt.date(2025, 1, 30): 1, dt.date(2025, 1, 31): 2, dt.date(2025, 2, 20): 1, dt.date(2025, 2, 25): 2,
              dt.date(2025, 3, 3): 3}
MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")
# The customer rows behind the story (metrics.mrr_customer_movements): customer, currency, day, before, after, kind.
CUSTOMER_MOVES = [
    ("cus_a", "usd", "2025-01-30", "0", "100", "new"), ("cus_a", "usd", "2025-02-10", "100", "130", "expansion"),
    ("cus_b", "usd", "2025-01-31", "0", "50", "new"), ("cus_b", "usd", "2025-02-15", "50", "30", "contraction"),
    ("cus_b", "usd", "2025-02-20", "30", "0", "churned"), ("cus_b", "usd", "2025-03-03", "0", "30", "reactivation"),
    ("cus_c", "usd", "2025-02-25", "0", "70", "new"), ("cus_f", "eur", "2025-03-01", "0", "40", "new"),
]


def daily_rows(integration: str, currency: str, first: dt.date, changes: dict, paying: dict) -> list[dict]:
    rows, mrr, customers, day = [], D("0"), 0, first
    while day <= TODAY:
        moves = {m: changes.get(day, {}).get(m, D("0")) for m in MOVEMENTS}
        mrr += moves["new_mrr"] + moves["expansion_mrr"] + moves["reactivation_mrr"] - moves["contraction_mrr"] \
            - moves["churned_mrr"]
        customers = paying.get(day, customers)
        rows.append({"integration": integration, "date": day, "currency": currency, "mrr": mrr, "arr": 12 * mrr,
                     "active_subscriptions": customers, "paying_customers": customers, **moves})
        day += dt.timedelta(days=1)
    return rows


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# (id, customer, status, currency, start_date, trial_start, trial_end, cancel_at_period_end, canceled_at, ended_at)
SUBSCRIPTIONS = [
    ("sub_a", "cus_a", "active", "usd", "2025-01-30", None, None, False, None, None),
    ("sub_b1", "cus_b", "canceled", "usd", "2025-01-31", None, None, False, "2025-02-20 10:00", "2025-02-20 10:00"),
    ("sub_b2", "cus_b", "active", "usd", "2025-03-03", None, None, False, None, None),
    ("sub_c", "cus_c", "active", "usd", "2025-02-11", "2025-02-11", "2025-02-25", False, None, None),
    ("sub_d", "cus_d", "trialing", "usd", "2025-02-20", "2025-02-20", "2025-03-06", False, None, None),
    ("sub_e", "cus_e", "canceled", "usd", "2025-01-15", "2025-01-15", "2025-01-29", True, "2025-01-20",
     "2025-01-29"),
    ("sub_g", "cus_g", "incomplete", "usd", "2025-02-01", None, None, False, None, None),
    ("sub_f", "cus_f", "active", "eur", "2025-03-01", None, None, False, None, None),
    ("sub_h", "cus_h", "active", "jpy", "2025-01-10", None, None, False, None, None),
    ("sub_i", "cus_i", "active", "gbp", "2025-01-10", None, None, False, None, None),
    ("sub_j", "cus_j", "active", "gbp", "2025-01-10", None, None, False, None, None),
    ("sub_k", "cus_k", "active", "cad", "2025-01-10", None, None, False, None, None),
    ("sub_l", "cus_l", "active", "chf", "2025-01-10", None, None, False, None, None),
    ("sub_m", "cus_m", "active", "usd", "2025-02-02", None, None, True, "2025-03-04 09:00", None),
]
# (id, product, currency, billing_scheme, tiers_mode, unit_amount, interval, interval_count, usage_type, divide_by)
PRICES = [
    ("price_seat", "prod_team", "usd", "per_unit", None, 1000, "month", 1, "licensed", None),
    ("price_pro_year", "prod_pro", "usd", "per_unit", None, 84000, "year", 1, "licensed", None),
    ("price_api", "prod_api", "usd", "per_unit", None, 5, "month", 1, "metered", None),
    ("price_eur", "prod_team", "eur", "per_unit", None, 4000, "month", 1, "licensed", None),
    ("price_jpy_year", "prod_team", "jpy", "per_unit", None, 60000, "year", 1, "licensed", None),
    ("price_grad", "prod_tiers", "gbp", "tiered", "graduated", None, "month", 1, "licensed", None),
    ("price_vol", "prod_tiers", "gbp", "tiered", "volume", None, "month", 1, "licensed", None),
    ("price_week", "prod_team", "cad", "per_unit", None, 1000, "week", 1, "licensed", None),
    ("price_pack", "prod_team", "chf", "per_unit", None, 500, "month", 1, "licensed", 10),
]
# (id, subscription, price, quantity)
ITEMS = [
    ("si_a", "sub_a", "price_seat", 13), ("si_b1", "sub_b1", "price_seat", 5), ("si_b2", "sub_b2", "price_seat", 3),
    ("si_c", "sub_c", "price_pro_year", 1), ("si_c2", "sub_c", "price_api", None), ("si_d", "sub_d", "price_seat", 5),
    ("si_e", "sub_e", "price_seat", 1), ("si_g", "sub_g", "price_seat", 1), ("si_f", "sub_f", "price_eur", 1),
    ("si_h", "sub_h", "price_jpy_year", 1), ("si_i", "sub_i", "price_grad", 15), ("si_j", "sub_j", "price_vol", 15),
    ("si_k", "sub_k", "price_week", 1), ("si_l", "sub_l", "price_pack", 25), ("si_m", "sub_m", "price_seat", 2),
]
TIERS = [("price_grad", 0, 10, 500), ("price_grad", 1, None, 400), ("price_vol", 0, 10, 500), ("price_vol", 1, None, 400)]


def empty_stripe_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    con.register("_shape", pa.table({f.name: pa.array([], type=f.type) for f in TABLES[table]}))
    con.execute(f"create table stripe.{table} as select * from _shape")
    con.unregister("_shape")


@pytest.fixture
def warehouse(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "acme.duckdb"))
    seed(con, INTEGRATION)
    yield con
    con.close()


def seed(con: duckdb.DuckDBPyConnection, integration: str) -> None:
    """The story above as `integration`'s rows, plus one other integration's rows that must never show up."""
    for schema in ("stripe", "metrics", "marts"):
        con.execute(f"create schema {schema}")
    for table in TABLES:
        empty_stripe_table(con, table)
    con.execute("""create table metrics.mrr_daily (integration varchar, date date, currency varchar,
        mrr decimal(18,2), arr decimal(18,2), active_subscriptions integer, paying_customers integer,
        new_mrr decimal(18,2), expansion_mrr decimal(18,2), reactivation_mrr decimal(18,2),
        contraction_mrr decimal(18,2), churned_mrr decimal(18,2))""")
    rows = (daily_rows(integration, "usd", dt.date(2025, 1, 30), USD_CHANGES, PAYING_USD)
            + daily_rows(integration, "eur", dt.date(2025, 3, 1), {dt.date(2025, 3, 1): {"new_mrr": D("40")}},
                         {dt.date(2025, 3, 1): 1})
            + daily_rows("other", "usd", dt.date(2025, 1, 1), {dt.date(2025, 1, 1): {"new_mrr": D("999")}},
                         {dt.date(2025, 1, 1): 9}))
    con.executemany("insert into metrics.mrr_daily by name select * from (select ?::varchar as integration, "
                    "?::date as date, ?::varchar as currency, ?::decimal(18,2) as mrr, ?::decimal(18,2) as arr, "
                    "?::integer as active_subscriptions, ?::integer as paying_customers, ?::decimal(18,2) as new_mrr, "
                    "?::decimal(18,2) as expansion_mrr, ?::decimal(18,2) as reactivation_mrr, "
                    "?::decimal(18,2) as contraction_mrr, ?::decimal(18,2) as churned_mrr)",
                    [[r[c] for c in ("integration", "date", "currency", "mrr", "arr", "active_subscriptions",
                                     "paying_customers", *MOVEMENTS)] for r in rows])
    con.execute("""create table metrics.mrr_customer_movements (integration varchar, currency varchar,
        customer varchar, date date, previous_mrr decimal(18,2), mrr decimal(18,2), movement varchar,
        amount decimal(18,2))""")
    con.executemany("insert into metrics.mrr_customer_movements values (?, ?, ?, ?, ?, ?, ?, abs(?::decimal(18,2) - ?))",
                    [[integration, cur, cus, day, before, after, kind, after, before]
                     for cus, cur, day, before, after, kind in CUSTOMER_MOVES]
                    + [["other", "usd", "cus_x", "2025-01-01", "0", "999", "new", "999", "0"]])
    con.executemany("insert into stripe.subscriptions (integration, id, customer, status, currency, start_date, "
                    "trial_start, trial_end, cancel_at_period_end, canceled_at, ended_at, current_period_start) "
                    "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[integration, s[0], s[1], s[2], s[3], ts(s[4]), s[5] and ts(s[5]), s[6] and ts(s[6]), s[7],
                      s[8] and ts(s[8]), s[9] and ts(s[9]), ts("2025-03-01")] for s in SUBSCRIPTIONS]
                    + [["other", "sub_a", "cus_x", "active", "usd", ts("2024-01-01"), None, None, False, None, None,
                        ts("2025-03-01")]])
    con.executemany("insert into stripe.prices (integration, id, product, currency, type, billing_scheme, tiers_mode, "
                    "unit_amount, unit_amount_decimal, recurring_interval, recurring_interval_count, "
                    "recurring_usage_type, transform_quantity_divide_by, transform_quantity_round) "
                    "values (?, ?, ?, ?, 'recurring', ?, ?, ?, ?, ?, ?, ?, ?, 'up')",
                    [[integration, p[0], p[1], p[2], p[3], p[4], p[5], p[5], p[6], p[7], p[8], p[9]] for p in PRICES])
    con.executemany("insert into stripe.subscription_items (integration, id, subscription, price, quantity) "
                    "values (?, ?, ?, ?, ?)", [[integration, *i] for i in ITEMS])
    con.executemany("insert into stripe.price_tiers (integration, price, tier_index, up_to, unit_amount, flat_amount) "
                    "values (?, ?, ?, ?, ?, 0)", [[integration, *t] for t in TIERS])
    con.executemany("insert into stripe.customers (integration, id, name, email) values (?, ?, ?, ?)",
                    [[integration, "cus_a", "Acme Corp", "billing@acme.test"],
                     [integration, "cus_b", "Bolt Ltd", None]])
    con.executemany("insert into stripe.products (integration, id, name) values (?, ?, ?)",
                    [[integration, "prod_team", "Team"], [integration, "prod_pro", "Pro"],
                     [integration, "prod_tiers", "Tiers"]])


def build_marts(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """Run every project model for INTEGRATION in order, as the assets do; every declared test must hold."""
    built: dict[str, pl.DataFrame] = {}
    for m in sm.load_models():
        rows = sm.run_model(con, m, INTEGRATION, AS_OF)
        broken = {name: bad for name, bad in sm.test_failures(con, m, rows, INTEGRATION, AS_OF).items() if bad.height}
        assert not broken, f"{m.name}: {broken}"
        frame = pl.from_arrow(rows)
        replace_rows(con, "marts", m.name, frame, INTEGRATION)
        built[m.name] = frame
    return built


def records(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return [tuple(r) for r in frame.select(columns).iter_rows()]


def test_mrr_monthly_is_end_of_month_and_today(warehouse: duckdb.DuckDBPyConnection) -> None:
    monthly = build_marts(warehouse)["mrr_monthly"]
    assert records(monthly, "integration", "currency", "month", "as_of_date", "mrr", "arr", "paying_customers") == [
        ("acme", "eur", dt.date(2025, 3, 1), TODAY, D("40.00"), D("480.00"), 1),
        ("acme", "usd", dt.date(2025, 1, 1), dt.date(2025, 1, 31), D("150.00"), D("1800.00"), 2),
        ("acme", "usd", dt.date(2025, 2, 1), dt.date(2025, 2, 28), D("200.00"), D("2400.00"), 2),
        ("acme", "usd", dt.date(2025, 3, 1), TODAY, D("230.00"), D("2760.00"), 3),
    ]


def test_mrr_bridge_monthly_reconciles(warehouse: duckdb.DuckDBPyConnection) -> None:
    bridge = build_marts(warehouse)["mrr_bridge_monthly"]
    assert records(bridge.filter(pl.col("currency") == "usd"), "month", "starting_mrr", "new_mrr", "expansion_mrr",
                   "reactivation_mrr", "contraction_mrr", "churned_mrr", "ending_mrr") == [
        (dt.date(2025, 1, 1), D("0.00"), D("150.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00"), D("150.00")),
        (dt.date(2025, 2, 1), D("150.00"), D("70.00"), D("30.00"), D("0.00"), D("20.00"), D("30.00"), D("200.00")),
        (dt.date(2025, 3, 1), D("200.00"), D("0.00"), D("0.00"), D("30.00"), D("0.00"), D("0.00"), D("230.00")),
    ]
    for r in bridge.iter_rows(named=True):
        assert (r["starting_mrr"] + r["new_mrr"] + r["expansion_mrr"] + r["reactivation_mrr"] - r["contraction_mrr"]
                - r["churned_mrr"]) == r["ending_mrr"] == r["starting_mrr"] + r["net_new_mrr"]
    assert set(bridge["integration"]) == {"acme"}


def test_subscription_periods(warehouse: duckdb.DuckDBPyConnection) -> None:
    periods = build_marts(warehouse)["subscription_periods"].sort("subscription")
    got = {r["subscription"]: (r["counts_from"], r["counts_until"]) for r in periods.iter_rows(named=True)}
    assert got["sub_a"] == (ts("2025-01-30"), None)
    assert got["sub_b1"] == (ts("2025-01-31"), ts("2025-02-20 10:00"))
    assert got["sub_c"] == (ts("2025-02-25"), None)  # from the end of its trial
    assert got["sub_d"] == (ts("2025-03-06"), None)  # trial still running
    assert got["sub_e"] == (None, None)  # canceled during its trial
    assert got["sub_g"] == (None, None)  # incomplete
    assert got["sub_m"] == (ts("2025-02-02"), ts("2025-03-04 09:00"))  # stops when the cancellation was requested
    assert periods.height == len(SUBSCRIPTIONS)


def test_mrr_by_product(warehouse: duckdb.DuckDBPyConnection) -> None:
    by_product = build_marts(warehouse)["mrr_by_product"]
    assert records(by_product, "currency", "product", "product_name", "price", "subscriptions", "quantity",
                   "mrr_before_discounts") == [
        ("cad", "prod_team", "Team", "price_week", 1, 1, D("43.33")),  # 10.00 a week x 52 / 12
        ("chf", "prod_team", "Team", "price_pack", 1, 25, D("15.00")),  # 25 units in packs of 10, rounded up: 3 x 5.00
        ("eur", "prod_team", "Team", "price_eur", 1, 1, D("40.00")),
        ("gbp", "prod_tiers", "Tiers", "price_grad", 1, 15, D("70.00")),  # 10 x 5.00 + 5 x 4.00
        ("gbp", "prod_tiers", "Tiers", "price_vol", 1, 15, D("60.00")),  # 15 x 4.00
        ("jpy", "prod_team", "Team", "price_jpy_year", 1, 1, D("5000.00")),  # zero-decimal: 60,000 / 12
        # sub_a 13 seats + sub_b2 3 seats; not sub_b1 (canceled), sub_d (trialing), sub_m (cancellation requested)
        ("usd", "prod_team", "Team", "price_seat", 2, 16, D("160.00")),
        ("usd", "prod_pro", "Pro", "price_pro_year", 1, 1, D("70.00")),  # 840.00 a year; the metered item left out
    ]
    assert set(by_product["as_of_date"]) == {TODAY}


def test_trials_monthly(warehouse: duckdb.DuckDBPyConnection) -> None:
    trials = build_marts(warehouse)["trials_monthly"]
    assert records(trials, "integration", "month", "trials_started", "trials_ended", "trials_converted") == [
        ("acme", dt.date(2025, 1, 1), 1, 1, 0),  # sub_e, canceled during the trial
        ("acme", dt.date(2025, 2, 1), 2, 1, 1),  # sub_c and sub_d start; sub_c converts, sub_d ends in March
    ]
    assert trials["conversion_rate"].to_list() == [0.0, 1.0]


def test_a_broken_property_is_reported_with_its_rows(warehouse: duckdb.DuckDBPyConnection) -> None:
    warehouse.execute("update metrics.mrr_daily set new_mrr = 0 where date = '2025-02-25' and currency = 'usd'")
    models = {m.name: m for m in sm.load_models()}
    rows = sm.run_model(warehouse, models["mrr_monthly"], INTEGRATION, AS_OF)
    replace_rows(warehouse, "marts", "mrr_monthly", pl.from_arrow(rows), INTEGRATION)
    bridge = sm.run_model(warehouse, models["mrr_bridge_monthly"], INTEGRATION, AS_OF)
    failures = sm.test_failures(warehouse, models["mrr_bridge_monthly"], bridge, INTEGRATION)
    assert failures["movements_reconcile"]["month"].to_list() == [dt.date(2025, 2, 1)]
    assert failures["unique_integration_currency_month"].height == 0


def test_running_a_model_before_its_inputs_exist_says_what_to_do() -> None:
    con = duckdb.connect()
    with pytest.raises(sm.ModelError, match="Materialize the tables it reads"):
        sm.run_model(con, sm.load_models()[0], INTEGRATION, AS_OF)
