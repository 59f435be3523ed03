"""transform/forecast.py on hand-built series: known drivers give known forecasts, bands are ordered, short
histories get no forecast (and say so), the backtest's arithmetic, and each check catching broken input."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from segflow_pipeline.transform import forecast as fc
from segflow_pipeline.transform import forecast_accuracy as fa

D = Decimal
START = dt.date(2025, 1, 1)


def daily(cents: dict[str, list[int]], first: dt.date = START, currency: str = "usd",
          integration: str = "acme", opening_cents: int = 0) -> pl.DataFrame:
    """A metrics.mrr_daily-like frame from per-day movements in cents; mrr is their running sum, so every day
    reconciles (day 0 opens at `opening_cents`, booked as new MRR)."""
    n = len(next(iter(cents.values())))
    moves = {m: np.asarray(cents.get(m, [0] * n), dtype=np.int64) for m in fc.MOVEMENTS}
    moves["new_mrr"] = moves["new_mrr"].copy()
    moves["new_mrr"][0] += opening_cents
    net = sum(moves[m] for m in fc.INFLOWS) - sum(moves[m] for m in fc.OUTFLOWS)
    mrr = np.cumsum(net)
    assert (mrr >= 0).all()
    frame = pl.DataFrame({
        "integration": [integration] * n, "currency": [currency] * n,
        "date": pl.date_range(first, first + dt.timedelta(days=n - 1), eager=True),
        "mrr": mrr, **{m: moves[m] for m in fc.MOVEMENTS},
    })
    return frame.with_columns([(pl.col(c).cast(pl.Decimal(38, 0)) / 100).cast(pl.Decimal(18, 2))
                               for c in ("mrr", *fc.MOVEMENTS)])


def money(value: str) -> Decimal:
    return D(value).quantize(D("0.01"))


# --- known drivers -> known forecast -------------------------------------------------------------------------------

def test_constant_new_mrr_and_no_churn_extends_the_line_to_the_cent() -> None:
    frame = daily({"new_mrr": [1000] * 200}, opening_cents=500_000)  # 5,000 opening, +10.00 a day
    result = fc.mrr_forecast(frame)
    rows = result.forecast.sort("date")
    assert rows.height == 90
    last = frame["mrr"][-1]
    assert last == money("7000.00")  # 5,000 + 200 days x 10.00
    assert rows["date"][0] == frame["date"][-1] + dt.timedelta(days=1)
    assert rows["mrr_forecast"].to_list() == [last + 10 * h for h in range(1, 91)]
    assert set(rows["new_mrr"].to_list()) == {money("10.00")}
    assert set(rows["churned_mrr"].to_list()) == {money("0.00")}
    # a perfectly regular history leaves no error to spread: the bands close on the point
    assert rows["lower_95"].to_list() == rows["mrr_forecast"].to_list() == rows["upper_95"].to_list()
    status = result.status.row(0, named=True)
    assert status["forecast"] is True and status["history_days"] == 200
    assert status["new_mrr_per_month"] == money("304.38")  # 10.00 x 365.25 / 12
    assert status["churn_rate_per_month"] == 0.0
    assert status["mrr_in_90_days"] == last + 900


def test_churn_rate_and_new_flow_head_for_their_steady_state() -> None:
    # 100.00 of new MRR a day and 1 % of yesterday's MRR churning: the book settles at 100 / 0.01 = 10,000.
    n, mrr, new, churn = 400, 1_000_000, [0], [0]  # cents, start at 10,000: already at the steady state
    for _ in range(n - 1):
        lost = mrr // 100
        new.append(10_000)
        churn.append(lost)
        mrr += 10_000 - lost
    frame = daily({"new_mrr": new, "churned_mrr": churn}, opening_cents=1_000_000)
    rows = fc.mrr_forecast(frame).forecast
    assert rows.height == 90
    values = [float(v) for v in rows["mrr_forecast"]]
    assert max(abs(v - 10_000) for v in values) < 1.0
    assert all(abs(float(c) - 100.0) < 0.02 for c in rows["churned_mrr"])


def test_churn_only_decays_geometrically() -> None:
    n, mrr, churn = 300, 10_000_000, [0]
    for _ in range(n - 1):
        lost = mrr // 200  # 0.5 % of yesterday's MRR a day
        churn.append(lost)
        mrr -= lost
    frame = daily({"churned_mrr": churn}, opening_cents=10_000_000)
    last = float(frame["mrr"][-1])
    rows = fc.mrr_forecast(frame).forecast
    expected = [last * 0.995 ** h for h in range(1, 91)]
    got = [float(v) for v in rows["mrr_forecast"]]
    assert max(abs(g - e) / e for g, e in zip(got, expected)) < 0.002


def test_each_forecast_day_reconciles_with_its_movements() -> None:
    rng = np.random.default_rng(3)
    frame = daily({"new_mrr": rng.integers(0, 50_000, 300).tolist(),
                   "expansion_mrr": rng.integers(0, 5_000, 300).tolist(),
                   "contraction_mrr": rng.integers(0, 3_000, 300).tolist(),
                   "churned_mrr": rng.integers(0, 20_000, 300).tolist()}, opening_cents=20_000_000)
    rows = fc.mrr_forecast(frame).forecast.sort("date")
    previous = [frame["mrr"][-1], *rows["mrr_forecast"].to_list()[:-1]]
    for before, row in zip(previous, rows.iter_rows(named=True)):
        change = (row["new_mrr"] + row["expansion_mrr"] + row["reactivation_mrr"] - row["contraction_mrr"]
                  - row["churned_mrr"])
        assert row["mrr_forecast"] - before == change


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_bands_are_ordered_on_lumpy_series(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 700))
    big = rng.random(n) < 0.01
    frame = daily({"new_mrr": (rng.poisson(3, n) * 4900).tolist(),
                   "churned_mrr": np.where(big, 300_000, rng.poisson(1, n) * 4900).tolist(),
                   "reactivation_mrr": (rng.random(n) < 0.05).astype(int).tolist()},
                  opening_cents=2_000_000)
    result = fc.mrr_forecast(frame)
    assert result.forecast.height == 90
    assert fc.interval_order_breaks(result.forecast).is_empty()
    assert fc.horizon_breaks(result.forecast, frame).is_empty()
    widths = (result.forecast["upper_95"] - result.forecast["lower_95"]).to_list()
    assert widths[-1] >= widths[0]


# --- short histories -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("days", "forecast"), [(1, False), (59, False), (60, True), (61, True)],
                         ids=["one_day", "59_days", "60_days", "61_days"])
def test_under_60_days_of_history_no_forecast_and_a_status_that_says_so(days: int, forecast: bool) -> None:
    frame = pl.concat([daily({"new_mrr": [1000] * days}, currency="eur"),
                       daily({"new_mrr": [1000] * 120}, currency="usd")])
    result = fc.mrr_forecast(frame)
    status = {r["currency"]: r for r in result.status.iter_rows(named=True)}
    assert status["eur"]["forecast"] is forecast and status["eur"]["history_days"] == days
    assert result.forecast.filter(pl.col("currency") == "eur").height == (90 if forecast else 0)
    assert result.forecast.filter(pl.col("currency") == "usd").height == 90
    if not forecast:
        assert status["eur"]["reason"] == f"{days} days of history; a forecast needs at least 60"
    assert fc.short_history_breaks(result.forecast, result.status, frame).is_empty()
    assert fc.horizon_breaks(result.forecast, frame).is_empty()


def test_no_history_no_rows() -> None:
    result = fc.mrr_forecast(daily({"new_mrr": [1]}).clear())
    assert result.forecast.is_empty() and result.status.is_empty()
    assert result.forecast.schema == pl.Schema(fc.FORECAST_SCHEMA)


def test_a_series_without_movements_uses_daily_changes_as_flows() -> None:
    frame = daily({"new_mrr": [1000] * 100}, opening_cents=100_000).select(
        "integration", "currency", "date", "mrr").with_columns(pl.lit("reporting").alias("basis"))
    result = fc.mrr_forecast(frame)
    assert result.forecast["basis"].unique().to_list() == ["reporting"]
    assert result.forecast["mrr_forecast"][-1] == frame["mrr"][-1] + 900
    assert "no movements" in result.status["reason"][0]


def test_gaps_inside_a_series_repeat_the_last_value() -> None:
    frame = daily({"new_mrr": [1000] * 100}).filter(pl.col("date") != START + dt.timedelta(days=50))
    (s,) = fc.series_list(frame)
    assert s.days == 100 and s.mrr[50] == s.mrr[49] and s.movements["new_mrr"][50] == 0


# --- the backtest --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("last", "expected_first", "expected_last"), [
    (dt.date(2024, 2, 29), dt.date(2024, 1, 31), dt.date(2023, 2, 28)),
    (dt.date(2024, 3, 1), dt.date(2024, 2, 29), dt.date(2023, 3, 31)),
    (dt.date(2024, 12, 31), dt.date(2024, 11, 30), dt.date(2023, 12, 31)),
    (dt.date(2025, 1, 1), dt.date(2024, 12, 31), dt.date(2024, 1, 31)),
    (dt.date(2025, 1, 31), dt.date(2024, 12, 31), dt.date(2024, 1, 31)),
], ids=["feb_29", "just_after_feb_29", "year_end", "new_year", "month_end"])
def test_origins_are_the_month_ends_of_the_last_12_months(last, expected_first, expected_last) -> None:
    origins = fa.backtest_origins(dt.date(2020, 1, 1), last)
    assert len(origins) == 12 and origins[0] == expected_first and origins[-1] == expected_last
    assert all((o + dt.timedelta(days=1)).day == 1 for o in origins)


def test_origins_need_60_days_of_history_before_them() -> None:
    origins = fa.backtest_origins(dt.date(2024, 11, 2), dt.date(2025, 3, 10))
    # Nov 30 has 29 days behind it, Dec 31 60 (Nov 2 .. Dec 31), Jan 31 and Feb 28 more
    assert origins == [dt.date(2025, 2, 28), dt.date(2025, 1, 31), dt.date(2024, 12, 31)]


def test_backtest_arithmetic_on_a_straight_line() -> None:
    # +10.00 every day from 1,000.00 on 2025-01-01 to 2025-06-30: known MAPE for naive, 0 for flows_rates.
    n = (dt.date(2025, 6, 30) - START).days + 1
    frame = daily({"new_mrr": [1000] * n}, opening_cents=99_000)
    accuracy = fa.forecast_accuracy(frame, methods=(fc.FLOWS_RATES, fc.NAIVE))
    rows = {(r["method"], r["horizon_days"]): r for r in accuracy.iter_rows(named=True)}
    # origins with 60 days behind them and h days after: Mar 31, Apr 30, May 31 (h=30); Mar 31, Apr 30 (h=60);
    # Mar 31 (h=90). Feb 28 has 59 days behind it.
    mrr_at = {d: 1000.0 + 10 * (d - START).days for d in (dt.date(2025, 3, 31), dt.date(2025, 4, 30),
                                                          dt.date(2025, 5, 31))}
    for h, origins in ((30, list(mrr_at)), (60, list(mrr_at)[:2]), (90, list(mrr_at)[:1])):
        naive_mape = sum(10 * h / (mrr_at[o] + 10 * h) for o in origins) / len(origins)
        assert rows[("naive", h)]["origins"] == len(origins)
        assert rows[("naive", h)]["mape"] == pytest.approx(naive_mape, abs=1e-6)
        assert rows[("naive", h)]["coverage_80"] == 0.0  # a constant rise leaves no spread around "no change"
        assert rows[("flows_rates", h)]["mape"] == 0.0
        assert rows[("flows_rates", h)]["coverage_80"] == rows[("flows_rates", h)]["coverage_95"] == 1.0
        assert rows[("flows_rates", h)]["beats_naive"] is True
        assert rows[("flows_rates", h)]["note"].startswith("beats naive")
    assert "only 1 origins" in rows[("flows_rates", 90)]["note"]


def test_accuracy_note_says_when_the_method_does_not_beat_naive() -> None:
    key = ("acme", "currency", "usd")
    outcomes = fa.outcome_frame([
        fa.Outcome("flows_rates", dt.date(2025, 1, 31), 30, 100.0, 110.0, 105.0, 115.0, 100.0, 120.0),
        fa.Outcome("naive", dt.date(2025, 1, 31), 30, 100.0, 98.0, 97.0, 99.0, 96.0, 100.0),
    ])
    rows = fa.accuracy_rows(key, outcomes, methods=("flows_rates", "naive"), horizons=(30, 60))
    first = rows.filter((pl.col("method") == "flows_rates") & (pl.col("horizon_days") == 30)).row(0, named=True)
    assert first["mape"] == pytest.approx(0.1) and first["naive_mape"] == pytest.approx(0.02)
    assert first["beats_naive"] is False and first["coverage_80"] == 0.0 and first["coverage_95"] == 1.0
    assert first["note"].startswith("does NOT beat naive (10.00% vs 2.00% MAPE)")
    assert "outside the 70%-90%" in first["note"]
    empty = rows.filter(pl.col("horizon_days") == 60).row(0, named=True)
    assert empty["origins"] == 0 and empty["mape"] is None and empty["note"].startswith("no backtest yet")


def test_baselines_give_ordered_bands_and_ets_fits_a_noisy_trend() -> None:
    rng = np.random.default_rng(11)
    frame = daily({"new_mrr": rng.integers(0, 40_000, 400).tolist(),
                   "churned_mrr": rng.integers(0, 15_000, 400).tolist()}, opening_cents=5_000_000)
    (s,) = fc.series_list(frame)
    for method in fc.METHODS:
        p = fc.predict(s, s.days - 1, 90, method)
        assert p is not None and len(p.point) == 90
        assert np.all(p.lower_95 <= p.lower_80) and np.all(p.lower_80 <= p.point)
        assert np.all(p.point <= p.upper_80) and np.all(p.upper_80 <= p.upper_95)
    assert fc.predict(s, s.days - 1, 90, fc.NAIVE).point[-1] == s.mrr[-1]


def test_ets_gives_up_on_a_constant_series() -> None:
    (s,) = fc.series_list(daily({"new_mrr": [0] * 100}, opening_cents=100_000))
    assert fc.predict(s, 99, 90, fc.ETS) is None
    accuracy = fa.forecast_accuracy(daily({"new_mrr": [0] * 200}, opening_cents=100_000))
    ets = accuracy.filter(pl.col("method") == fc.ETS)
    assert ets["origins"].to_list() == [0, 0, 0]


# --- the checks fail on broken input -------------------------------------------------------------------------------

@pytest.fixture
def good() -> tuple[pl.DataFrame, fc.ForecastResult]:
    rng = np.random.default_rng(5)
    frame = pl.concat([daily({"new_mrr": rng.integers(0, 9_000, 200).tolist(),
                              "churned_mrr": rng.integers(0, 3_000, 200).tolist()}, opening_cents=3_000_000),
                       daily({"new_mrr": [500] * 30}, currency="eur")])
    return frame, fc.mrr_forecast(frame)


def test_checks_pass_on_a_good_forecast(good) -> None:
    frame, result = good
    assert fc.interval_order_breaks(result.forecast).is_empty()
    assert fc.horizon_breaks(result.forecast, frame).is_empty()
    assert fc.short_history_breaks(result.forecast, result.status, frame).is_empty()


@pytest.mark.parametrize("swap", [("lower_80", "lower_95"), ("mrr_forecast", "upper_80"), ("upper_80", "upper_95"),
                                  ("lower_80", "mrr_forecast")])
def test_interval_order_breaks_finds_swapped_bounds(good, swap) -> None:
    _, result = good
    a, b = swap
    broken = result.forecast.with_columns(
        pl.when(pl.col("horizon_day") == 45).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
        pl.when(pl.col("horizon_day") == 45).then(pl.col(a) - 1).otherwise(pl.col(b)).alias(b))
    bad = fc.interval_order_breaks(broken)
    assert bad.height == 1 and bad["date"][0] == result.forecast.filter(pl.col("horizon_day") == 45)["date"][0]


def test_interval_order_breaks_finds_nulls(good) -> None:
    _, result = good
    broken = result.forecast.with_columns(
        pl.when(pl.col("horizon_day") == 3).then(None).otherwise(pl.col("upper_95")).alias("upper_95"))
    assert fc.interval_order_breaks(broken).height == 1


@pytest.mark.parametrize("breakage", ["drop_a_day", "duplicate_a_day", "shift_by_a_day", "stranger_series",
                                      "missing_series"])
def test_horizon_breaks_finds_incomplete_forecasts(good, breakage: str) -> None:
    frame, result = good
    f = result.forecast
    broken = {
        "drop_a_day": lambda: f.filter(pl.col("horizon_day") != 90),
        "duplicate_a_day": lambda: pl.concat([f.filter(pl.col("horizon_day") != 90),
                                              f.filter(pl.col("horizon_day") == 1)]),
        "shift_by_a_day": lambda: f.with_columns(pl.col("date") + pl.duration(days=1)),
        "stranger_series": lambda: pl.concat([f, f.with_columns(pl.lit("gbp").alias("currency"))]),
        "missing_series": lambda: f.clear(),
    }[breakage]()
    bad = fc.horizon_breaks(broken, frame)
    assert bad.height == 1


def test_short_history_breaks_finds_a_forecast_or_a_silent_status(good) -> None:
    frame, result = good
    extra = result.forecast.with_columns(pl.lit("eur").alias("currency"))
    assert fc.short_history_breaks(pl.concat([result.forecast, extra]), result.status, frame).height == 1
    silent = result.status.filter(pl.col("currency") != "eur")
    assert fc.short_history_breaks(result.forecast, silent, frame)["currency"].to_list() == ["eur"]
