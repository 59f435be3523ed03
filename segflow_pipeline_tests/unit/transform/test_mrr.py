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
from segflow_pipeline.transform import live, mrr

from segflow_pipeline_tests.support.mrr_inputs import AS_OF, TODAY, Account, at, movement_story

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


# --- section 2: which subscriptions count ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("status", "fields", "expected"),
    [
        pytest.param("active", {}, D("49.00"), id="active-counts"),
        pytest.param("past_due", {}, D("49.00"), id="past_due-counts"),
        pytest.param("incomplete", {}, D("0.00"), id="incomplete-never"),
        pytest.param("incomplete_expired", {"ended_at": at("2024-06-02")}, D("0.00"), id="incomplete_expired-never"),
        pytest.param("paused", {"trial_end": at("2024-06-01"), "trial_start": at("2024-05-01")}, D("0.00"),
                     id="paused-no"),
        pytest.param("canceled", {"canceled_at": at("2024-06-10", 8), "ended_at": at("2024-06-10", 8)}, D("0.00"),
                     id="canceled-no"),
        pytest.param("trialing", {"trial_start": at("2024-06-01"), "trial_end": at("2024-06-20")}, D("0.00"),
                     id="trialing-no"),
    ],
)
def test_status_today(account: Account, status: str, fields: dict, expected: Decimal) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], status=status, **fields)
    assert mrr_on(daily(account)) == expected


def test_trial_counts_from_trial_end_as_active(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], start=at("2024-06-01"),
                         trial_start=at("2024-06-01"), trial_end=at("2024-06-08", 10))
    frame = daily(account)
    assert frame.get_column("date").min() == dt.date(2024, 6, 8)
    assert mrr_on(frame, dt.date(2024, 6, 8)) == D("49.00")
    assert frame.filter(pl.col("date") == dt.date(2024, 6, 8)).get_column("new_mrr").item() == D("49.00")


@pytest.mark.parametrize(
    ("trial_end", "counts_on_the_8th"),
    [
        pytest.param(at("2024-06-08", 23, 59, 59), True, id="trial-ends-23:59:59-counts-that-day"),
        pytest.param(at("2024-06-09", 0, 0, 0), False, id="trial-ends-00:00:00-next-day-not-yet"),
    ],
)
def test_trial_end_day_boundary(account: Account, trial_end: dt.datetime, counts_on_the_8th: bool) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], start=at("2024-06-01"),
                         trial_start=at("2024-06-01"), trial_end=trial_end)
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 6, 8)) == (D("49.00") if counts_on_the_8th else D("0.00"))
    assert mrr_on(frame, dt.date(2024, 6, 9)) == D("49.00")


@pytest.mark.parametrize(
    ("ended_at", "counts_on_the_8th"),
    [
        pytest.param(at("2024-06-08", 23, 59, 59), False, id="ended-23:59:59-gone-at-end-of-day"),
        pytest.param(at("2024-06-09", 0, 0, 0), True, id="ended-00:00:00-next-day-still-counts"),
    ],
)
def test_immediate_cancellation_day_boundary(account: Account, ended_at: dt.datetime, counts_on_the_8th: bool) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], status="canceled", canceled_at=ended_at,
                         ended_at=ended_at)
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 6, 8)) == (D("49.00") if counts_on_the_8th else D("0.00"))
    assert mrr_on(frame, dt.date(2024, 6, 9)) == D("0.00")
    assert mrr_on(frame, dt.date(2024, 6, 7)) == D("49.00")


def scheduled_cancel(account: Account, **fields) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], cancel_at_period_end=True,
                         current_period_start=at("2024-06-01"), current_period_end=at("2024-07-01"), **fields)


def test_scheduled_cancellation_period_end_option_keeps_counting_until_cancel_at(account: Account) -> None:
    scheduled_cancel(account, canceled_at=at("2024-06-10", 9), cancel_at=at("2024-07-01"))
    frame = daily(account, MrrOptions(churn_recognition="period_end"))
    assert mrr_on(frame) == D("49.00")


def test_scheduled_cancellation_period_end_option_stops_at_cancel_at(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], status="canceled", cancel_at_period_end=True,
                         canceled_at=at("2024-05-20", 9), cancel_at=at("2024-06-01"), ended_at=at("2024-06-01"))
    default = daily(account)
    period_end = daily(account, MrrOptions(churn_recognition="period_end"))
    assert mrr_on(default, dt.date(2024, 5, 19)) == D("49.00")
    assert mrr_on(default, dt.date(2024, 5, 20)) == D("0.00")
    assert mrr_on(period_end, dt.date(2024, 5, 31)) == D("49.00")
    assert mrr_on(period_end, dt.date(2024, 6, 1)) == D("0.00")


