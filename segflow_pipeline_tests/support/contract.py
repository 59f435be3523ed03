"""The public contract of the published DuckDB file (README, "Tables in the DuckDB file"), checked from the file
alone: the raw tables exist, `metrics.mrr_daily` has the documented columns and types, one row per (integration,
currency, date), no gaps up to today, movements that explain each day's change to the cent, no negative values,
arr = 12 x mrr. Independent of the pipeline's code: plain SQL on the file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

COLUMNS = {
    "integration": "VARCHAR", "date": "DATE", "currency": "VARCHAR", "mrr": "DECIMAL(18,2)", "arr": "DECIMAL(18,2)",
    "active_subscriptions": "INTEGER", "paying_customers": "INTEGER", "new_mrr": "DECIMAL(18,2)",
    "expansion_mrr": "DECIMAL(18,2)", "reactivation_mrr": "DECIMAL(18,2)", "contraction_mrr": "DECIMAL(18,2)",
    "churned_mrr": "DECIMAL(18,2)",
}
RAW = ("subscriptions", "invoices", "customers", "prices", "coupons")


def contract_failures(path: Path, today: dt.date | None = None) -> list[str]:
    """What in the file at `path` breaks the contract, one line each (empty: it holds). `today`: the UTC day the
    series must reach (default: today)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    failures: list[str] = []
    with duckdb.connect(str(path), read_only=True) as con:
        tables = set(con.execute("select table_schema, table_name from information_schema.tables").fetchall())
        failures += [f"stripe.{t} is missing" for t in RAW if ("stripe", t) not in tables]
        if ("metrics", "mrr_daily") not in tables:
            return failures + ["metrics.mrr_daily is missing"]
        columns = dict(con.execute("select column_name, data_type from information_schema.columns "
                               "where table_schema = 'metrics' and table_name = 'mrr_daily'").fetchall())
        failures += [f"column {c} is {columns.get(c)}, not {ty}" for c, ty in COLUMNS.items() if columns.get(c) != ty]
        duplicated = con.execute("select count(*) from (select integration, currency, date from metrics.mrr_daily "
                             "group by all having count(*) > 1)").fetchone()[0]
        if duplicated:
            failures.append(f"{duplicated} (integration, currency, date) keys have more than one row")
        spans = con.execute("select integration, currency, min(date), max(date), count(*), "
                        "datediff('day', min(date), max(date)) + 1 from metrics.mrr_daily group by all "
                        "order by all").fetchall()
        for integration, currency, first, last, n, span in spans:
            if n != span:
                failures.append(f"{integration}/{currency}: {span - n} missing days between {first} and {last}")
            if last < today - dt.timedelta(days=1):
                failures.append(f"{integration}/{currency}: the series ends {last}, before {today}")
        breaks = con.execute("""select integration, currency, date from (
                              select integration, currency, date, mrr - coalesce(lag(mrr) over w, 0)
                                - (new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr) as off
                              from metrics.mrr_daily window w as (partition by integration, currency order by date))
                            where abs(off) > 0.005 order by date limit 5""").fetchall()
        if breaks:
            failures.append(f"movements do not explain the change of MRR, first on {breaks}")
        negative = con.execute("select count(*) from metrics.mrr_daily where least(mrr, new_mrr, expansion_mrr, "
                           "reactivation_mrr, contraction_mrr, churned_mrr, active_subscriptions, "
                           "paying_customers) < 0").fetchone()[0]
        if negative:
            failures.append(f"{negative} rows hold a negative value")
        arr = con.execute("select count(*) from metrics.mrr_daily where abs(arr - 12 * mrr) > 0.12").fetchone()[0]
        if arr:
            failures.append(f"{arr} rows where arr is not 12 x mrr")
    return failures
