"""How well each forecasting method of `forecast.py` would have done: a rolling-origin backtest per series, from the
month ends of the last 12 full months, at 30, 60 and 90 days ahead (`metrics.mrr_forecast_accuracy`). Pure: frames
in, frames out.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from segflow_pipeline.transform.forecast import (ACCURACY_HORIZONS, ACCURACY_SCHEMA, BACKTEST_MONTHS,
                                                 COVERAGE_80_RANGE, METHOD, METHODS, MIN_HISTORY_DAYS, NAIVE, Series,
                                                 _frame, predict, series_list)


def backtest_origins(first_date: dt.date, last_date: dt.date, months: int = BACKTEST_MONTHS) -> list[dt.date]:
    """Month ends of the `months` full months before the month of `last_date`, newest first, that leave at least
    MIN_HISTORY_DAYS of history (first_date .. origin) behind them."""
    origins = []
    month_start = last_date.replace(day=1)
    for _ in range(months):
        origin = month_start - dt.timedelta(days=1)
        if (origin - first_date).days + 1 >= MIN_HISTORY_DAYS:
            origins.append(origin)
        month_start = origin.replace(day=1)
    return origins


@dataclass(frozen=True)
class Outcome:
    """One backtest forecast checked against what happened."""

    method: str
    origin: dt.date
    horizon_days: int
    actual: float
    forecast: float
    lower_80: float
    upper_80: float
    lower_95: float
    upper_95: float


def backtest(s: Series, methods: Sequence[str] = METHODS, horizons: Sequence[int] = ACCURACY_HORIZONS,
             months: int = BACKTEST_MONTHS) -> list[Outcome]:
    """Every (method, origin, horizon) forecast of the rolling-origin backtest whose outcome is known."""
    outcomes = []
    longest = max(horizons)
    for origin_date in backtest_origins(s.first_date, s.last_date, months):
        origin = (origin_date - s.first_date).days
        reachable = [h for h in horizons if origin + h <= s.days - 1]
        if not reachable:
            continue
        for method in methods:
            prediction = predict(s, origin, longest, method)
            if prediction is None:
                continue
            for h in reachable:
                outcomes.append(Outcome(method, origin_date, h, float(s.mrr[origin + h]),
                                        float(prediction.point[h - 1]), float(prediction.lower_80[h - 1]),
                                        float(prediction.upper_80[h - 1]), float(prediction.lower_95[h - 1]),
                                        float(prediction.upper_95[h - 1])))
    return outcomes


def outcome_frame(outcomes: Iterable[Outcome]) -> pl.DataFrame:
    rows = [o.__dict__ for o in outcomes]
    schema = {"method": pl.Utf8(), "origin": pl.Date(), "horizon_days": pl.Int32(), "actual": pl.Float64(),
              "forecast": pl.Float64(), "lower_80": pl.Float64(), "upper_80": pl.Float64(),
              "lower_95": pl.Float64(), "upper_95": pl.Float64()}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def accuracy_rows(key: tuple[str, str, str], outcomes: pl.DataFrame, methods: Sequence[str] = METHODS,
                  horizons: Sequence[int] = ACCURACY_HORIZONS) -> pl.DataFrame:
    """ACCURACY_SCHEMA rows of one series: MAPE over the origins whose actual MRR is above 0 (as a fraction),
    and the share of outcomes inside each band; every (method, horizon) gets a row, with a note saying what the
    numbers mean for the published method."""
    scored = outcomes.with_columns(
        pl.when(pl.col("actual") > 0).then((pl.col("actual") - pl.col("forecast")).abs() / pl.col("actual"))
        .alias("ape"),
        pl.col("actual").is_between(pl.col("lower_80"), pl.col("upper_80")).alias("in80"),
        pl.col("actual").is_between(pl.col("lower_95"), pl.col("upper_95")).alias("in95"),
    )
    summary = {(r["method"], r["horizon_days"]): r for r in scored.group_by("method", "horizon_days").agg(
        pl.len().alias("origins"), pl.col("ape").mean().alias("mape"),
        pl.col("in80").mean().alias("coverage_80"), pl.col("in95").mean().alias("coverage_95"),
    ).iter_rows(named=True)}
    rows = []
    for method in methods:
        for h in horizons:
            found = summary.get((method, h), {})
            naive_mape = summary.get((NAIVE, h), {}).get("mape")
            mape = found.get("mape")
            beats = None if method == NAIVE or mape is None or naive_mape is None else bool(mape < naive_mape)
            row = {"integration": key[0], "basis": key[1], "currency": key[2], "method": method, "horizon_days": h,
                   "origins": int(found.get("origins", 0)), "mape": _round(mape),
                   "coverage_80": _round(found.get("coverage_80")), "coverage_95": _round(found.get("coverage_95")),
                   "naive_mape": _round(naive_mape), "beats_naive": beats}
            row["note"] = _note(row)
            rows.append(row)
    return _frame(rows, ACCURACY_SCHEMA)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _note(row: dict) -> str:
    if row["origins"] == 0:
        return (f"no backtest yet: needs a month end with {MIN_HISTORY_DAYS} days of history before it and "
                f"{row['horizon_days']} days after it")
    if row["method"] == NAIVE:
        return "baseline: the last value"
    if row["method"] != METHOD:
        return "baseline"
    notes = []
    if row["beats_naive"] is True:
        notes.append(f"beats naive ({row['mape']:.2%} vs {row['naive_mape']:.2%} MAPE)")
    elif row["beats_naive"] is False:
        notes.append(f"does NOT beat naive ({row['mape']:.2%} vs {row['naive_mape']:.2%} MAPE)")
    coverage = row["coverage_80"]
    low, high = COVERAGE_80_RANGE
    if coverage is not None and not low <= coverage <= high:
        notes.append(f"80% interval covered {coverage:.0%} of outcomes, outside the {low:.0%}-{high:.0%} aimed at")
    elif coverage is not None:
        notes.append(f"80% interval covered {coverage:.0%} of outcomes")
    if row["origins"] < 6:
        notes.append(f"only {row['origins']} origins: rough")
    return "; ".join(notes)


def forecast_accuracy(daily: pl.DataFrame, methods: Sequence[str] = METHODS,
                      horizons: Sequence[int] = ACCURACY_HORIZONS, months: int = BACKTEST_MONTHS) -> pl.DataFrame:
    """The rolling-origin backtest of every series of `daily` (ACCURACY_SCHEMA): origins at the month ends of the
    last `months` months where history allows, each method forecasting from the history before the origin."""
    parts = [accuracy_rows(s.key, outcome_frame(backtest(s, methods, horizons, months)), methods, horizons)
             for s in series_list(daily)]
    return pl.concat(parts) if parts else pl.DataFrame(schema=ACCURACY_SCHEMA)
