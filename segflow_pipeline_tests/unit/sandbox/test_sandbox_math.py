"""Stripe's arithmetic in the sandbox: tiers, transform_quantity, billing-period calendar, list paging."""

from __future__ import annotations

import calendar
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from stripe_sandbox import catalog as cat
from stripe_sandbox._time import Clock, add_months
from stripe_sandbox.listing import Table, page

TIERS = [(10, 500, None), (None, 400, None)]


def test_tiers_match_the_mrr_spec_examples():
    assert cat.tiered_amount("volume", TIERS, 15) == 6000
    assert cat.tiered_amount("graduated", TIERS, 15) == 7000
    assert cat.tiered_amount("graduated", [(10, 500, 20000), (None, 400, None)], 3) == 21500


def test_transform_quantity_rounds_like_stripe():
    p = cat.Price(0, "price_x", "prod_x", "SMS", "usd", "month", 1, 1000, transform=(100, "up"))
    assert p.amount(250) == 3000 and p.amount(200) == 2000
    p.transform = (100, "down")
    assert p.amount(250) == 2000


def test_money_formats_zero_decimal_currencies():
    assert cat.money(4900, "usd") == "$49.00" and cat.money(5000, "jpy") == "¥5,000"


def test_month_end_anchor_clamps_and_returns():
    jan31 = calendar.timegm((2025, 1, 31, 10, 0, 0))
    clock = Clock(jan31, "month", 1)
    days = [dt.datetime.fromtimestamp(clock.boundary(k), dt.timezone.utc).date().isoformat() for k in range(4)]
    assert days == ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30"]
    assert add_months(calendar.timegm((2024, 2, 29, 0, 0, 0)), 12) == calendar.timegm((2025, 2, 28, 0, 0, 0))


@given(st.integers(1_500_000_000, 1_900_000_000), st.sampled_from([("month", 1), ("month", 3), ("year", 1),
                                                                    ("week", 1)]), st.integers(0, 400))
def test_period_index_brackets_time(anchor, interval, offset_days):
    clock = Clock(anchor, *interval)
    t = anchor + offset_days * 86400 + 17
    k = clock.index_at(t)
    assert clock.boundary(k) <= t < clock.boundary(k + 1)


@given(st.lists(st.integers(0, 5), min_size=0, max_size=60), st.integers(1, 7))
def test_paging_visits_every_row_once_despite_ties(created, limit):
    ids = [f"obj_{i:03d}" for i in range(len(created))]
    table = Table(ids, created)
    seen, lo = [], 0
    while True:
        got, more = page(None, lo, len(table), limit, False, total=len(table))
        seen += got
        if not more:
            break
        lo = got[-1] + 1
    assert seen == list(range(len(table)))
    assert [(-table.neg_created[p], table.ids[p]) for p in seen] == sorted(zip(created, ids), reverse=True)