def test_scheduled_cancellation_without_canceled_at_uses_the_event_that_set_it(account: Account) -> None:
    scheduled_cancel(account, cancel_at=at("2024-07-01"))
    account.event("sub_2", at("2024-06-12", 14), {"status": "active", "cancel_at_period_end": True,
                                                   "cancel_at": 1719792000},
                  {"cancel_at_period_end": False, "cancel_at": None})
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 6, 11)) == D("49.00")
    assert mrr_on(frame, dt.date(2024, 6, 12)) == D("0.00")


def test_scheduled_cancellation_without_canceled_at_or_event_uses_cancel_at(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], status="canceled", cancel_at=at("2024-06-05"),
                         ended_at=at("2024-06-05"))
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 6, 4)) == D("49.00")
    assert mrr_on(frame, dt.date(2024, 6, 5)) == D("0.00")


def test_unpaid_stops_at_the_event_that_made_it_unpaid(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], id="sub_u", status="unpaid",
                         current_period_start=at("2024-06-01"))
    account.event("sub_u", at("2024-06-10", 6), {"status": "unpaid"}, {"status": "past_due"})
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 6, 9)) == D("49.00")
    assert mrr_on(frame, dt.date(2024, 6, 10)) == D("0.00")


def test_unpaid_without_event_stops_at_end_of_last_paid_period(account: Account) -> None:
    price = account.price(unit_amount=4900)
    account.subscription([(price, 1)], id="sub_u", status="unpaid", current_period_start=at("2024-06-01"))
    account.invoice_line("sub_u", price, at("2024-04-01"), at("2024-05-01"), amount=4900, item="si_sub_u_1")
    frame = daily(account)
    assert mrr_on(frame, dt.date(2024, 4, 30)) == D("49.00")
    assert mrr_on(frame, dt.date(2024, 5, 1)) == D("0.00")


# --- section 3: the value of one subscription ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("round_", "expected"),
    [pytest.param("up", D("20.00"), id="divide-by-10-round-up"),
     pytest.param("down", D("10.00"), id="divide-by-10-round-down")],
)
def test_transform_quantity(account: Account, round_: str, expected: Decimal) -> None:
    account.subscription([(account.price(unit_amount=1000, divide_by=10, round=round_), 15)])
    assert mrr_on(daily(account)) == expected


def test_graduated_tiers_with_flat_amounts(account: Account) -> None:
    # 15 units: tier 1 (≤10) 10 × 5.00 + 2.00 flat, tier 2 5 × 4.00 + 1.00 flat = 73.00
    tiers = [(10, 500, 200), (None, 400, 100)]
    account.subscription([(account.price(unit_amount=None, scheme="tiered", tiers_mode="graduated", tiers=tiers), 15)])
    assert mrr_on(daily(account)) == D("73.00")


def test_volume_tier_at_exact_boundary(account: Account) -> None:
    # quantity 10 falls in the first tier (up_to is inclusive)
    account.subscription([(account.price(unit_amount=None, scheme="tiered", tiers_mode="volume", tiers=TIERS), 10)])
    assert mrr_on(daily(account)) == D("50.00")


@pytest.mark.parametrize(
    ("interval", "count", "amount", "expected"),
    [
        pytest.param("day", 1, 100, D("30.42"), id="daily-1.00"),  # 365/12 = 30.4166…
        pytest.param("week", 2, 1000, D("21.67"), id="every-2-weeks-10.00"),  # 52/24 × 10 = 21.666…
        pytest.param("month", 6, 1000, D("1.67"), id="every-6-months-10.00"),
        pytest.param("year", 2, 1000000, D("416.67"), id="every-2-years-10000.00"),
    ],
)
def test_interval_normalization(account: Account, interval: str, count: int, amount: int, expected: Decimal) -> None:
    account.subscription([(account.price(unit_amount=amount, interval=interval, interval_count=count), 1)])
    assert mrr_on(daily(account)) == expected


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [
        pytest.param("bhd", 12345, D("12.35"), id="bhd-three-decimals-12.345-half-up"),
        pytest.param("kwd", 12344, D("12.34"), id="kwd-three-decimals-12.344"),
        pytest.param("krw", 5000, D("5000.00"), id="krw-zero-decimal"),
        pytest.param("eur", 4900, D("49.00"), id="eur-two-decimals"),
    ],
)
def test_currency_minor_units(account: Account, currency: str, amount: int, expected: Decimal) -> None:
    account.subscription([(account.price(unit_amount=amount, currency=currency), 1)], currency=currency)
    assert mrr_on(daily(account), currency=currency) == expected


