"""The rebuilt past against the sandbox's true history, for accounts built at many clock positions.

Anything built relative to "now" (the sandbox's two years of history, the 30-day event window, yearly periods,
the current period a change falls in) lands differently on a month end, a year end, Feb 29 or a few seconds after
midnight UTC. For each position: a sandbox account built at that instant, a full sync over HTTP with the real
SDK at the same instant, the MRR transform as of it, and then, to the cent:

- every day equals what the API can show (`history_truth.ApiVisibleHistory`, computed from the sandbox's own
  record of what happened, never from API objects);
- the days the event window covers equal the truth;
- today equals the value computed from the current subscription objects alone (`transform.live`), and the
  truth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.resources.raw_sync import sync_account
from segflow_pipeline.transform import live, mrr
from segflow_pipeline.warehouse import raw
from segflow_pipeline.warehouse import tables as wh
from segflow_pipeline_tests.integration.history_truth import (
    MOVEMENTS, ApiVisibleHistory, DayRow, HistoryTruth, as_rows, differences,
)

KEY = "sk_test_clock_7Hq2LmX9vR3tBn5K"
INPUTS = ("subscriptions", "subscription_items", "prices", "price_tiers", "coupons", "discounts", "customers",
          "invoice_lines", "invoice_items", "events", "invoices")

CLOCK = {
    "leap-day-just-after-midnight-2024": "2024-02-29T00:00:05",
    "month-end-last-second-2025-01": "2025-01-31T23:59:59",
    "feb-28-noon-2025": "2025-02-28T12:00:00",
    "mid-month-2025-05": "2025-05-14T09:30:00",
    "quarter-end-2025-06": "2025-06-30T23:00:00",
    "month-end-2025-08": "2025-08-31T18:45:00",
    "year-end-2025": "2025-12-31T23:59:30",
    "new-year-just-after-midnight-2026": "2026-01-01T00:00:07",
    "march-first-2026": "2026-03-01T00:00:30",
    "mid-month-2026-07": "2026-07-15T00:00:01",
    "month-end-2026-10": "2026-10-31T22:10:00",
    "leap-day-2028": "2028-02-29T18:00:00",
}


def epoch(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone.utc).timestamp())


def published_rows(frame) -> dict[tuple[str, dt.date], DayRow]:
    def cents(value) -> int:
        return int(value * 100)

    return {(r["currency"], r["date"]): DayRow(cents(r["mrr"]), r["active_subscriptions"], r["paying_customers"],
                                               *(cents(r[m]) for m in MOVEMENTS))
            for r in frame.iter_rows(named=True)}


def rebuild(account, tmp_path) -> tuple[mrr.MrrInputs, dt.datetime]:
    """A full sync of the account at its own `now`, and the transform's inputs read back from DuckDB."""
    con = duckdb.connect(str(tmp_path / "sync.duckdb"))
    raw.ensure_tables(con)
    with EmulatorServer({KEY: account}) as server:
        reader = StripeReader(KEY, api_base=server.url, max_requests_per_second=2000)
        sync_account(reader, con, mode="full", concurrency=8, now=account.now)
    frames = {t: wh.read_table(con, "stripe", t, "default") for t in INPUTS}
    con.close()
    as_of = dt.datetime.fromtimestamp(account.now, dt.timezone.utc).replace(tzinfo=None)
    return mrr.MrrInputs(**frames, snapshots=None), as_of


@pytest.fixture(scope="module", params=list(CLOCK), ids=list(CLOCK))
def position(request, tmp_path_factory):
    account = build_account(n_subscriptions=110, seed=len(request.param) * 7 + 3, now=epoch(CLOCK[request.param]))
    inputs, as_of = rebuild(account, tmp_path_factory.mktemp("clock"))
    intervals = mrr.subscription_mrr_intervals(inputs, as_of=as_of)
    frame = mrr.daily_mrr(intervals, today=as_of.date())
    return account, inputs, as_of, frame


def test_every_day_equals_what_the_api_can_show(position) -> None:
    account, _, as_of, frame = position
    expected = as_rows(ApiVisibleHistory(account).daily(as_of.date()))
    assert differences(published_rows(frame), expected) == []


def test_the_event_window_equals_the_truth(position) -> None:
    account, _, as_of, frame = position
    visible = ApiVisibleHistory(account)
    first = dt.datetime.fromtimestamp(visible.window_start, dt.timezone.utc).date()
    truth = as_rows(HistoryTruth(account).daily(as_of.date()))
    assert differences(published_rows(frame), truth, lambda day: day > first) == []


def test_today_equals_the_current_objects_and_the_truth(position) -> None:
    account, inputs, as_of, frame = position
    today = as_of.date()
    series = {r["currency"]: r["mrr"] for r in frame.filter(frame["date"] == today).iter_rows(named=True)}
    from_objects = live.current_mrr(inputs, as_of=as_of)
    current = {r["currency"]: r["mrr"] for r in from_objects.iter_rows(named=True)}
    truth = {currency: days[today].mrr for currency, days in HistoryTruth(account).daily(today).items()
             if today in days}
    assert series == current
    assert {c: int(v * 100) for c, v in series.items() if v} == {c: v for c, v in truth.items() if v}


def test_today_equals_the_current_objects_without_any_event(position) -> None:
    """An account whose event log is empty (nothing changed in 30 days, or the key cannot read events): today
    still comes from the current objects, not from the invoiced periods that cover it (a yearly upgrade mid-year
    left the yearly line at the old price covering today)."""
    account, inputs, as_of, _ = position
    quiet = dataclasses.replace(inputs, events=inputs.events.clear())
    frame = mrr.daily_mrr(mrr.subscription_mrr_intervals(quiet, as_of=as_of), today=as_of.date())
    series = {r["currency"]: r["mrr"] for r in frame.filter(frame["date"] == as_of.date()).iter_rows(named=True)}
    current = {r["currency"]: r["mrr"] for r in live.current_mrr(quiet, as_of=as_of).iter_rows(named=True)}
    assert series == current
