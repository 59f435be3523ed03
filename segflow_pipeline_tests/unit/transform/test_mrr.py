"""MRR_SPEC.md rules on tiny hand-built accounts: worked examples (section 7), one rule per test, day
boundaries, movements and the published frame's shape."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Callable

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import mrr

from conftest import AS_OF, TODAY, Account, at

D = Decimal
YESTERDAY = TODAY - dt.timedelta(days=1)


def daily(account: Account, options: MrrOptions = MrrOptions(), as_of: dt.datetime = AS_OF) -> pl.DataFrame:
    intervals = mrr.subscription_mrr_intervals(account.inputs(), options=options, as_of=as_of)
    return mrr.daily_mrr(intervals, today=as_of.date())


def mrr_on(frame: pl.DataFrame, day: dt.date = TODAY, currency: str = "usd") -> Decimal:
    row = frame.filter((pl.col("date") == day) & (pl.col("currency") == currency))
    return row.get_column("mrr").item() if row.height else D("0.00")


# --- section 7: worked examples --------------------------------------------------------------------------------

def monthly_49(a: Account) -> None:
    a.subscription([(a.price(unit_amount=4900), 1)])


def yearly_1200(a: Account) -> None:
    a.subscription([(a.price(unit_amount=120000, interval="year"), 1)])


def every_3_months_300(a: Account) -> None:
    a.subscription([(a.price(unit_amount=30000, interval_count=3), 1)])


def weekly_10(a: Account) -> None:
    a.subscription([(a.price(unit_amount=1000, interval="week"), 1)])


def five_seats_at_20(a: Account) -> None:
    a.subscription([(a.price(unit_amount=2000), 5)])


def two_items(a: Account) -> None:
    a.subscription([(a.price(unit_amount=5000), 1), (a.price(unit_amount=1000), 3)])


def coupon_20_percent_forever(a: Account) -> None:
    sub = a.subscription([(a.price(unit_amount=10000), 1)])
    a.discount(a.coupon(percent_off="20", duration="forever"), "subscription", sub)


def coupon_50_percent_3_months(a: Account) -> None:
    sub = a.subscription([(a.price(unit_amount=10000), 1)])
    a.discount(a.coupon(percent_off="50", duration="repeating", duration_in_months=3), "subscription", sub,
               start=at("2024-05-01"), end=at("2024-08-01"))


TIERS = [(10, 500, 0), (None, 400, 0)]


def tiered_volume(a: Account) -> None:
    a.subscription([(a.price(unit_amount=None, scheme="tiered", tiers_mode="volume", tiers=TIERS), 15)])


def tiered_graduated(a: Account) -> None:
    a.subscription([(a.price(unit_amount=None, scheme="tiered", tiers_mode="graduated", tiers=TIERS), 15)])


def metered_plus_licensed(a: Account) -> None:
    a.subscription([(a.price(unit_amount=25, usage_type="metered"), None), (a.price(unit_amount=3000), 1)])


def yen_5000(a: Account) -> None:
    a.subscription([(a.price(unit_amount=5000, currency="jpy"), 1)], currency="jpy")


def trial_ends_tomorrow(a: Account) -> None:
    a.subscription([(a.price(unit_amount=4900), 1)], status="trialing", start=at("2024-06-01"),
                   trial_start=at("2024-06-01"), trial_end=at(TODAY + dt.timedelta(days=1), 9))


def cancel_at_period_end_requested_yesterday(a: Account) -> None:
    a.subscription([(a.price(unit_amount=4900), 1)], cancel_at_period_end=True,
                   canceled_at=at(YESTERDAY, 15), cancel_at=at("2024-07-01"),
                   current_period_start=at("2024-06-01"), current_period_end=at("2024-07-01"))


WORKED_EXAMPLES = [
    pytest.param(monthly_49, "usd", TODAY, D("49.00"), id="monthly-49.00"),
    pytest.param(yearly_1200, "usd", TODAY, D("100.00"), id="yearly-1200.00"),
    pytest.param(every_3_months_300, "usd", TODAY, D("100.00"), id="every-3-months-300.00"),
    pytest.param(weekly_10, "usd", TODAY, D("43.33"), id="weekly-10.00"),
    pytest.param(five_seats_at_20, "usd", TODAY, D("100.00"), id="5x20.00-monthly"),
    pytest.param(two_items, "usd", TODAY, D("80.00"), id="items-50.00+3x10.00"),
    pytest.param(coupon_20_percent_forever, "usd", TODAY, D("80.00"), id="20pct-forever-coupon"),
    pytest.param(coupon_50_percent_3_months, "usd", TODAY, D("100.00"), id="50pct-3-months-coupon-default"),
    pytest.param(tiered_volume, "usd", TODAY, D("60.00"), id="tiered-volume-qty15"),
    pytest.param(tiered_graduated, "usd", TODAY, D("70.00"), id="tiered-graduated-qty15"),
    pytest.param(metered_plus_licensed, "usd", TODAY, D("30.00"), id="metered+licensed-30.00"),
    pytest.param(yen_5000, "jpy", TODAY, D("5000.00"), id="jpy-5000"),
    pytest.param(trial_ends_tomorrow, "usd", TODAY, D("0.00"), id="trialing-ends-tomorrow"),
    pytest.param(cancel_at_period_end_requested_yesterday, "usd", YESTERDAY, D("0.00"),
                 id="canceled-at-period-end-requested-yesterday"),
]


@pytest.mark.parametrize(("scenario", "currency", "day", "expected"), WORKED_EXAMPLES)
def test_worked_example(account: Account, scenario: Callable[[Account], None], currency: str, day: dt.date,
                        expected: Decimal) -> None:
    scenario(account)
    assert mrr_on(daily(account), day, currency) == expected
