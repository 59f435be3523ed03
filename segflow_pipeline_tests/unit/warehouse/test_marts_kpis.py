"""marts.kpis_monthly, marts.cohort_retention and marts.movement_customers on the hand-made warehouse of
test_sql_models (its story is told there), every expected value worked out by hand from that story; and their
checks, each shown to fail once its input is broken."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import duckdb
import polars as pl

from segflow_pipeline.warehouse import sql_models as sm
from segflow_pipeline_tests.unit.warehouse.test_sql_models import (AS_OF, INTEGRATION, build_marts, records,
                                                                   warehouse)  # noqa: F401 (fixture)

D = Decimal
FEB, MAR = dt.date(2025, 2, 1), dt.date(2025, 3, 1)


def add_customer(con: duckdb.DuckDBPyConnection, customer: str, changes: list[tuple[str, str]],
                 currency: str = "usd", before: str = "0", seen: bool = False) -> None:
    """Add one customer's MRR story (day, MRR from that day on) to both metrics tables, consistently; `before` and
    `seen` continue the story of a customer already there (its MRR before the first change, whether it paid)."""
    before = D(before)
    for day, value in changes:
        after = D(value)
        kind = ("new" if not seen else "reactivation") if before == 0 else \
            "churned" if after == 0 else "expansion" if after > before else "contraction"
        column = f"{kind}_mrr"
        con.execute("insert into metrics.mrr_customer_movements values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [INTEGRATION, currency, customer, day, before, after, kind, abs(after - before)])
        con.execute(f"update metrics.mrr_daily set {column} = {column} + ? "
                    "where integration = ? and currency = ? and date = ?",
                    [abs(after - before), INTEGRATION, currency, day])
        con.execute("update metrics.mrr_daily set mrr = mrr + ?, arr = arr + 12 * ?, "
                    "paying_customers = paying_customers + ? where integration = ? and currency = ? and date >= ?",
                    [after - before, after - before, int(after > 0) - int(before > 0), INTEGRATION, currency, day])
        before, seen = after, seen or after > 0


def month_row(frame: pl.DataFrame, month: dt.date, currency: str = "usd") -> dict:
    rows = frame.filter((pl.col("currency") == currency) & (pl.col("month") == month)).to_dicts()
    assert len(rows) == 1
    return rows[0]


KPI_COLUMNS = ("month", "as_of_date", "starting_mrr", "ending_mrr", "net_new_mrr", "new_mrr", "expansion_mrr",
               "reactivation_mrr", "contraction_mrr", "churned_mrr", "paying_customers", "arpa",
               "starting_customers", "churned_customers", "new_customers", "reactivated_customers",
               "logo_churn_rate", "cohort_ending_mrr", "retained_mrr", "net_revenue_retention",
               "gross_revenue_retention", "gross_revenue_churn_rate", "quick_ratio")


def test_kpis_monthly(warehouse: duckdb.DuckDBPyConnection) -> None:
    kpis = build_marts(warehouse)["kpis_monthly"]
    assert records(kpis.filter(pl.col("currency") == "usd"), *KPI_COLUMNS) == [
        # January: A and B join; no cohort yet, so no rates
        (dt.date(2025, 1, 1), dt.date(2025, 1, 31), D("0.00"), D("150.00"), D("150.00"), D("150.00"), D("0.00"),
         D("0.00"), D("0.00"), D("0.00"), 2, D("75.00"), 0, 0, 2, 0, None, D("0.00"), D("0.00"), None, None, None,
         None),
        # February: cohort A (100) and B (50). A ends at 130, B churned: NRR 130/150, GRR (100 + 0)/150, logo churn
        # 1/2; C joined (new) and is not in the cohort. Quick ratio (70 + 30) / (20 + 30).
        (FEB, dt.date(2025, 2, 28), D("150.00"), D("200.00"), D("50.00"), D("70.00"), D("30.00"), D("0.00"),
         D("20.00"), D("30.00"), 2, D("100.00"), 2, 1, 1, 0, D("0.5000"), D("130.00"), D("100.00"), D("0.8667"),
         D("0.6667"), D("0.3333"), D("2.0000")),
        # March to today (the 5th): cohort A (130) and C (70) unchanged; B comes back but is not in the cohort.
        # ARPA 230 / 3 = 76.666... -> 76.67. Nothing lost: no quick ratio.
        (MAR, dt.date(2025, 3, 5), D("200.00"), D("230.00"), D("30.00"), D("0.00"), D("0.00"), D("30.00"),
         D("0.00"), D("0.00"), 3, D("76.67"), 2, 0, 0, 1, D("0.0000"), D("200.00"), D("200.00"), D("1.0000"),
         D("1.0000"), D("0.0000"), None),
    ]
    assert records(kpis.filter(pl.col("currency") == "eur"), "month", "starting_mrr", "ending_mrr", "arpa",
                   "net_revenue_retention") == [(MAR, D("0.00"), D("40.00"), D("40.00"), None)]
    assert set(kpis["integration"]) == {INTEGRATION}


def test_nrr_leaves_out_customers_who_joined_during_the_month(warehouse: duckdb.DuckDBPyConnection) -> None:
    """Z joins on Feb 3 at 500 and churns on Feb 8. Z's churn is in the month's churned MRR, but Z was never in
    February's start-of-month cohort, so NRR stays 130/150. Counting the bridge's churn against the cohort's start
    (150 + 30 - 20 - 530) / 150 gave -2.4667 and failed net_revenue_retention_not_negative."""
    add_customer(warehouse, "cus_z", [("2025-02-03", "500"), ("2025-02-08", "0")])
    feb = month_row(build_marts(warehouse)["kpis_monthly"], FEB)
    assert (feb["new_mrr"], feb["churned_mrr"], feb["starting_customers"], feb["churned_customers"],
            feb["new_customers"]) == (D("570.00"), D("530.00"), 2, 1, 2)
    assert feb["net_revenue_retention"] == D("0.8667")
    assert feb["gross_revenue_retention"] == D("0.6667")
    assert feb["logo_churn_rate"] == D("0.5000")
    assert feb["quick_ratio"] == D("1.0909")  # (570 + 30) / (20 + 530) = 1.090909...


def test_a_cohort_customer_who_leaves_and_returns_counts_with_its_end_mrr(
        warehouse: duckdb.DuckDBPyConnection) -> None:
    """Y pays 40 from Jan 30, leaves on Feb 5 and comes back at 60 on Feb 12: in February's cohort, not churned,
    NRR counts its 60, GRR only the 40 it had at the start."""
    add_customer(warehouse, "cus_y", [("2025-01-30", "40"), ("2025-02-05", "0"), ("2025-02-12", "60")])
    feb = month_row(build_marts(warehouse)["kpis_monthly"], FEB)
    assert (feb["starting_mrr"], feb["ending_mrr"], feb["starting_customers"], feb["churned_customers"],
            feb["reactivated_customers"], feb["paying_customers"]) == (D("190.00"), D("260.00"), 3, 1, 1, 3)
    assert (feb["cohort_ending_mrr"], feb["retained_mrr"]) == (D("190.00"), D("140.00"))  # 130 + 0 + 60; 100 + 0 + 40
    assert (feb["net_revenue_retention"], feb["gross_revenue_retention"], feb["gross_revenue_churn_rate"],
            feb["logo_churn_rate"], feb["arpa"]) == (D("1.0000"), D("0.7368"), D("0.2632"), D("0.3333"), D("86.67"))


def test_cohort_retention(warehouse: duckdb.DuckDBPyConnection) -> None:
    cohorts = build_marts(warehouse)["cohort_retention"]
    assert records(cohorts, "currency", "cohort_month", "months_since_start", "month", "cohort_customers",
                   "first_month_customers", "first_month_mrr", "customers", "mrr", "customer_retention_rate",
                   "mrr_retention_rate") == [
        ("eur", MAR, 0, MAR, 1, 1, D("40.00"), 1, D("40.00"), D("1.0000"), D("1.0000")),
        # A (100) and B (50) start in January; at February's end only A, at 130; today A 130 and B 30 again
        ("usd", dt.date(2025, 1, 1), 0, dt.date(2025, 1, 1), 2, 2, D("150.00"), 2, D("150.00"), D("1.0000"),
         D("1.0000")),
        ("usd", dt.date(2025, 1, 1), 1, FEB, 2, 2, D("150.00"), 1, D("130.00"), D("0.5000"), D("0.8667")),
        ("usd", dt.date(2025, 1, 1), 2, MAR, 2, 2, D("150.00"), 2, D("160.00"), D("1.0000"), D("1.0667")),
        ("usd", FEB, 0, FEB, 1, 1, D("70.00"), 1, D("70.00"), D("1.0000"), D("1.0000")),
        ("usd", FEB, 1, MAR, 1, 1, D("70.00"), 1, D("70.00"), D("1.0000"), D("1.0000")),
    ]
    assert cohorts.filter(pl.col("month") == MAR)["as_of_date"].to_list() == [AS_OF.date()] * 3


def test_a_customer_gone_within_its_first_month_stays_in_its_cohort(warehouse: duckdb.DuckDBPyConnection) -> None:
    add_customer(warehouse, "cus_z", [("2025-02-03", "500"), ("2025-02-08", "0"), ("2025-03-02", "20")])
    feb = build_marts(warehouse)["cohort_retention"].filter((pl.col("currency") == "usd")
                                                            & (pl.col("cohort_month") == FEB))
    assert records(feb, "months_since_start", "cohort_customers", "first_month_customers", "customers", "mrr",
                   "customer_retention_rate", "mrr_retention_rate") == [
        (0, 2, 1, 1, D("70.00"), D("1.0000"), D("1.0000")),
        (1, 2, 1, 2, D("90.00"), D("2.0000"), D("1.2857")),  # Z is back: 2 of the 1 paying at February's end
    ]


def test_movement_customers(warehouse: duckdb.DuckDBPyConnection) -> None:
    drill = build_marts(warehouse)["movement_customers"].filter(pl.col("currency") == "usd")
    assert records(drill, "month", "date", "movement", "customer", "customer_name", "customer_email",
                   "subscriptions", "mrr_before", "mrr_after", "amount") == [
        (dt.date(2025, 1, 1), dt.date(2025, 1, 30), "new", "cus_a", "Acme Corp", "billing@acme.test", "sub_a",
         D("0.00"), D("100.00"), D("100.00")),
        (dt.date(2025, 1, 1), dt.date(2025, 1, 31), "new", "cus_b", "Bolt Ltd", None, "sub_b1", D("0.00"),
         D("50.00"), D("50.00")),
        (FEB, dt.date(2025, 2, 20), "churned", "cus_b", "Bolt Ltd", None, "sub_b1", D("30.00"), D("0.00"),
         D("30.00")),
        (FEB, dt.date(2025, 2, 15), "contraction", "cus_b", "Bolt Ltd", None, "sub_b1", D("50.00"), D("30.00"),
         D("20.00")),
        (FEB, dt.date(2025, 2, 10), "expansion", "cus_a", "Acme Corp", "billing@acme.test", "sub_a", D("100.00"),
         D("130.00"), D("30.00")),
        (FEB, dt.date(2025, 2, 25), "new", "cus_c", None, None, "sub_c", D("0.00"), D("70.00"), D("70.00")),
        # B came back with a new subscription; the one that ended on Feb 20 is not listed
        (MAR, dt.date(2025, 3, 3), "reactivation", "cus_b", "Bolt Ltd", None, "sub_b2", D("0.00"), D("30.00"),
         D("30.00")),
    ]


def test_movement_customers_lists_every_subscription_when_their_dates_do_not_tell(
        warehouse: duckdb.DuckDBPyConnection) -> None:
    # B goes down from 30 to 10 on Mar 4, when sub_b2 counts by its own dates
    add_customer(warehouse, "cus_b", [("2025-03-04", "10")], before="30", seen=True)
    drill = build_marts(warehouse)["movement_customers"]
    row = drill.filter((pl.col("customer") == "cus_b") & (pl.col("date") == dt.date(2025, 3, 4))).to_dicts()[0]
    assert (row["movement"], row["subscriptions"]) == ("contraction", "sub_b2")  # sub_b2 counts that day
    # with sub_b2 starting after Mar 4 by its own dates, no subscription of B's counts then: all are listed
    warehouse.execute("update stripe.subscriptions set start_date = '2025-03-10' where id = 'sub_b2'")
    drill = build_marts(warehouse)["movement_customers"]
    row = drill.filter((pl.col("customer") == "cus_b") & (pl.col("date") == dt.date(2025, 3, 4))).to_dicts()[0]
    assert row["subscriptions"] == "sub_b1,sub_b2"


# --- the checks fail on broken input -----------------------------------------------------------------------------


def failures(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, pl.DataFrame]:
    """Build the models up to `name` and return the rows breaking each of its tests (nothing asserted)."""
    for m in sm.load_models():
        rows = sm.run_model(con, m, INTEGRATION, AS_OF)
        if m.name == name:
            return {k: v for k, v in sm.test_failures(con, m, rows, INTEGRATION, AS_OF).items() if v.height}
        con.register("_rows", rows)
        con.execute(f"create or replace table marts.{m.name} as select * from _rows")
        con.unregister("_rows")
    raise AssertionError(name)


def test_every_check_holds_on_the_story(warehouse: duckdb.DuckDBPyConnection) -> None:
    for name in ("customer_mrr_monthly", "kpis_monthly", "cohort_retention", "movement_customers"):
        assert failures(warehouse, name) == {}, name


def test_customer_month_ends(warehouse: duckdb.DuckDBPyConnection) -> None:
    ends = build_marts(warehouse)["customer_mrr_monthly"].filter(pl.col("currency") == "usd")
    by_month = ends.group_by("month").agg(pl.col("mrr").sum(), pl.len().alias("customers")).sort("month")
    monthly = build_marts(warehouse)["mrr_monthly"].filter(pl.col("currency") == "usd").sort("month")
    # the same month ends as metrics.mrr_daily, from the other table
    assert by_month.rows() == monthly.select("month", "mrr", pl.col("paying_customers").cast(pl.UInt32)).rows()
    assert ends["mrr"].min() > 0


def test_a_customer_movement_that_disagrees_with_mrr_daily_fails_the_cross_checks(
        warehouse: duckdb.DuckDBPyConnection) -> None:
    # A's expansion recorded as 100 -> 140 (40) while metrics.mrr_daily says 130 (30)
    warehouse.execute("update metrics.mrr_customer_movements set mrr = 140, amount = 40 "
                      "where customer = 'cus_a' and date = '2025-02-10'")
    kpis = failures(warehouse, "kpis_monthly")
    assert set(kpis) == {"movements_reconcile", "agrees_with_mrr_daily"}
    assert kpis["movements_reconcile"]["month"].to_list() == [FEB, MAR]  # February ends, March starts at 210
    # February's expansion (40 vs 30), and March's start (A at 140) and end disagree
    assert sorted(kpis["agrees_with_mrr_daily"]["kpis_month"].to_list()) == [FEB, MAR]
    assert set(failures(warehouse, "cohort_retention")) == {"cohorts_add_up_to_mrr_daily"}
    ends = failures(warehouse, "customer_mrr_monthly")
    assert set(ends) == {"adds_up_to_mrr_daily"}
    # A at 140 instead of 130 from February's end on
    assert ends["adds_up_to_mrr_daily"].filter(pl.col("currency") == "usd").select(
        "month", "mrr", "customers_mrr").rows() == [(FEB, D("200.00"), D("210.00")), (MAR, D("230.00"), D("240.00"))]
    drill = failures(warehouse, "movement_customers")
    assert set(drill) == {"sums_to_the_bridge"}
    assert drill["sums_to_the_bridge"].select("month", "expansion_mrr", "customers_expansion_mrr").rows() == [
        (FEB, D("30.00"), D("40.00"))]


def test_a_missing_customer_movement_fails_the_cohort_checks(warehouse: duckdb.DuckDBPyConnection) -> None:
    warehouse.execute("delete from metrics.mrr_customer_movements where customer = 'cus_c'")
    assert "agrees_with_mrr_daily" in failures(warehouse, "kpis_monthly")
    assert set(failures(warehouse, "cohort_retention")) == {"cohorts_add_up_to_mrr_daily"}
    assert set(failures(warehouse, "customer_mrr_monthly")) == {"adds_up_to_mrr_daily"}
    assert set(failures(warehouse, "movement_customers")) == {"sums_to_the_bridge"}


def test_a_movement_labelled_wrongly_fails(warehouse: duckdb.DuckDBPyConnection) -> None:
    warehouse.execute("update metrics.mrr_customer_movements set movement = 'new' "
                      "where customer = 'cus_b' and date = '2025-03-03'")
    drill = failures(warehouse, "movement_customers")
    assert set(drill) == {"new_only_on_the_first_day", "sums_to_the_bridge"}
    warehouse.execute("update metrics.mrr_customer_movements set movement = 'reactivation', amount = 31 "
                      "where customer = 'cus_b' and date = '2025-03-03'")
    assert "movement_matches_the_change" in failures(warehouse, "movement_customers")


def test_negative_movements_fail(warehouse: duckdb.DuckDBPyConnection) -> None:
    warehouse.execute("update metrics.mrr_customer_movements set amount = -amount where customer = 'cus_b' "
                      "and movement = 'churned'")
    warehouse.execute("update metrics.mrr_daily set churned_mrr = -churned_mrr, mrr = mrr + 60, arr = arr + 720 "
                      "where currency = 'usd' and date >= '2025-02-20' and churned_mrr > 0")
    assert "amounts_not_negative" in failures(warehouse, "kpis_monthly")


# --- documentation -----------------------------------------------------------------------------------------------


def test_every_column_of_every_model_is_documented_once(warehouse: duckdb.DuckDBPyConnection) -> None:
    built = build_marts(warehouse)
    for m in sm.load_models():
        documented = re.findall(r"^-- @col ([a-z_][a-z0-9_]*): \S", m.sql, flags=re.M)
        assert documented == built[m.name].columns, m.name


def test_docs_list_every_column_of_every_mart_and_reporting_table() -> None:
    from segflow_pipeline.transform import reporting_currency as rc

    docs = (sm.MODELS_DIR.parent / "docs" / "tables.md").read_text()
    sections = dict(re.findall(r"^### `?([a-z_]+\.[a-z_]+)`?\n(.*?)(?=^#{2,3} |\Z)", docs, flags=re.M | re.S))
    expected = {f"marts.{m.name}": re.findall(r"^-- @col ([a-z_][a-z0-9_]*):", m.sql, flags=re.M)
                for m in sm.load_models()}
    expected["metrics.mrr_daily_reporting"] = list(rc.DAILY_REPORTING_SCHEMA)
    expected["marts.kpis_monthly_reporting"] = list(rc.KPIS_REPORTING_SCHEMA)
    assert set(expected) <= set(sections)
    for table, columns in expected.items():
        assert re.findall(r"^\| `([a-z_0-9]+)` \|", sections[table], flags=re.M) == columns, table
    assert set(rc.DAILY_REPORTING_COLUMNS) == set(rc.DAILY_REPORTING_SCHEMA)
    assert set(rc.KPIS_REPORTING_COLUMNS) == set(rc.KPIS_REPORTING_SCHEMA)