def test_fractional_minor_unit_price(account: Account) -> None:
    # unit_amount_decimal 0.5 cents × 1,001 seats = 5.005 → 5.01 (half-up, exact)
    account.subscription([(account.price(unit_amount=None, unit_amount_decimal="0.5"), 1001)])
    assert mrr_on(daily(account)) == D("5.01")


def test_currencies_are_never_mixed(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)])
    account.subscription([(account.price(unit_amount=3000, currency="eur"), 1)], currency="eur", customer="cus_2")
    frame = daily(account)
    assert frame.filter(pl.col("date") == TODAY).select("currency", "mrr").sort("currency").rows() == [
        ("eur", D("30.00")), ("usd", D("49.00"))]


# --- section 1: rounding per customer, exactly ------------------------------------------------------------------

def test_customer_mrr_is_rounded_once_not_per_subscription(account: Account) -> None:
    # two weekly 10.00 subscriptions: 86.666… → 86.67 (rounding each would give 86.66)
    price = account.price(unit_amount=1000, interval="week")
    account.subscription([(price, 1)])
    account.subscription([(price, 1)])
    assert mrr_on(daily(account)) == D("86.67")


def test_exact_half_cent_from_thirds_and_sixths_rounds_up(account: Account) -> None:
    # 0.01 every 6 months + 0.01 every 3 months = 0.001666… + 0.003333… = exactly 0.005 → 0.01
    account.subscription([(account.price(unit_amount=1, interval_count=6), 1)])
    account.subscription([(account.price(unit_amount=1, interval_count=3), 1)])
    assert mrr_on(daily(account)) == D("0.01")


# --- section 4: discounts --------------------------------------------------------------------------------------

def test_discounts_all_applies_a_repeating_coupon_while_in_effect(account: Account) -> None:
    coupon_50_percent_3_months(account)
    frame = daily(account, MrrOptions(discounts="all"))
    assert mrr_on(frame, dt.date(2024, 4, 30)) == D("100.00")
    assert mrr_on(frame, dt.date(2024, 5, 1)) == D("50.00")
    assert mrr_on(frame) == D("50.00")


def test_discounts_none_ignores_forever_coupons(account: Account) -> None:
    coupon_20_percent_forever(account)
    assert mrr_on(daily(account, MrrOptions(discounts="none"))) == D("100.00")


def test_subscription_amount_off_is_taken_once_per_billing_period(account: Account) -> None:
    sub = account.subscription([(account.price(unit_amount=5000), 1), (account.price(unit_amount=3000), 1)])
    account.discount(account.coupon(amount_off=1000), "subscription", sub)
    assert mrr_on(daily(account)) == D("70.00")


def test_amount_off_is_normalized_like_the_price(account: Account) -> None:
    # 1,200.00 yearly less 120.00 per year = 90.00 a month
    sub = account.subscription([(account.price(unit_amount=120000, interval="year"), 1)])
    account.discount(account.coupon(amount_off=12000), "subscription", sub)
    assert mrr_on(daily(account)) == D("90.00")


def test_item_level_discount_applies_to_its_item_only(account: Account) -> None:
    sub = account.subscription([(account.price(unit_amount=5000), 1), (account.price(unit_amount=3000), 1)])
    account.discount(account.coupon(percent_off="50"), "subscription_item", f"si_{sub}_1")
    assert mrr_on(daily(account)) == D("55.00")


def test_customer_discount_applies_to_subscriptions_without_their_own(account: Account) -> None:
    price = account.price(unit_amount=10000)
    plain = account.subscription([(price, 1)])
    own = account.subscription([(price, 1)])
    account.discount(account.coupon(percent_off="25"), "customer", "cus_1")
    account.discount(account.coupon(percent_off="10"), "subscription", own)
    assert plain != own
    assert mrr_on(daily(account)) == D("165.00")  # 75.00 + 90.00


def test_discount_never_takes_mrr_below_zero(account: Account) -> None:
    sub = account.subscription([(account.price(unit_amount=1000), 1)])
    account.discount(account.coupon(amount_off=5000), "subscription", sub)
    account.subscription([(account.price(unit_amount=2000), 1)])
    assert mrr_on(daily(account)) == D("20.00")


def test_amount_off_in_another_currency_does_not_apply(account: Account) -> None:
    sub = account.subscription([(account.price(unit_amount=1000), 1)])
    account.discount(account.coupon(amount_off=500, currency="eur"), "subscription", sub)
    assert mrr_on(daily(account)) == D("10.00")


