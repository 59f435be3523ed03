"""The monthly KPIs, cohorts and reporting-currency totals computed a second way, in plain Python with Decimal, from
the rows of metrics.mrr_customer_movements and metrics.mrr_daily (and a rates file read with the csv module).

Nothing here shares code with the SQL models or `transform/reporting_currency.py`: customers' month-end MRR comes
from a bisect over each customer's change days, movements from mrr_daily's columns (the models read them from the
customer rows), new and reactivated customers from the MRR sequence (not from the movement labels), and every rate
from Decimal division rounded half-up. Tests compare these to the tables value by value.
"""

from __future__ import annotations

import bisect
import calendar
import csv
import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb

MOVES = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")
CENT, RATE = Decimal("0.01"), Decimal("0.0001")


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE, ROUND_HALF_UP)


def month_end(month: dt.date) -> dt.date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class Customers:
    """Each customer's MRR at the end of any day, from its change rows."""

    def __init__(self, movements: list[dict]):
        self.days: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
        self.values: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
        for r in sorted(movements, key=lambda r: (r["currency"], r["customer"], r["date"])):
            key = (r["currency"], r["customer"])
            self.days[key].append(r["date"])
            self.values[key].append(r["mrr"])

    def of(self, currency: str) -> list[str]:
        return sorted(c for cur, c in self.days if cur == currency)

    def at(self, currency: str, customer: str, day: dt.date) -> Decimal:
        key = (currency, customer)
        i = bisect.bisect_right(self.days[key], day)
        return self.values[key][i - 1] if i else Decimal("0")

    def starts(self, currency: str, customer: str) -> list[dt.date]:
        """Days the customer went from 0 to > 0: the first is new, the others reactivations."""
        out, before = [], Decimal("0")
        for day, value in zip(self.days[(currency, customer)], self.values[(currency, customer)]):
            if before == 0 and value > 0:
                out.append(day)
            before = value
        return out


def expected_kpis(con: duckdb.DuckDBPyConnection, integration: str) -> dict[tuple[str, dt.date], dict]:
    """(currency, month) → the columns of marts.kpis_monthly."""
    daily = rows(con, "select * from metrics.mrr_daily where integration = ? order by currency, date", [integration])
    customers = Customers(rows(con, "select * from metrics.mrr_customer_movements where integration = ?",
                               [integration]))
    by_day = {(r["currency"], r["date"]): r for r in daily}
    out: dict[tuple[str, dt.date], dict] = {}
    for currency in sorted({r["currency"] for r in daily}):
        days = [r["date"] for r in daily if r["currency"] == currency]
        first, last = days[0], days[-1]
        names = customers.of(currency)
        month = first.replace(day=1)
        while month <= last:
            start, end = month - dt.timedelta(days=1), min(month_end(month), last)
            end_row = by_day[(currency, end)]
            assert sum(customers.at(currency, c, end) for c in names) == end_row["mrr"], (currency, end)
            cohort = {c: customers.at(currency, c, start) for c in names if customers.at(currency, c, start) > 0}
            ends = {c: customers.at(currency, c, end) for c in cohort}
            moves = {m: sum((by_day[(currency, d)][m] for d in days if d.replace(day=1) == month), Decimal("0"))
                     for m in MOVES}
            starting = sum(cohort.values(), Decimal("0"))
            assert starting == (by_day[(currency, start)]["mrr"] if start >= first else 0), (currency, month)
            ending, paying = end_row["mrr"], end_row["paying_customers"]
            starts = {c: customers.starts(currency, c) for c in names}
            gained = moves["new_mrr"] + moves["expansion_mrr"] + moves["reactivation_mrr"]
            lost = moves["contraction_mrr"] + moves["churned_mrr"]
            grr = ratio(sum((min(ends[c], cohort[c]) for c in cohort), Decimal("0")), starting)
            out[(currency, month)] = {
                "as_of_date": end, "starting_mrr": starting, "ending_mrr": ending, "net_new_mrr": ending - starting,
                **moves, "paying_customers": paying,
                "arpa": (ending / paying).quantize(CENT, ROUND_HALF_UP) if paying else None,
                "starting_customers": len(cohort),
                "churned_customers": sum(1 for c in cohort if ends[c] == 0),
                "new_customers": sum(1 for c in names if starts[c] and starts[c][0].replace(day=1) == month),
                "reactivated_customers": sum(1 for c in names if any(d.replace(day=1) == month for d in starts[c][1:])),
                "logo_churn_rate": ratio(sum(1 for c in cohort if ends[c] == 0), len(cohort)),
                "cohort_ending_mrr": sum(ends.values(), Decimal("0")),
                "retained_mrr": sum((min(ends[c], cohort[c]) for c in cohort), Decimal("0")),
                "net_revenue_retention": ratio(sum(ends.values(), Decimal("0")), starting),
                "gross_revenue_retention": grr,
                "gross_revenue_churn_rate": None if grr is None else 1 - grr,
                "quick_ratio": ratio(gained, lost),
            }
            month = next_month(month)
    return out


