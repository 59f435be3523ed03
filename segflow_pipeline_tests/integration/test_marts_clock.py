"""The marts and the reporting currency on sandbox accounts built at several clock positions (a leap day just after
UTC midnight, year and month ends, the first minute of a month), every row compared with `kpi_oracle`, which
computes the same numbers a second way from metrics.mrr_customer_movements and metrics.mrr_daily.

Two ways in: the pure path runs the sync, the MRR transform, every SQL model (with its checks) and the reporting
conversions with the pipeline's clock at the sandbox's own "now", so the current month ends exactly there; the job
path runs the whole Dagster job in process (clock: the real now) and reads the published file. The sync reads objects
created up to the real now, so positions are in the past; future dates (Feb 29 2028, ...) are covered on generated
data in unit/warehouse/test_marts_dates.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest
import stripe

from segflow_pipeline.config import SANDBOX_FX_RATES, MrrOptions
from segflow_pipeline.resources.raw_sync import sync_account
from segflow_pipeline.runner import load_definitions
from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.transform import mrr
from segflow_pipeline.transform import reporting_currency as rc
from segflow_pipeline.warehouse import raw
from segflow_pipeline.warehouse import sql_models as sm
from segflow_pipeline.warehouse import tables as wh
from segflow_pipeline.warehouse.mrr_tables import read_mrr_inputs
from segflow_pipeline_tests import kpi_oracle as oracle
from segflow_pipeline_tests.support.accounts import ACME_KEY

NAME = "default"
KPI_COLUMNS = ("as_of_date", "starting_mrr", "ending_mrr", "net_new_mrr", *oracle.MOVES, "paying_customers", "arpa",
               "starting_customers", "churned_customers", "new_customers", "reactivated_customers", "logo_churn_rate",
               "cohort_ending_mrr", "retained_mrr", "net_revenue_retention", "gross_revenue_retention",
               "gross_revenue_churn_rate", "quick_ratio")
COHORT_COLUMNS = ("month", "as_of_date", "cohort_customers", "first_month_customers", "first_month_mrr", "customers",
                  "mrr", "customer_retention_rate", "mrr_retention_rate")


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


@contextlib.contextmanager
def sandbox_at(text: str, seed: int) -> Iterator[EmulatorServer]:
    account = build_account(n_subscriptions=80, seed=seed, now=int(instant(text).timestamp()))
    with EmulatorServer({ACME_KEY: account}) as server:
        yield server


def build_at(url: str, as_of: dt.datetime, path: Path) -> duckdb.DuckDBPyConnection:
    """Sync, MRR, every model (all its checks must hold) and the reporting tables, with the clock at `as_of`."""
    con = duckdb.connect(str(path))
    raw.ensure_tables(con)
    sync_account(StripeReader(ACME_KEY, api_base=url), con, integration=NAME, mode="full")
    naive = as_of.replace(tzinfo=None)
    intervals = mrr.subscription_mrr_intervals(read_mrr_inputs(con, NAME), options=MrrOptions(), as_of=naive)
    daily = mrr.daily_mrr(intervals, today=naive.date())
    assert mrr.movement_breaks(daily).height == 0 and mrr.gap_rows(daily, naive.date()).height == 0
    wh.replace_rows(con, "metrics", "mrr_daily", daily, NAME)
    wh.replace_rows(con, "metrics", "mrr_customer_movements", mrr.customer_movements(intervals, naive.date()), NAME)
    for model in sm.load_models():
        rows = sm.run_model(con, model, NAME, naive)
        broken = {n: b for n, b in sm.test_failures(con, model, rows, NAME, naive).items() if b.height}
        assert not broken, (model.name, broken)
        wh.replace_rows(con, "marts", model.name, pl.from_arrow(rows), NAME)
    rates = rc.rates_table(pl.read_csv(SANDBOX_FX_RATES, infer_schema=False), "usd")
    reporting = rc.daily_reporting(daily, rates, "usd")
    kpis = wh.read_table(con, "marts", "kpis_monthly", NAME)
    reporting_kpis = rc.kpis_reporting(kpis, reporting, rates, "usd")
    assert rc.reporting_gaps(reporting, daily).height == 0
    assert rc.conversion_mismatches(reporting_kpis, kpis, rates, "usd").height == 0
    assert rc.kpi_range_breaks(reporting_kpis).height == 0
    wh.replace_rows(con, "metrics", "mrr_daily_reporting", reporting, NAME)
    wh.replace_rows(con, "marts", "kpis_monthly_reporting", reporting_kpis, NAME)
    return con


def assert_matches_the_oracle(con: duckdb.DuckDBPyConnection, today: dt.date, client: stripe.StripeClient) -> None:
    kpis = {(r["currency"], r["month"]): r for r in oracle.rows(con, "select * from marts.kpis_monthly")}
    expected = oracle.expected_kpis(con, NAME)
    assert set(kpis) == set(expected)
    for key, want in expected.items():
        assert {c: kpis[key][c] for c in KPI_COLUMNS} == {c: want[c] for c in KPI_COLUMNS}, key
    currencies = {c for c, _ in kpis}
    assert currencies == {"usd", "eur", "jpy"}
    for currency in currencies:  # the current month ends now
        current = max(m for c, m in kpis if c == currency)
        assert (current, kpis[(currency, current)]["as_of_date"]) == (today.replace(day=1), today)
    assert any(k["churned_mrr"] > 0 for k in kpis.values()) and any(k["churned_customers"] for k in kpis.values())

    cohorts = {(r["currency"], r["cohort_month"], r["months_since_start"]): r
               for r in oracle.rows(con, "select * from marts.cohort_retention")}
    expected_cohorts = oracle.expected_cohorts(con, NAME)
    assert set(cohorts) == set(expected_cohorts)
    for key, want in expected_cohorts.items():
        assert {c: cohorts[key][c] for c in COHORT_COLUMNS} == want, key

    drill = oracle.rows(con, "select * from marts.movement_customers")
    moves = oracle.rows(con, "select * from metrics.mrr_customer_movements")
    assert sorted((r["currency"], r["customer"], r["date"], r["movement"], r["mrr_before"], r["mrr_after"], r["amount"])
                  for r in drill) == sorted((r["currency"], r["customer"], r["date"], r["movement"], r["previous_mrr"],
                                             r["mrr"], r["amount"]) for r in moves)
    people = {c.id: (c.name, c.email) for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()}
    assert all((r["customer_name"], r["customer_email"]) == people[r["customer"]] for r in drill)
    assert all(r["subscriptions"] and r["subscriptions"].startswith("sub_") for r in drill)
    for (currency, month), want in expected.items():
        for m in oracle.MOVES:
            got = sum((r["amount"] for r in drill if r["currency"] == currency and r["month"] == month
                       and f"{r['movement']}_mrr" == m), oracle.Decimal("0"))
            assert got == want[m], (currency, month, m)

    reporting = {r["date"]: r for r in oracle.rows(con, "select * from metrics.mrr_daily_reporting")}
    expected_reporting = oracle.expected_daily_reporting(con, NAME, SANDBOX_FX_RATES, "usd")
    assert set(reporting) == set(expected_reporting)
    for day, want in expected_reporting.items():
        assert {k: reporting[day][k] for k in want} == want, day
    retention = oracle.expected_reporting_retention(expected, SANDBOX_FX_RATES, "usd")
    for r in oracle.rows(con, "select * from marts.kpis_monthly_reporting"):
        assert {k: r[k] for k in retention[r["month"]]} == retention[r["month"]], r["month"]
        assert r["ending_mrr"] == reporting[r["as_of_date"]]["mrr"]


@pytest.mark.parametrize("now", [
    "2024-02-29T00:00:30",  # a leap day, just after UTC midnight
    "2025-12-31T23:59:59",  # the last second of a year
    "2026-03-01T00:00:30",  # the first minute of a month: the current month is one day long
    "2026-11-30T23:59:59",  # a month end
])
def test_marts_with_the_clock_at_the_sandboxs_now(now: str, tmp_path: Path) -> None:
    with sandbox_at(now, seed=int(instant(now).timestamp()) % 1000) as server:
        con = build_at(server.url, instant(now), tmp_path / "clock.duckdb")
        try:
            assert_matches_the_oracle(con, instant(now).date(), stripe.StripeClient(
                ACME_KEY, base_addresses={"api": server.url}))
        finally:
            con.close()


@pytest.mark.parametrize("now", ["2024-02-29T00:00:30", "2025-12-31T23:59:59"])
def test_the_whole_job_on_a_sandbox_built_at(now: str, tmp_path: Path, monkeypatch) -> None:
    with sandbox_at(now, seed=11) as server:
        published = tmp_path / "data" / "segflow.duckdb"
        for key, value in {"STRIPE_API_KEY": ACME_KEY, "STRIPE_API_BASE": server.url,
                           "SEGFLOW_DUCKDB_PATH": str(published), "SEGFLOW_FX_RATES": str(SANDBOX_FX_RATES),
                           "SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "none.yaml")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("SEGFLOW_REPORTING_CURRENCY", raising=False)
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        job = load_definitions().resolve_job_def("daily_refresh_job")
        result = job.execute_in_process(run_config={"ops": {"stripe_sync": {"config": {"mode": "full"}}}},
                                        raise_on_error=False)
        assert result.success
        evaluations = [e.asset_check_evaluation_data for e in result.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed]
        assert failed == []
        checked = {f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations}
        assert {"marts/kpis_monthly:agrees_with_mrr_daily", "marts/movement_customers:sums_to_the_bridge",
                "marts/cohort_retention:cohorts_add_up_to_mrr_daily",
                "metrics/mrr_daily_reporting:rates_cover_every_day"} <= checked
        con = duckdb.connect(str(published), read_only=True)
        try:
            today = con.execute("select max(date) from metrics.mrr_daily").fetchone()[0]
            assert_matches_the_oracle(con, today, stripe.StripeClient(ACME_KEY, base_addresses={"api": server.url}))
        finally:
            con.close()