# --- section 6: movements, counts and the published frame -------------------------------------------------------

def test_movements_of_each_kind(account: Account) -> None:
    movement_story(account)
    frame = daily(account)
    c = D
    expected = pl.DataFrame(
        {
            "integration": ["default"] * 6,
            "date": [dt.date(2024, 6, d) for d in range(10, 16)],
            "currency": ["usd"] * 6,
            "mrr": [c("10.00"), c("11.00"), c("1.00"), c("21.00"), c("26.00"), c("21.00")],
            "arr": [c("120.00"), c("132.00"), c("12.00"), c("252.00"), c("312.00"), c("252.00")],
            "active_subscriptions": [1, 2, 1, 2, 3, 2],
            "paying_customers": [1, 2, 1, 2, 2, 2],
            "new_mrr": [c("10.00"), c("1.00"), c("0"), c("0"), c("0"), c("0")],
            "expansion_mrr": [c("0"), c("0"), c("0"), c("0"), c("5.00"), c("0")],
            "reactivation_mrr": [c("0"), c("0"), c("0"), c("20.00"), c("0"), c("0")],
            "contraction_mrr": [c("0"), c("0"), c("0"), c("0"), c("0"), c("5.00")],
            "churned_mrr": [c("0"), c("0"), c("10.00"), c("0"), c("0"), c("0")],
        },
        schema=mrr.DAILY_SCHEMA,
    )
    assert_frame_equal(frame, expected)
    assert mrr.movement_breaks(frame).height == 0
    assert mrr.gap_rows(frame, TODAY).height == 0


def test_daily_frame_has_contract_columns_and_no_gaps(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], start=at("2024-06-01", 12))
    frame = daily(account)
    assert frame.schema == pl.Schema(mrr.DAILY_SCHEMA)
    assert frame.get_column("date").to_list() == [dt.date(2024, 6, d) for d in range(1, 16)]
    assert frame.get_column("mrr").unique().to_list() == [D("49.00")]
    assert frame.get_column("new_mrr").to_list() == [D("49.00")] + [D("0.00")] * 14


def test_empty_account_gives_an_empty_frame_with_the_contract_schema(account: Account) -> None:
    frame = daily(account)
    assert frame.height == 0 and frame.schema == pl.Schema(mrr.DAILY_SCHEMA)


def test_series_continues_at_zero_after_everyone_churned(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], status="canceled", start=at("2024-06-10"),
                         canceled_at=at("2024-06-12", 10), ended_at=at("2024-06-12", 10))
    frame = daily(account)
    assert frame.get_column("date").max() == TODAY
    assert frame.get_column("mrr").to_list() == [D("49.00"), D("49.00")] + [D("0.00")] * 4


def test_movement_breaks_finds_a_row_that_does_not_reconcile(account: Account) -> None:
    movement_story(account)
    frame = daily(account).with_columns(
        pl.when(pl.col("date") == dt.date(2024, 6, 13)).then(pl.lit(D("22.00"))).otherwise(pl.col("mrr"))
        .cast(pl.Decimal(18, 2)).alias("mrr"))
    breaks = mrr.movement_breaks(frame)
    # the 13th no longer matches its movements, and the 14th no longer starts from the right value
    assert breaks.get_column("date").to_list() == [dt.date(2024, 6, 13), dt.date(2024, 6, 14)]
    assert breaks.row(0, named=True)["mrr_change"] == D("21.00")
    assert breaks.row(0, named=True)["movements"] == D("20.00")


def test_gap_rows_reports_missing_days_and_a_series_that_stops_early(account: Account) -> None:
    movement_story(account)
    frame = daily(account).filter(pl.col("date") != dt.date(2024, 6, 12))
    gaps = mrr.gap_rows(frame, TODAY + dt.timedelta(days=1))
    assert gaps.get_column("date").to_list() == [dt.date(2024, 6, 12), dt.date(2024, 6, 16)]


def test_live_mrr_mismatches(account: Account) -> None:
    movement_story(account)
    inputs = account.inputs()
    intervals = mrr.subscription_mrr_intervals(inputs, as_of=AS_OF)
    frame = mrr.daily_mrr(intervals, TODAY)
    assert live.live_mrr_mismatches(frame, intervals, inputs, as_of=AS_OF).height == 0
    # a published total that the intervals do not explain: named per currency, no subscription to blame
    wrong = frame.with_columns(pl.lit(D("1.00")).cast(pl.Decimal(18, 2)).alias("mrr"))
    assert live.live_mrr_mismatches(wrong, intervals, inputs, as_of=AS_OF).select(
        "currency", "series_mrr", "live_mrr", "subscription").rows() == [("usd", D("1.00"), D("21.00"), None)]
    # a rebuild that got today wrong (the intervals and the series agree, the current objects do not): the
    # subscription is named with both values
    broken = intervals.with_columns(pl.col("mrr_atoms") * 2)
    bad = live.live_mrr_mismatches(mrr.daily_mrr(broken, TODAY), broken, inputs, as_of=AS_OF)
    assert bad.height >= 1 and bad.get_column("subscription").null_count() == 0
    assert all(row["series_subscription_mrr"] == 2 * row["live_subscription_mrr"] for row in bad.iter_rows(named=True))


