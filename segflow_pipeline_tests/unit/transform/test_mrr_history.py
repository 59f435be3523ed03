"""Section 5: the past rebuilt from snapshots, events, invoice lines and lifecycle dates."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from segflow_pipeline.transform import mrr

from segflow_pipeline_tests.support.mrr_inputs import AS_OF, TODAY, Account, at

D = Decimal
UPGRADE_DAY = TODAY - dt.timedelta(days=40)  # 2024-05-06


def intervals(account: Account) -> pl.DataFrame:
    return mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)


def value_on(frame: pl.DataFrame, day: dt.date, currency: str = "usd") -> Decimal:
    row = frame.filter((pl.col("date") == day) & (pl.col("currency") == currency))
    return row.get_column("mrr").item() if row.height else D("0.00")


def invoiced_upgrade(account: Account, proration: bool) -> tuple[str, str]:
    """Monthly from March 1st on 50.00, upgraded to 80.00 on May 6th; only invoice lines show it."""
    basic, pro = account.price(unit_amount=5000), account.price(unit_amount=8000)
    account.subscription([(pro, 1)], id="sub_up", start=at("2024-03-01"),
                         current_period_start=at("2024-06-01"), current_period_end=at("2024-07-01"))
    item = "si_sub_up_1"
    for start, end, price in (("2024-03-01", "2024-04-01", basic), ("2024-04-01", "2024-05-01", basic),
                              ("2024-05-01", "2024-06-01", basic), ("2024-06-01", "2024-07-01", pro)):
        account.invoice_line("sub_up", price, at(start), at(end), amount=5000 if price == basic else 8000, item=item)
    if proration:
        change = at(UPGRADE_DAY, 14, 30)
        account.invoice_line("sub_up", basic, change, at("2024-06-01"), amount=-4000, item=item, proration=True)
        account.invoice_line("sub_up", pro, change, at("2024-06-01"), amount=6400, item=item, proration=True)
    return basic, pro


def test_upgrade_40_days_ago_seen_only_in_invoice_lines_appears_on_its_day(account: Account) -> None:
    invoiced_upgrade(account, proration=True)
    iv = intervals(account)
    assert iv.select("valid_from", "valid_to", "mrr", "source").rows() == [
        (dt.date(2024, 3, 1), UPGRADE_DAY, D("50.000000000000"), "invoice"),
        (UPGRADE_DAY, None, D("80.000000000000"), "invoice"),
    ]
    frame = mrr.daily_mrr(iv, TODAY)
    assert value_on(frame, UPGRADE_DAY - dt.timedelta(days=1)) == D("50.00")
    assert value_on(frame, UPGRADE_DAY) == D("80.00")
    assert frame.filter(pl.col("date") == UPGRADE_DAY).get_column("expansion_mrr").item() == D("30.00")
    assert value_on(frame, TODAY) == D("80.00")
    assert mrr.movement_breaks(frame).height == 0


def test_upgrade_without_proration_shows_from_the_first_period_on_the_new_price(account: Account) -> None:
    invoiced_upgrade(account, proration=False)
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, dt.date(2024, 5, 31)) == D("50.00")
    assert value_on(frame, dt.date(2024, 6, 1)) == D("80.00")


def test_proration_lines_never_add_to_mrr_themselves(account: Account) -> None:
    price = account.price(unit_amount=5000)
    account.subscription([(price, 1)], id="sub_p", start=at("2024-05-01"))
    account.invoice_line("sub_p", price, at("2024-05-01"), at("2024-06-01"), amount=5000, item="si_sub_p_1")
    account.invoice_line("sub_p", price, at("2024-06-01"), at("2024-07-01"), amount=5000, item="si_sub_p_1")
    # a one-off invoice item in the same period
    account.rows["invoice_lines"].append({**account.rows["invoice_lines"][-1], "id": "il_oneoff", "type": "invoiceitem",
                                          "subscription_item": None, "amount": 99900})
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert frame.get_column("mrr").unique().to_list() == [D("50.00")]


def items_json(*items: tuple[str, str, int]) -> dict:
    return {"data": [{"id": i, "object": "subscription_item", "price": {"id": p}, "quantity": q} for i, p, q in items]}


def test_event_dates_an_upgrade(account: Account) -> None:
    basic, pro = account.price(unit_amount=5000), account.price(unit_amount=8000)
    account.subscription([(pro, 2)], id="sub_e", start=at("2024-03-01"))
    account.event("sub_e", at("2024-06-05", 16), {"status": "active", "items": items_json(("si_sub_e_1", pro, 2))},
                  {"items": items_json(("si_sub_e_1", basic, 1))})
    # another event defines the start of the 30-day log
    account.event("sub_other", at("2024-05-20"), {"status": "active"}, {"metadata": {}})
    iv = intervals(account)
    assert iv.select("valid_from", "valid_to", "mrr", "source").rows() == [
        (dt.date(2024, 3, 1), dt.date(2024, 6, 5), D("50.000000000000"), "lifecycle"),
        (dt.date(2024, 6, 5), None, D("160.000000000000"), "event"),
    ]


def test_events_with_quantity_in_previous_attributes(account: Account) -> None:
    seat = account.price(unit_amount=1000)
    account.subscription([(seat, 5)], id="sub_q", start=at("2024-03-01"))
    account.event("sub_q", at("2024-06-01", 9), {"status": "active", "quantity": 3}, {"quantity": 2})
    account.event("sub_q", at("2024-06-10", 9), {"status": "active", "quantity": 5}, {"quantity": 3})
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert [value_on(frame, dt.date(2024, 6, d)) for d in (1, 9, 10)] == [D("30.00"), D("30.00"), D("50.00")]
    assert value_on(frame, dt.date(2024, 5, 31)) == D("20.00")


def test_events_win_over_invoice_lines_inside_the_event_window(account: Account) -> None:
    basic, pro = invoiced_upgrade(account, proration=False)
    # the event log starts June 1st and says the upgrade happened June 3rd
    account.event("sub_up", at("2024-06-03", 12), {"status": "active", "items": items_json(("si_sub_up_1", pro, 1))},
                  {"items": items_json(("si_sub_up_1", basic, 1))})
    account.event("sub_x", at("2024-06-01"), {"status": "active"}, {"metadata": {}})
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert [value_on(frame, dt.date(2024, 6, d)) for d in (1, 2, 3)] == [D("50.00"), D("50.00"), D("80.00")]


def test_status_event_blocks_the_days_it_was_not_active(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], id="sub_s", start=at("2024-03-01"))
    account.event("sub_s", at("2024-06-04"), {"status": "past_due"}, {"status": "active"})
    account.event("sub_s", at("2024-06-06"), {"status": "unpaid"}, {"status": "past_due"})
    account.event("sub_s", at("2024-06-09"), {"status": "active"}, {"status": "unpaid"})
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert [value_on(frame, dt.date(2024, 6, d)) for d in range(3, 11)] == [
        D("49.00"), D("49.00"), D("49.00"), D("0.00"), D("0.00"), D("0.00"), D("49.00"), D("49.00")]
    row = frame.filter(pl.col("date") == dt.date(2024, 6, 9)).row(0, named=True)
    assert row["reactivation_mrr"] == D("49.00")


def test_snapshots_win_for_the_days_they_cover(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], id="sub_a", start=at("2024-06-01"))
    account.subscription([(account.price(unit_amount=1000), 1)], id="sub_b", start=at("2024-06-01"), customer="cus_2")
    for day in (dt.date(2024, 6, 5), dt.date(2024, 6, 6), dt.date(2024, 6, 7)):
        account.snapshot(day, "sub_a", "59.00")  # sub_b absent: it had no MRR on those days
    account.snapshot(dt.date(2024, 6, 7), "sub_gone", "5.00", customer="cus_3")
    iv = intervals(account)
    frame = mrr.daily_mrr(iv, TODAY)
    assert [value_on(frame, dt.date(2024, 6, d)) for d in range(4, 9)] == [
        D("59.00"), D("59.00"), D("59.00"), D("64.00"), D("59.00")]
    assert iv.filter(pl.col("source") == "snapshot").select("subscription", "valid_from", "valid_to").sort(
        "subscription").rows() == [("sub_a", dt.date(2024, 6, 5), dt.date(2024, 6, 8)),
                                   ("sub_gone", dt.date(2024, 6, 7), dt.date(2024, 6, 8))]
    assert mrr.movement_breaks(frame).height == 0


def test_snapshot_of_today_is_recomputed(account: Account) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], id="sub_a", start=at("2024-06-01"))
    account.snapshot(TODAY, "sub_a", "1.00")
    assert value_on(mrr.daily_mrr(intervals(account), TODAY), TODAY) == D("49.00")


def test_snapshot_rows_round_trip_exactly(account: Account) -> None:
    weekly = account.price(unit_amount=1000, interval="week")
    account.subscription([(weekly, 1)], id="sub_w", start=at("2024-06-01"))
    account.subscription([(weekly, 1)], id="sub_v", start=at("2024-06-01"))
    first = mrr.daily_mrr(intervals(account), TODAY)
    recorded = pl.concat([mrr.snapshot_rows(intervals(account), dt.date(2024, 6, d)) for d in range(1, 15)])
    account.snapshots = recorded.to_dicts()
    again = mrr.daily_mrr(intervals(account), TODAY)
    assert again.equals(first)
    assert value_on(again, TODAY) == D("86.67")


@pytest.mark.parametrize("bad", ["not json", '{"items": {"data": "oops"}}'])
def test_undecodable_event_json_does_not_crash(account: Account, bad: str) -> None:
    account.subscription([(account.price(unit_amount=4900), 1)], id="sub_j", start=at("2024-03-01"))
    account.event("sub_j", at("2024-06-05"), {"status": "active"}, {"status": "past_due"})
    account.rows["events"][-1]["data_object"] = bad
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, TODAY) == D("49.00")


def test_proration_and_renewal_on_the_same_day_keep_their_order(account: Account) -> None:
    # upgrade at 00:48, renewal at 07:22 the same day: the new price holds from that day on
    basic, pro = account.price(unit_amount=5000), account.price(unit_amount=8000)
    account.subscription([(pro, 1)], id="sub_d", start=at("2024-04-25", 7, 22))
    item = "si_sub_d_1"
    account.invoice_line("sub_d", basic, at("2024-04-25", 7, 22), at("2024-05-25", 7, 22), item=item)
    account.invoice_line("sub_d", basic, at("2024-05-25", 0, 48), at("2024-05-25", 7, 22), amount=-10, item=item,
                         proration=True)
    account.invoice_line("sub_d", pro, at("2024-05-25", 0, 48), at("2024-05-25", 7, 22), amount=10, item=item,
                         proration=True)
    account.invoice_line("sub_d", pro, at("2024-05-25", 7, 22), at("2024-06-25", 7, 22), item=item)
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert [value_on(frame, dt.date(2024, 5, d)) for d in (24, 25, 26)] == [D("50.00"), D("80.00"), D("80.00")]
    assert frame.get_column("date").max() == TODAY and value_on(frame, TODAY) == D("80.00")


# --- every shape Stripe renders a change in (MRR_SPEC section 5, rule 3) -----------------------------------------

def _monthly_upgrade(account: Account, shape: str) -> None:
    """50.00 -> 80.00 on UPGRADE_DAY, dated only by proration lines in `shape`; no event."""
    basic, pro = account.price(unit_amount=5000), account.price(unit_amount=8000)
    account.subscription([(pro, 1)], id="sub_up", start=at("2024-03-01"),
                         current_period_start=at("2024-06-01"), current_period_end=at("2024-07-01"))
    item = "si_sub_up_1"
    for start, end, price in (("2024-03-01", "2024-04-01", basic), ("2024-04-01", "2024-05-01", basic),
                              ("2024-05-01", "2024-06-01", basic), ("2024-06-01", "2024-07-01", pro)):
        account.invoice_line("sub_up", price, at(start), at(end), item=item)
    change = at(UPGRADE_DAY, 14, 30)
    if shape == "subscription_item_details":
        account.invoice_line("sub_up", basic, change, at("2024-06-01"), amount=-4000, item=item, proration=True)
        account.invoice_line("sub_up", pro, change, at("2024-06-01"), amount=6400, item=item, proration=True)
    elif shape == "invoice_item_details":
        account.invoice_line("sub_up", basic, change, at("2024-06-01"), amount=-4000, proration=True,
                             type="invoiceitem")
        account.invoice_line("sub_up", pro, change, at("2024-06-01"), amount=6400, proration=True,
                             type="invoiceitem")
    else:  # pending: not invoiced yet (create_prorations), the item named or not
        account.pending_item("sub_up", basic, change, at("2024-06-01"), amount=-4000,
                             item=item if shape == "pending_named" else None)
        account.pending_item("sub_up", pro, change, at("2024-06-01"), amount=6400,
                             item=item if shape == "pending_named" else None)


@pytest.mark.parametrize("shape", ["subscription_item_details", "invoice_item_details", "pending_named",
                                   "pending_unnamed"])
def test_a_proration_in_any_shape_dates_the_change(account: Account, shape: str) -> None:
    _monthly_upgrade(account, shape)
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, UPGRADE_DAY - dt.timedelta(days=1)) == D("50.00")
    assert value_on(frame, UPGRADE_DAY) == D("80.00")
    assert frame.filter(pl.col("date") == UPGRADE_DAY).get_column("expansion_mrr").item() == D("30.00")
    assert value_on(frame, TODAY) == D("80.00")


def test_yearly_upgrade_mid_year_counts_today_from_the_current_item(account: Account) -> None:
    """1,200.00 a year upgraded to 2,400.00 mid-year: the yearly line still covers today at the old price, the
    proration items name only the subscription. Today is 200.00, from the day of the change on."""
    small, large = account.price(unit_amount=120000, interval="year"), account.price(unit_amount=240000, interval="year")
    account.subscription([(large, 1)], id="sub_y", start=at("2024-01-10"),
                         current_period_start=at("2024-01-10"), current_period_end=at("2025-01-10"))
    account.invoice_line("sub_y", small, at("2024-01-10"), at("2025-01-10"), amount=120000, item="si_sub_y_1")
    change = at("2024-04-20", 9)
    account.invoice_line("sub_y", small, change, at("2025-01-10"), amount=-86000, proration=True, type="invoiceitem")
    account.invoice_line("sub_y", large, change, at("2025-01-10"), amount=172000, proration=True, type="invoiceitem")
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, dt.date(2024, 4, 19)) == D("100.00")
    assert value_on(frame, dt.date(2024, 4, 20)) == D("200.00")
    assert value_on(frame, TODAY) == D("200.00")


def test_seat_change_in_invoice_item_lines_is_matched_by_price_and_quantity(account: Account) -> None:
    seat = account.price(unit_amount=1500)
    account.subscription([(seat, 12)], id="sub_s", start=at("2024-03-01"),
                         current_period_start=at("2024-06-01"), current_period_end=at("2024-07-01"))
    for start, end, qty in (("2024-03-01", "2024-04-01", 8), ("2024-04-01", "2024-05-01", 8),
                            ("2024-05-01", "2024-06-01", 8), ("2024-06-01", "2024-07-01", 12)):
        account.invoice_line("sub_s", seat, at(start), at(end), quantity=qty, item="si_sub_s_1")
    change = at(UPGRADE_DAY, 8)
    account.invoice_line("sub_s", seat, change, at("2024-06-01"), quantity=8, amount=-10000, proration=True,
                         type="invoiceitem")
    account.invoice_line("sub_s", seat, change, at("2024-06-01"), quantity=12, amount=15000, proration=True,
                         type="invoiceitem")
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, UPGRADE_DAY - dt.timedelta(days=1)) == D("120.00")
    assert value_on(frame, UPGRADE_DAY) == D("180.00")


def test_a_change_nothing_dates_counts_from_the_current_period_start(account: Account) -> None:
    """proration_behavior=none mid-period, older than the event window: the current items differ from the last
    invoiced ones and no event or proration dates the change, so they count from current_period_start."""
    seat = account.price(unit_amount=12000, interval="year")
    account.subscription([(seat, 6)], id="sub_n", start=at("2023-11-01"),
                         current_period_start=at("2023-11-01"), current_period_end=at("2024-11-01"))
    account.invoice_line("sub_n", seat, at("2023-11-01"), at("2024-11-01"), quantity=5, item="si_sub_n_1")
    frame = mrr.daily_mrr(intervals(account), TODAY)
    assert value_on(frame, dt.date(2023, 11, 1)) == D("60.00")
    assert value_on(frame, TODAY) == D("60.00")
    assert frame.get_column("mrr").unique().to_list() == [D("60.00")]
