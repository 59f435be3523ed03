"""metrics.mrr_customer_movements: the customer rows behind each day's movements."""

import datetime as dt
from decimal import Decimal as D

import polars as pl
from polars.testing import assert_frame_equal

from segflow_pipeline.transform import mrr

from segflow_pipeline_tests.support.mrr_inputs import AS_OF, TODAY, Account, movement_story


def test_each_change_is_one_row_with_its_movement(account: Account) -> None:
    movement_story(account)
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    rows = mrr.customer_movements(intervals, TODAY)
    cus_1 = rows.filter(pl.col("customer") != "cus_2").get_column("customer")[0]
    expected = pl.DataFrame({
        "integration": ["default"] * 6, "currency": ["usd"] * 6,
        "customer": [cus_1] * 5 + ["cus_2"],
        "date": [dt.date(2024, 6, d) for d in (10, 12, 13, 14, 15, 11)],
        "previous_mrr": [D("0"), D("10.00"), D("0"), D("20.00"), D("25.00"), D("0")],
        "mrr": [D("10.00"), D("0"), D("20.00"), D("25.00"), D("20.00"), D("1.00")],
        "movement": ["new", "churned", "reactivation", "expansion", "contraction", "new"],
        "amount": [D("10.00"), D("10.00"), D("20.00"), D("5.00"), D("5.00"), D("1.00")],
    }, schema=mrr.CUSTOMER_MOVEMENT_SCHEMA).sort("integration", "currency", "customer", "date")
    assert_frame_equal(rows, expected)


def test_customer_rows_add_up_to_the_daily_movements(account: Account) -> None:
    movement_story(account)
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    daily = mrr.daily_mrr(intervals, TODAY)
    rows = mrr.customer_movements(intervals, TODAY)
    summed = (rows.pivot(on="movement", index=["integration", "currency", "date"], values="amount",
                         aggregate_function="sum")
              .rename(lambda c: f"{c}_mrr" if c not in ("integration", "currency", "date") else c))
    merged = daily.join(summed, on=["integration", "currency", "date"], how="left", suffix="_rows")
    for m in mrr.MOVEMENTS:
        column = f"{m}_rows" if f"{m}_rows" in merged.columns else None
        got = merged.get_column(column).fill_null(D("0")).to_list() if column else [D("0")] * merged.height
        assert got == merged.get_column(m).to_list(), m
