"""Property test: random subscriptions with upgrades, cancellations, trials and coupons. The daily series
matches an independent day-by-day computation with exact fractions, reconciles to the cent, has no gaps and
no negative amounts."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segflow_pipeline.transform import currency, live, mrr, schemas

from segflow_pipeline_tests.support.mrr_inputs import AS_OF, TODAY, Account, at

FACTOR = {"month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12), "day": Fraction(365, 12)}
FIRST_DAY = TODAY - dt.timedelta(days=90)

subscription_st = st.fixed_dictionaries({
    "customer": st.sampled_from(["cus_a", "cus_b", "cus_c"]),
    "currency": st.sampled_from(["usd", "jpy", "bhd"]),
    "interval": st.sampled_from(list(FACTOR)),
    "count": st.integers(1, 3),
    "amount": st.integers(0, 200_000),
    "upgrade_amount": st.none() | st.integers(0, 200_000),
    "quantity": st.integers(0, 4),
    "start": st.integers(0, 80),            # days after FIRST_DAY
    "start_hour": st.integers(0, 23),
    "upgrade_after": st.integers(2, 40),    # days after start
    "end_after": st.none() | st.integers(0, 60),
    "trial_days": st.none() | st.integers(1, 20),
    "percent_off": st.none() | st.sampled_from(["10", "33.33", "50", "100"]),
})


def half_up(value: Fraction) -> int:
    return math.floor(value * 100 + Fraction(1, 2))


def build(subs: list[dict]) -> tuple[Account, dict[tuple[str, dt.date], Decimal]]:
    account = Account()
    truth: dict[tuple[str, str, dt.date], Fraction] = defaultdict(Fraction)
    for n, s in enumerate(subs):
        sid = f"sub_{n}"
        start = at(FIRST_DAY + dt.timedelta(days=s["start"]), s["start_hour"])
        old = account.price(unit_amount=s["amount"], interval=s["interval"], interval_count=s["count"],
                            currency=s["currency"])
        new = old
        change = None
        if s["upgrade_amount"] is not None and start + dt.timedelta(days=s["upgrade_after"], hours=3) <= AS_OF:
            new = account.price(unit_amount=s["upgrade_amount"], interval=s["interval"], interval_count=s["count"],
                                currency=s["currency"])
            change = start + dt.timedelta(days=s["upgrade_after"], hours=3)
        fields: dict = {}
        counts_from = start
        if s["trial_days"] is not None:
            counts_from = start + dt.timedelta(days=s["trial_days"])
            fields.update(trial_start=start, trial_end=counts_from)
        ended = None
        if s["end_after"] is not None:
            ended = start + dt.timedelta(days=s["end_after"], hours=5)
            fields.update(status="canceled", canceled_at=ended, ended_at=ended)
        if counts_from > AS_OF:
            fields["status"] = "trialing"
        if ended is not None and ended > AS_OF:
            fields.update(status="active", canceled_at=None, ended_at=None)
            ended = None
        account.subscription([(new, s["quantity"])], id=sid, customer=s["customer"], currency=s["currency"],
                             start=start, **fields)
        item = f"si_{sid}_1"
        if change is not None:
            # monthly invoices; the upgrade shows as proration lines starting at the change
            period = start
            while period <= AS_OF:
                end = period + dt.timedelta(days=30)
                account.invoice_line(sid, old if period < change else new, period, end, quantity=s["quantity"],
                                     item=item, currency=s["currency"])
                if period < change < end:
                    account.invoice_line(sid, old, change, end, quantity=s["quantity"], amount=-1, item=item,
                                         proration=True, currency=s["currency"])
                    account.invoice_line(sid, new, change, end, quantity=s["quantity"], amount=1, item=item,
                                         proration=True, currency=s["currency"])
                period = end
        keep = Fraction(1)
        if s["percent_off"] is not None:
            account.discount(account.coupon(percent_off=s["percent_off"]), "subscription", sid, start=start)
            keep = 1 - Fraction(s["percent_off"]) / 100
        scale = 10 ** currency.exponent(s["currency"])
        # a trial still running at the run's moment: not even today counts (the state at the time of the run)
        day = counts_from.date() if counts_from <= AS_OF else TODAY + dt.timedelta(days=1)
        while day <= TODAY:
            if ended is not None and day >= ended.date():
                break
            amount = s["amount"] if change is not None and day < change.date() else (
                s["upgrade_amount"] if change is not None else s["amount"])
            value = Fraction(amount * s["quantity"], scale) * FACTOR[s["interval"]] / s["count"] * keep
            truth[(s["currency"], s["customer"], day)] += value
            day += dt.timedelta(days=1)
    per_currency: dict[tuple[str, dt.date], int] = defaultdict(int)
    for (cur, _customer, day), value in truth.items():
        per_currency[(cur, day)] += half_up(value)
    expected = {key: Decimal(cents) / 100 for key, cents in per_currency.items()}
    return account, expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subs=st.lists(subscription_st, min_size=1, max_size=6))
@example(subs=[{"customer": "cus_a", "currency": "usd", "interval": "month", "count": 1, "amount": 1,
                "upgrade_amount": None, "quantity": 1, "start": 70, "start_hour": 13, "upgrade_after": 2,
                "end_after": None, "trial_days": 20, "percent_off": None}])  # trial ends an hour after the run
def test_series_matches_exact_day_by_day_computation(subs: list[dict]) -> None:
    account, expected = build(subs)
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    frame = mrr.daily_mrr(intervals, TODAY)

    got = {(r["currency"], r["date"]): r["mrr"] for r in frame.iter_rows(named=True)}
    # the series starts at the first day with MRR; before that the oracle holds zeros only
    first = {}
    for (cur, day), value in sorted(expected.items(), key=lambda kv: kv[0][1]):
        if value > 0 and cur not in first:
            first[cur] = day
    want = {(cur, day): value for (cur, day), value in expected.items() if cur in first and day >= first[cur]}
    for cur, start in first.items():
        day = start
        while day <= TODAY:
            want.setdefault((cur, day), Decimal("0"))
            day += dt.timedelta(days=1)
    assert got == want

    assert mrr.movement_breaks(frame).height == 0
    assert mrr.gap_rows(frame, TODAY).height == 0
    assert live.live_mrr_mismatches(frame, intervals, account.inputs(), as_of=AS_OF).height == 0
    assert schemas.failure_cases(schemas.MrrDaily, frame).height == 0  # includes every amount >= 0
    assert frame.select(pl.col("date").max()).item() in (None, TODAY)