def expected_cohorts(con: duckdb.DuckDBPyConnection, integration: str) -> dict[tuple[str, dt.date, int], dict]:
    """(currency, cohort_month, months_since_start) → the columns of marts.cohort_retention."""
    daily = rows(con, "select currency, max(date) as last from metrics.mrr_daily where integration = ? group by all",
                 [integration])
    customers = Customers(rows(con, "select * from metrics.mrr_customer_movements where integration = ?",
                               [integration]))
    out: dict[tuple[str, dt.date, int], dict] = {}
    for r in daily:
        currency, last = r["currency"], r["last"]
        members: dict[dt.date, list[str]] = defaultdict(list)
        for c in customers.of(currency):
            starts = customers.starts(currency, c)
            if starts:
                members[starts[0].replace(day=1)].append(c)
        for cohort, names in members.items():
            month, k, base = cohort, 0, None
            while month <= last:
                end = min(month_end(month), last)
                values = [customers.at(currency, c, end) for c in names]
                paying, mrr = sum(1 for v in values if v > 0), sum(values, Decimal("0"))
                base = base or (paying, mrr)
                out[(currency, cohort, k)] = {
                    "month": month, "as_of_date": end, "cohort_customers": len(names),
                    "first_month_customers": base[0], "first_month_mrr": base[1], "customers": paying, "mrr": mrr,
                    "customer_retention_rate": ratio(paying, base[0]), "mrr_retention_rate": ratio(mrr, base[1])}
                month, k = next_month(month), k + 1
    return out


def read_rates(path: Path) -> dict[str, list[tuple[dt.date, Decimal]]]:
    rates: dict[str, list[tuple[dt.date, Decimal]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for r in csv.DictReader(handle):
            rates[r["currency"].strip().lower()].append((dt.date.fromisoformat(r["date"].strip()),
                                                         Decimal(r["rate"].strip())))
    return {c: sorted(v) for c, v in rates.items()}


def convert(amount: Decimal, currency: str, day: dt.date, rates: dict, reporting: str) -> Decimal:
    if currency == reporting or amount == 0:
        return amount
    table = rates[currency]
    i = bisect.bisect_right([d for d, _ in table], day)
    assert i, f"no {currency} rate on {day}"
    return (amount * table[i - 1][1]).quantize(CENT, ROUND_HALF_UP)


def expected_daily_reporting(con: duckdb.DuckDBPyConnection, integration: str, rates_file: Path,
                             reporting: str) -> dict[dt.date, dict]:
    """date → mrr and movements of metrics.mrr_daily_reporting."""
    rates = read_rates(rates_file)
    out: dict[dt.date, dict] = defaultdict(lambda: {k: Decimal("0") for k in ("mrr", *MOVES)})
    for r in rows(con, "select * from metrics.mrr_daily where integration = ?", [integration]):
        for k in ("mrr", *MOVES):
            out[r["date"]][k] += convert(r[k], r["currency"], r["date"], rates, reporting)
    return dict(out)


def expected_reporting_retention(kpis: dict[tuple[str, dt.date], dict], rates_file: Path,
                                 reporting: str) -> dict[dt.date, dict]:
    """month → cohort start, end, retained and NRR/GRR in constant currency (rates of the day before the month)."""
    rates = read_rates(rates_file)
    sums: dict[dt.date, dict] = defaultdict(lambda: {"start": Decimal("0"), "end": Decimal("0"),
                                                     "retained": Decimal("0")})
    for (currency, month), k in kpis.items():
        day = month - dt.timedelta(days=1)
        sums[month]["start"] += convert(k["starting_mrr"], currency, day, rates, reporting)
        sums[month]["end"] += convert(k["cohort_ending_mrr"], currency, day, rates, reporting)
        sums[month]["retained"] += convert(k["retained_mrr"], currency, day, rates, reporting)
    return {m: {"cohort_starting_mrr": s["start"], "cohort_ending_mrr": s["end"], "retained_mrr": s["retained"],
                "net_revenue_retention": ratio(s["end"], s["start"]),
                "gross_revenue_retention": ratio(s["retained"], s["start"])} for m, s in sums.items()}