def test_snapshot_rows_record_exact_values(account: Account) -> None:
    account.subscription([(account.price(unit_amount=1000, interval="week"), 1)], id="sub_w")
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    snap = mrr.snapshot_rows(intervals, TODAY)
    row = snap.row(0, named=True)
    assert snap.schema == pl.Schema(mrr.SNAPSHOT_SCHEMA)
    assert (row["subscription"], row["date"], row["mrr"]) == ("sub_w", TODAY, D("43.33"))
    assert row["mrr_num"] * 3 == row["mrr_den"] * 130  # exactly 130/3


def test_intervals_carry_exact_values_and_their_source(account: Account) -> None:
    account.subscription([(account.price(unit_amount=1000, interval="week"), 1)], id="sub_w", start=at("2024-06-01", 5))
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    assert intervals.schema == pl.Schema(mrr.INTERVAL_SCHEMA)
    row = intervals.row(0, named=True)
    assert (row["valid_from"], row["valid_to"], row["source"]) == (dt.date(2024, 6, 1), None, "lifecycle")
    assert row["mrr"] == D("43.333333333333")


# --- bad input is left out and reported, never a crash --------------------------------------------------------

def test_unusable_rows_are_left_out_and_reported(account: Account) -> None:
    good = account.price(unit_amount=4900)
    account.subscription([(good, 1)], id="sub_ok")
    account.subscription([(good, 1)], id="sub_xxx", currency="zzz")
    account.subscription([(account.price(id="price_once", unit_amount=500, interval=None), 1)], id="sub_once")
    account.subscription([(account.price(id="price_neg", unit_amount=-500), 1)], id="sub_neg")
    account.subscription([("price_missing", 1)], id="sub_missing")
    account.subscription([(good, -2)], id="sub_negq")
    account.coupon(id="coupon_bad", percent_off="150")
    account.item("sub_gone", good, id="si_orphan")
    frame = daily(account)
    assert mrr_on(frame) == D("49.00")
    reasons = mrr.unusable_rows(account.inputs())
    assert reasons.schema == pl.Schema(mrr.UNUSABLE_SCHEMA)
    got = {(r["object_type"], r["object_id"]): r["reason"] for r in reasons.iter_rows(named=True)}
    assert got == {
        ("coupon", "coupon_bad"): "percent_off outside (0, 100]",
        ("price", "price_neg"): "negative unit_amount",
        ("price", "price_once"): "one-time price (no recurring interval) on a subscription item",
        ("subscription", "sub_xxx"): "unknown currency",
        ("subscription_item", "si_orphan"): "item of an unknown subscription",
        ("subscription_item", "si_sub_missing_1"): "price not found (sync prices, including archived ones)",
        ("subscription_item", "si_sub_neg_1"): "unusable price: negative unit_amount",
        ("subscription_item", "si_sub_negq_1"): "negative quantity",
        ("subscription_item", "si_sub_once_1"): "unusable price: one-time price (no recurring interval) on a subscription item",
    }


def test_live_check_reports_an_absurd_quantity_instead_of_overflowing(account: Account) -> None:
    """10^15 seats: the series overflows the contract's DECIMAL(18,2) (matches_schema reports that); the live
    check must still compute and compare, not crash."""
    account.subscription([(account.price(unit_amount=1500), 10**15)], id="sub_huge")
    inputs = account.inputs()
    intervals = mrr.subscription_mrr_intervals(inputs, as_of=AS_OF)
    today = live.current_mrr(inputs, as_of=AS_OF)
    assert today.rows() == [("default", "usd", D("15000000000000000.00"), 1, 1)]
    wrong = pl.DataFrame({"integration": ["default"], "date": [TODAY], "currency": ["usd"], "mrr": [D("1.00")]})
    bad = live.live_mrr_mismatches(wrong, intervals, inputs, as_of=AS_OF)
    assert bad.select("live_mrr", "subscription").rows() == [(D("15000000000000000.00"), None)]
