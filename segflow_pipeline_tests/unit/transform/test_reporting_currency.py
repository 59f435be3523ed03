"""Reporting currency: rates read exactly, days without a rate named, conversions and KPIs worked out by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segflow_pipeline.transform import mrr
from segflow_pipeline.transform import reporting_currency as rc

D = Decimal
MOVES = mrr.MOVEMENTS


def rates(*rows: tuple[str, str, str]) -> pl.DataFrame:
    return rc.rates_table(pl.DataFrame(rows, schema=["date", "currency", "rate"], orient="row"), "usd")


def daily(rows: list[tuple]) -> pl.DataFrame:
    """(currency, day, mrr, {movement: amount}) → metrics.mrr_daily rows of integration acme."""
    out = []
    for currency, day, value, moves in rows:
        out.append({"integration": "acme", "date": dt.date.fromisoformat(day), "currency": currency,
                    "mrr": D(value), "arr": 12 * D(value), "active_subscriptions": 1, "paying_customers": 1,
                    **{m: D(moves.get(m, "0")) for m in MOVES}})
    return pl.DataFrame(out).cast(mrr.DAILY_SCHEMA).select(list(mrr.DAILY_SCHEMA))


# --- the rates file ------------------------------------------------------------------------------------------------


def test_rates_are_read_exactly_and_sorted() -> None:
    table = rates(("2025-02-01", "EUR", "1.2"), ("2025-01-01", "eur", "1.0832"), (" 2025-01-01", "jpy", "0.006667"),
                  ("2025-01-01", "usd", "1"))
    assert table.schema == pl.Schema(rc.RATES_SCHEMA)
    assert table.rows() == [(dt.date(2025, 1, 1), "eur", D("1.0832")), (dt.date(2025, 2, 1), "eur", D("1.2")),
                            (dt.date(2025, 1, 1), "jpy", D("0.006667")), (dt.date(2025, 1, 1), "usd", D("1"))]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("2025-13-01", "eur", "1.1")], r"line 2 \(2025-13-01,eur,1.1\): date must be YYYY-MM-DD"),
        ([("2025-01-01", "eur", "1.1"), ("2025-01-02", "euro", "1.1")], "line 3 .*three-letter ISO code"),
        ([("2025-01-01", "eur", "-1")], "rate must be a positive decimal"),
        ([("2025-01-01", "eur", "0")], "rate must be a positive decimal"),
        ([("2025-01-01", "eur", "1.1234567890123")], "at most 12 decimals"),
        ([("2025-01-01", "eur", "1,1")], "rate must be a positive decimal"),
        ([("2025-01-01", "eur", "1.1"), ("2025-01-01", "eur", "1.2")], "a second rate for the same currency"),
        ([("2025-01-01", "usd", "0.92")], "usd is the reporting currency, so its rate is 1"),
    ],
    ids=["bad-date", "bad-currency", "negative", "zero", "too-precise", "decimal-comma", "duplicate",
         "reporting-currency-not-1"],
)
def test_unusable_rates_name_the_line(rows, message) -> None:
    with pytest.raises(rc.RatesError, match=message):
        rc.rates_table(pl.DataFrame(rows, schema=["date", "currency", "rate"], orient="row"), "usd", "fx.csv")


def test_a_rates_file_without_the_columns_says_so() -> None:
    with pytest.raises(rc.RatesError, match="header must be date,currency,rate"):
        rc.rates_table(pl.DataFrame({"day": ["2025-01-01"], "rate": ["1"]}), "usd")


# --- days without a rate -------------------------------------------------------------------------------------------


def test_days_before_a_currencys_first_rate_are_missing() -> None:
    frame = daily([("eur", "2025-01-08", "10", {"new_mrr": "10"}), ("eur", "2025-01-09", "10", {}),
                   ("eur", "2025-01-10", "10", {}), ("usd", "2025-01-08", "5", {"new_mrr": "5"}),
                   ("gbp", "2025-01-09", "7", {"new_mrr": "7"})])
    table = rates(("2025-01-10", "eur", "1.1"))
    missing = rc.missing_rates(frame, table, "usd")
    assert missing.rows() == [("acme", "eur", dt.date(2025, 1, 8), dt.date(2025, 1, 9), 2),
                              ("acme", "gbp", dt.date(2025, 1, 9), dt.date(2025, 1, 9), 1)]
    message = rc.missing_rates_message(missing, "usd")
    assert message.startswith("no rate into usd for eur on 2025-01-08 (and 1 later days); gbp on 2025-01-09:")
    with pytest.raises(rc.RatesError, match="eur on 2025-01-08"):
        rc.daily_reporting(frame, table, "usd")


# --- conversions ---------------------------------------------------------------------------------------------------


def test_daily_reporting_converts_each_currency_rounds_then_sums() -> None:
    frame = daily([
        ("usd", "2025-01-01", "100.00", {"new_mrr": "100"}), ("usd", "2025-01-02", "100.00", {}),
        ("usd", "2025-01-03", "150.00", {"expansion_mrr": "50"}),
        ("eur", "2025-01-02", "10.00", {"new_mrr": "10"}), ("eur", "2025-01-03", "10.00", {}),
        ("jpy", "2025-01-01", "5000", {"new_mrr": "5000"}), ("jpy", "2025-01-02", "5000", {}),
        ("jpy", "2025-01-03", "4000", {"contraction_mrr": "1000"}),
    ])
    table = rates(("2024-12-31", "eur", "1.1"), ("2025-01-03", "eur", "1.2"), ("2025-01-01", "jpy", "0.006667"))
    got = rc.daily_reporting(frame, table, "usd")
    assert got.schema == pl.Schema(rc.DAILY_REPORTING_SCHEMA)
    assert got.select("date", "mrr", "arr", *MOVES, "fx_adjustment_mrr").rows() == [
        # 100 usd + 5000 jpy x 0.006667 = 33.335 -> 33.34
        (dt.date(2025, 1, 1), D("133.34"), D("1600.08"), D("133.34"), D("0.00"), D("0.00"), D("0.00"), D("0.00"),
         D("0.00")),
        # eur 10 x 1.1 joins as new
        (dt.date(2025, 1, 2), D("144.34"), D("1732.08"), D("11.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00"),
         D("0.00")),
        # usd +50; jpy 4000 x 0.006667 = 26.668 -> 26.67 (contraction 1000 x 0.006667 = 6.667 -> 6.67);
        # eur 10 at 1.2 instead of 1.1: +1.00 that no customer made
        (dt.date(2025, 1, 3), D("188.67"), D("2264.04"), D("0.00"), D("50.00"), D("0.00"), D("6.67"), D("0.00"),
         D("1.00")),
    ]
    assert set(got["reporting_currency"]) == {"usd"} and set(got["integration"]) == {"acme"}


def test_rounding_differences_land_in_the_fx_adjustment() -> None:
    # two customers' 0.5 jpy each do not exist (jpy rounds to 1), but 3 x 0.335 usd per jpy does round per day
    frame = daily([("jpy", "2025-01-01", "3", {"new_mrr": "3"}), ("jpy", "2025-01-02", "4", {"expansion_mrr": "1"})])
    got = rc.daily_reporting(frame, rates(("2025-01-01", "jpy", "0.335")), "usd")
    # 3 x 0.335 = 1.005 -> 1.01; 4 x 0.335 = 1.34; the expansion 1 x 0.335 = 0.335 -> 0.34; 1.34 - 1.01 - 0.34 = -0.01
    assert got.select("mrr", "new_mrr", "expansion_mrr", "fx_adjustment_mrr").rows() == [
        (D("1.01"), D("1.01"), D("0.00"), D("0.00")), (D("1.34"), D("0.00"), D("0.34"), D("-0.01"))]


def test_the_daily_identity_holds_with_the_fx_adjustment() -> None:
    frame = daily([("eur", f"2025-01-{d:02d}", str(10 + d * 3), {"new_mrr": "13"} if d == 1 else {"expansion_mrr": "3"})
                   for d in range(1, 29)])
    table = rates(*[(f"2025-01-{d:02d}", "eur", f"1.{d:02d}37") for d in range(1, 29, 3)])
    got = rc.daily_reporting(frame, table, "usd")
    change = got["mrr"] - got["mrr"].shift(1).fill_null(D("0"))
    explained = (got["new_mrr"] + got["expansion_mrr"] + got["reactivation_mrr"] - got["contraction_mrr"]
                 - got["churned_mrr"] + got["fx_adjustment_mrr"])
    assert (change == explained).all() and got.height == 28


# --- monthly KPIs --------------------------------------------------------------------------------------------------

KPI_SCHEMA = {"integration": pl.Utf8, "currency": pl.Utf8, "month": pl.Date, "as_of_date": pl.Date,
              "starting_mrr": pl.Decimal(18, 2), "ending_mrr": pl.Decimal(18, 2), "paying_customers": pl.Int32,
              "starting_customers": pl.Int32, "churned_customers": pl.Int32, "new_customers": pl.Int32,
              "reactivated_customers": pl.Int32, "cohort_ending_mrr": pl.Decimal(18, 2),
              "retained_mrr": pl.Decimal(18, 2)}
JAN, FEB = dt.date(2025, 1, 1), dt.date(2025, 2, 1)


def story() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """usd: 100 from Jan 31, 80 from Feb 2 (contraction 20). eur: 100 from Jan 31, 150 from Feb 3 (expansion 50).
    eur is 1.1 usd in January, 1.2 from February. Today is Feb 3."""
    frame = daily([("usd", "2025-01-31", "100", {"new_mrr": "100"}), ("usd", "2025-02-01", "100", {}),
                   ("usd", "2025-02-02", "80", {"contraction_mrr": "20"}), ("usd", "2025-02-03", "80", {}),
                   ("eur", "2025-01-31", "100", {"new_mrr": "100"}), ("eur", "2025-02-01", "100", {}),
                   ("eur", "2025-02-02", "100", {}), ("eur", "2025-02-03", "150", {"expansion_mrr": "50"})])
    table = rates(("2025-01-01", "eur", "1.1"), ("2025-02-01", "eur", "1.2"))
    kpis = pl.DataFrame([
        ("acme", "eur", JAN, dt.date(2025, 1, 31), D("0"), D("100"), 1, 0, 0, 1, 0, D("0"), D("0")),
        ("acme", "eur", FEB, dt.date(2025, 2, 3), D("100"), D("150"), 1, 1, 0, 0, 0, D("150"), D("100")),
        ("acme", "usd", JAN, dt.date(2025, 1, 31), D("0"), D("100"), 1, 0, 0, 1, 0, D("0"), D("0")),
        ("acme", "usd", FEB, dt.date(2025, 2, 3), D("100"), D("80"), 1, 1, 0, 0, 0, D("80"), D("80")),
    ], schema=KPI_SCHEMA, orient="row")
    return rc.daily_reporting(frame, table, "usd"), kpis, table


def test_daily_reporting_of_the_story() -> None:
    reporting, _, _ = story()
    assert reporting.select("date", "mrr", "fx_adjustment_mrr").rows() == [
        (dt.date(2025, 1, 31), D("210.00"), D("0.00")), (dt.date(2025, 2, 1), D("220.00"), D("10.00")),
        (dt.date(2025, 2, 2), D("200.00"), D("0.00")), (dt.date(2025, 2, 3), D("260.00"), D("0.00"))]


def test_kpis_reporting() -> None:
    reporting, kpis, table = story()
    got = rc.kpis_reporting(kpis, reporting, table, "usd")
    assert got.schema == pl.Schema(rc.KPIS_REPORTING_SCHEMA)
    jan, feb = got.to_dicts()
    assert (jan["month"], jan["as_of_date"], jan["starting_mrr"], jan["ending_mrr"], jan["new_mrr"],
            jan["paying_customers"], jan["arpa"], jan["net_revenue_retention"], jan["quick_ratio"]) == (
        JAN, dt.date(2025, 1, 31), D("0.00"), D("210.00"), D("210.00"), 2, D("105.00"), None, None)
    # MRR from the daily series: 210 at the end of January, 260 today; 210 + 60 - 20 + 10 (eur 1.1 -> 1.2) = 260
    assert {k: feb[k] for k in ("as_of_date", "starting_mrr", "ending_mrr", "net_new_mrr", "expansion_mrr",
                                "contraction_mrr", "fx_adjustment_mrr", "paying_customers", "arpa")} == {
        "as_of_date": dt.date(2025, 2, 3), "starting_mrr": D("210.00"), "ending_mrr": D("260.00"),
        "net_new_mrr": D("50.00"), "expansion_mrr": D("60.00"), "contraction_mrr": D("20.00"),
        "fx_adjustment_mrr": D("10.00"), "paying_customers": 2, "arpa": D("130.00")}
    # constant currency, eur at January 31's 1.1: start 100 + 110, end 80 + 165, retained 80 + 110
    assert {k: feb[k] for k in ("cohort_starting_mrr", "cohort_ending_mrr", "retained_mrr", "net_revenue_retention",
                                "gross_revenue_retention", "gross_revenue_churn_rate", "logo_churn_rate",
                                "quick_ratio", "starting_customers")} == {
        "cohort_starting_mrr": D("210.00"), "cohort_ending_mrr": D("245.00"), "retained_mrr": D("190.00"),
        "net_revenue_retention": D("1.1667"), "gross_revenue_retention": D("0.9048"),
        "gross_revenue_churn_rate": D("0.0952"), "logo_churn_rate": D("0.0000"), "quick_ratio": D("3.0000"),
        "starting_customers": 2}
    assert rc.conversion_mismatches(got, kpis, table, "usd").height == 0
    assert rc.kpi_range_breaks(got).height == 0


def test_conversion_mismatches_find_kpis_that_disagree_with_the_daily_series() -> None:
    reporting, kpis, table = story()
    got = rc.kpis_reporting(kpis, reporting, table, "usd")
    wrong = kpis.with_columns(pl.when((pl.col("currency") == "eur") & (pl.col("month") == FEB))
                              .then(D("151")).otherwise(pl.col("ending_mrr")).alias("ending_mrr"))
    bad = rc.conversion_mismatches(got, wrong, table, "usd")
    assert bad.select("month", "ending_mrr", "expected_ending_mrr").rows() == [(FEB, D("260.00"), D("261.20"))]


def test_kpi_range_breaks() -> None:
    reporting, kpis, table = story()
    got = rc.kpis_reporting(kpis, reporting, table, "usd")
    broken = got.with_columns(pl.when(pl.col("month") == FEB).then(D("1.0001")).otherwise(
        pl.col("gross_revenue_retention")).cast(pl.Decimal(18, 4)).alias("gross_revenue_retention"))
    assert rc.kpi_range_breaks(broken)["month"].to_list() == [FEB]


def test_reporting_gaps() -> None:
    reporting, _, _ = story()
    frame = daily([("usd", "2025-01-31", "1", {"new_mrr": "1"}), ("usd", "2025-02-01", "1", {}),
                   ("usd", "2025-02-02", "1", {}), ("usd", "2025-02-03", "1", {})])
    assert rc.reporting_gaps(reporting, frame).height == 0
    gaps = rc.reporting_gaps(pl.concat([reporting.filter(pl.col("date") != dt.date(2025, 2, 1)), reporting.tail(1)]),
                             frame)
    assert gaps.rows() == [("acme", dt.date(2025, 2, 1), 0), ("acme", dt.date(2025, 2, 3), 2)]
    extra = rc.reporting_gaps(reporting, frame.filter(pl.col("date") != dt.date(2025, 2, 3)))
    assert extra.rows() == [("acme", dt.date(2025, 2, 3), 1)]


def test_no_currency_no_rows() -> None:
    empty = pl.DataFrame(schema=mrr.DAILY_SCHEMA)
    got = rc.daily_reporting(empty, rates(("2025-01-01", "eur", "1.1")), "usd")
    assert_frame_equal(got, pl.DataFrame(schema=rc.DAILY_REPORTING_SCHEMA))


def test_the_sandbox_rates_cover_every_date_a_sandbox_can_be_built_at() -> None:
    from segflow_pipeline.config import SANDBOX_FX_RATES

    table = rc.rates_table(pl.read_csv(SANDBOX_FX_RATES, infer_schema=False), "usd", str(SANDBOX_FX_RATES))
    spans = table.group_by("currency").agg(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"),
                                           pl.len().alias("rates")).sort("currency")
    assert spans.rows() == [("eur", dt.date(2000, 1, 1), dt.date(2040, 12, 1), 492),
                            ("jpy", dt.date(2000, 1, 1), dt.date(2040, 12, 1), 492)]
