"""marts.mrr_drivers_daily / mrr_drivers_monthly on the hand-made story of test_sql_models: each customer movement
lands on the product and billing interval worked out by hand from the subscriptions, shares add up to the cent,
and the `sums_to_bridge` predicate catches a split that does not add up."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import polars as pl
import pytest

from segflow_pipeline.transform import drivers
from segflow_pipeline_tests.unit.warehouse.test_sql_models import INTEGRATION, build_marts, records, seed, ts

D = Decimal


@pytest.fixture
def con(tmp_path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "acme.duckdb"))
    seed(connection, INTEGRATION)
    yield connection
    connection.close()


def test_each_movement_lands_on_the_item_that_moved(con) -> None:
    daily = build_marts(con)["mrr_drivers_daily"]
    # Worked out from the story, not from the SQL: sub_a (Team seats, monthly) started 2025-01-30 and expanded on
    # 2025-02-10; sub_b1 (Team) started 2025-01-31, contracted on 02-15 while it was cus_b's only subscription and
    # ended 02-20; sub_b2 (Team) started 03-03; sub_c's trial ended 02-25, its licensed item is Pro yearly (the
    # metered API item has no list MRR); sub_f is Team in eur.
    assert records(daily, "currency", "date", "product_name", "billing_interval", "new_mrr", "expansion_mrr",
                   "reactivation_mrr", "contraction_mrr", "churned_mrr") == [
        ("eur", dt.date(2025, 3, 1), "Team", "monthly", D("40.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00")),
        ("usd", dt.date(2025, 1, 30), "Team", "monthly", D("100.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00")),
        ("usd", dt.date(2025, 1, 31), "Team", "monthly", D("50.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00")),
        ("usd", dt.date(2025, 2, 10), "Team", "monthly", D("0.00"), D("30.00"), D("0.00"), D("0.00"), D("0.00")),
        ("usd", dt.date(2025, 2, 15), "Team", "monthly", D("0.00"), D("0.00"), D("0.00"), D("20.00"), D("0.00")),
        ("usd", dt.date(2025, 2, 20), "Team", "monthly", D("0.00"), D("0.00"), D("0.00"), D("0.00"), D("30.00")),
        ("usd", dt.date(2025, 2, 25), "Pro", "yearly", D("70.00"), D("0.00"), D("0.00"), D("0.00"), D("0.00")),
        ("usd", dt.date(2025, 3, 3), "Team", "monthly", D("0.00"), D("0.00"), D("30.00"), D("0.00"), D("0.00")),
    ]
    assert set(daily["price"]) == {"price_seat", "price_eur", "price_pro_year"}


def test_the_monthly_split_is_a_bridge_per_segment_that_sums_to_the_bridge(con) -> None:
    built = build_marts(con)
    monthly = built["mrr_drivers_monthly"]
    assert records(monthly.filter(pl.col("currency") == "usd"), "month", "product_name", "billing_interval",
                   "starting_mrr", "ending_mrr") == [
        (dt.date(2025, 1, 1), "Team", "monthly", D("0.00"), D("150.00")),
        (dt.date(2025, 2, 1), "Pro", "yearly", D("0.00"), D("70.00")),
        (dt.date(2025, 2, 1), "Team", "monthly", D("150.00"), D("130.00")),
        (dt.date(2025, 3, 1), "Pro", "yearly", D("70.00"), D("70.00")),
        (dt.date(2025, 3, 1), "Team", "monthly", D("130.00"), D("160.00")),
    ]
    assert drivers.bridge_breaks(monthly, built["mrr_bridge_monthly"]).is_empty()


def add_customer(con: duckdb.DuckDBPyConnection, customer: str, day: str, items: list[tuple[str, str, int, str]],
                 movement: str, amount: str) -> None:
    """A customer whose subscriptions (one per item: product, price id, monthly unit amount in cents, interval)
    all start on `day`, and one movement of `amount` on that day."""
    for n, (product, price, unit, interval) in enumerate(items):
        sub = f"sub_{customer}_{n}"
        con.execute("insert into stripe.subscriptions (integration, id, customer, status, currency, start_date, "
                    "cancel_at_period_end, current_period_start) values (?, ?, ?, 'active', 'usd', ?, false, ?)",
                    [INTEGRATION, sub, customer, ts(day), ts(day)])
        con.execute("insert into stripe.prices (integration, id, product, currency, type, billing_scheme, unit_amount, "
                    "recurring_interval, recurring_interval_count, recurring_usage_type) "
                    "values (?, ?, ?, 'usd', 'recurring', 'per_unit', ?, ?, 1, 'licensed')",
                    [INTEGRATION, price, product, unit, interval])
        con.execute("insert into stripe.subscription_items (integration, id, subscription, price, quantity) "
                    "values (?, ?, ?, ?, 1)", [INTEGRATION, f"si_{sub}", sub, price])
    con.execute("insert into metrics.mrr_customer_movements values (?, 'usd', ?, ?, 0, ?, ?, ?)",
                [INTEGRATION, customer, day, amount, movement, amount])
    # the published series moves with it, so the story stays one account (the marts' own checks compare them)
    con.execute("update metrics.mrr_daily set mrr = mrr + ?::decimal(18,2), arr = arr + 12 * ?::decimal(18,2), "
                "paying_customers = paying_customers + 1, active_subscriptions = active_subscriptions + ? "
                "where integration = ? and currency = 'usd' and date >= ?",
                [amount, amount, len(items), INTEGRATION, day])
    con.execute(f"update metrics.mrr_daily set {movement}_mrr = {movement}_mrr + ?::decimal(18,2) "
                "where integration = ? and currency = 'usd' and date = ?", [amount, INTEGRATION, day])


@pytest.mark.parametrize(("units", "amount", "expected"), [
    ([1000, 2000], "100.00", ["33.33", "66.67"]),
    ([1000, 1000, 1000], "100.00", ["33.34", "33.33", "33.33"]),
    ([1, 1, 1], "0.02", ["0.01", "0.01", "0.00"]),
    ([700, 300], "0.01", ["0.01", "0.00"]),
], ids=["one_to_two", "three_equal", "two_cents_three_ways", "one_cent"])
def test_a_movement_is_shared_by_list_price_in_whole_cents(con, units, amount, expected) -> None:
    items = [(f"prod_z{n}", f"price_z{n}", unit, "month") for n, unit in enumerate(units)]
    add_customer(con, "cus_z", "2025-03-04", items, "new", amount)
    daily = build_marts(con)["mrr_drivers_daily"].filter(pl.col("date") == dt.date(2025, 3, 4)).sort("product")
    assert [str(v) for v in daily["new_mrr"]] == expected
    assert sum(daily["new_mrr"]) == D(amount)


def test_a_movement_without_any_item_is_unknown(con) -> None:
    add_customer(con, "cus_nobody", "2025-03-04", [], "new", "12.34")
    daily = build_marts(con)["mrr_drivers_daily"].filter(pl.col("date") == dt.date(2025, 3, 4))
    assert records(daily, "product", "price", "billing_interval", "new_mrr") == [
        ("unknown", "unknown", "unknown", D("12.34"))]


def test_yearly_and_monthly_items_weigh_by_monthly_value(con) -> None:
    # 1,200.00 a year is 100.00 a month, the same as the monthly item: an even split
    add_customer(con, "cus_y", "2025-03-04", [("prod_y0", "price_y0", 10000, "month"),
                                               ("prod_y1", "price_y1", 120000, "year")], "new", "50.00")
    daily = build_marts(con)["mrr_drivers_daily"].filter(pl.col("date") == dt.date(2025, 3, 4)).sort("product")
    assert records(daily, "billing_interval", "new_mrr") == [("monthly", D("25.00")), ("yearly", D("25.00"))]


# --- sums_to_bridge catches a split that does not add up -------------------------------------------------------------

def test_bridge_breaks_finds_a_cent_off_a_missing_month_and_an_extra_month(con) -> None:
    built = build_marts(con)
    monthly, bridge = built["mrr_drivers_monthly"], built["mrr_bridge_monthly"]
    first = (pl.col("currency") == "usd") & (pl.col("month") == dt.date(2025, 2, 1)) & (pl.col("product") == "prod_pro")
    cent_off = monthly.with_columns(pl.when(first).then(pl.col("new_mrr") + D("0.01")).otherwise(pl.col("new_mrr"))
                                    .alias("new_mrr"))
    bad = drivers.bridge_breaks(cent_off, bridge)
    assert records(bad, "currency", "month", "drivers_new_mrr", "bridge_new_mrr") == [
        ("usd", dt.date(2025, 2, 1), D("70.01"), D("70.00"))]
    missing = monthly.filter(~((pl.col("currency") == "eur")))
    assert records(drivers.bridge_breaks(missing, bridge), "currency", "month") == [("eur", dt.date(2025, 3, 1))]
    extra = pl.concat([monthly, monthly.filter(pl.col("currency") == "eur").with_columns(
        pl.lit(dt.date(2025, 4, 1)).alias("month"))])
    assert records(drivers.bridge_breaks(extra, bridge), "currency", "month") == [("eur", dt.date(2025, 4, 1))]
