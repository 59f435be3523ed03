"""The marts on generated customer histories ending at many "todays" (leap days, year and month ends, the first day
of a month, dates years ahead), every row of marts.kpis_monthly and marts.cohort_retention compared with
`kpi_oracle`. The histories go through the real MRR transform (subscription intervals → metrics.mrr_daily and
metrics.mrr_customer_movements), then through every SQL model with all its checks, as the assets run them."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.transform import mrr
from segflow_pipeline.warehouse import sql_models as sm
from segflow_pipeline.warehouse.tables import replace_rows
from segflow_pipeline_tests import kpi_oracle as oracle
from segflow_pipeline_tests.unit.warehouse.test_sql_models import empty_stripe_table

NAME = "acme"
COLUMNS = ("as_of_date", "starting_mrr", "ending_mrr", "net_new_mrr", *oracle.MOVES, "paying_customers", "arpa",
           "starting_customers", "churned_customers", "new_customers", "reactivated_customers", "logo_churn_rate",
           "cohort_ending_mrr", "retained_mrr", "net_revenue_retention", "gross_revenue_retention",
           "gross_revenue_churn_rate", "quick_ratio")


def histories(today: dt.date, seed: int) -> pl.DataFrame:
    """Subscription intervals (mrr.INTERVAL_SCHEMA, cents as atoms) of ~30 customers over the 15 months before
    `today`: several subscriptions per customer, gaps (churn and reactivation), same-month joins and exits, and one
    customer who joins in the middle of last month and leaves a few days later."""
    rng = random.Random(seed)
    start = today - dt.timedelta(days=450)
    rows = []
    for c in range(30):
        currency = rng.choice(["usd", "usd", "eur", "jpy"])
        for s in range(rng.randint(1, 3)):
            day = start + dt.timedelta(days=rng.randint(0, 440))
            for _ in range(rng.randint(1, 4)):
                if day > today:
                    break
                length = rng.choice([1, 3, 9, 20, 31, 45, 90, 200])
                end = day + dt.timedelta(days=length)
                cents = rng.randint(1, 40) * (100 if currency == "jpy" else rng.choice([99, 100, 250, 1001]))
                rows.append((f"sub_{c}_{s}", f"cus_{c}", currency, day, None if end > today and rng.random() < 0.7
                             else end, cents))
                day = end + dt.timedelta(days=rng.choice([0, 0, 1, 5, 30]))
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    rows.append(("sub_flash", "cus_flash", "usd", last_month + dt.timedelta(days=9), last_month + dt.timedelta(days=14),
                 50_000))
    return pl.DataFrame(
        [{"integration": NAME, "subscription": sub, "customer": cus, "currency": cur, "valid_from": a, "valid_to": b,
          "mrr": Decimal(cents) / 100, "mrr_atoms": cents, "atoms_per_unit": 100, "source": "lifecycle"}
         for sub, cus, cur, a, b, cents in rows]).cast(mrr.INTERVAL_SCHEMA)


def build(tmp: Path, today: dt.date, seed: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp / "dates.duckdb"))
    for schema in ("stripe", "metrics", "marts"):
        con.execute(f"create schema {schema}")
    for table in TABLES:
        empty_stripe_table(con, table)
    intervals = histories(today, seed)
    replace_rows(con, "metrics", "mrr_daily", mrr.daily_mrr(intervals, today), NAME)
    replace_rows(con, "metrics", "mrr_customer_movements", mrr.customer_movements(intervals, today), NAME)
    as_of = dt.datetime.combine(today, dt.time(0, 0, 30))
    for model in sm.load_models():
        rows = sm.run_model(con, model, NAME, as_of)
        broken = {n: b for n, b in sm.test_failures(con, model, rows, NAME, as_of).items() if b.height}
        assert not broken, (model.name, broken)
        replace_rows(con, "marts", model.name, pl.from_arrow(rows), NAME)
    return con


@pytest.mark.parametrize("today", ["2028-02-29", "2027-12-31", "2026-03-01", "2024-02-29", "2025-01-31",
                                   "2030-06-30", "2100-03-01"])
@pytest.mark.parametrize("seed", [1, 2])
def test_marts_match_the_oracle_on_any_day(tmp_path: Path, today: str, seed: int) -> None:
    day = dt.date.fromisoformat(today)
    con = build(tmp_path, day, seed)
    try:
        kpis = {(r["currency"], r["month"]): r for r in oracle.rows(con, "select * from marts.kpis_monthly")}
        expected = oracle.expected_kpis(con, NAME)
        assert set(kpis) == set(expected) and len(expected) > 20
        for key, want in expected.items():
            assert {c: kpis[key][c] for c in COLUMNS} == {c: want[c] for c in COLUMNS}, key
        for currency in {c for c, _ in kpis}:
            assert kpis[(currency, day.replace(day=1))]["as_of_date"] == day  # the current month ends today
        flash_month = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
        assert kpis[("usd", flash_month)]["churned_mrr"] >= Decimal("500.00")  # the flash customer's exit...
        assert (kpis[("usd", flash_month)]["net_revenue_retention"] or 0) >= 0  # ...never makes NRR negative
        cohorts = {(r["currency"], r["cohort_month"], r["months_since_start"]): r
                   for r in oracle.rows(con, "select * from marts.cohort_retention")}
        expected_cohorts = oracle.expected_cohorts(con, NAME)
        assert set(cohorts) == set(expected_cohorts)
        for key, want in expected_cohorts.items():
            assert {c: cohorts[key][c] for c in want} == want, key
    finally:
        con.close()
