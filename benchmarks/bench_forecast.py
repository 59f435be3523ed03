"""Speed and accuracy of the MRR forecast (`transform/forecast.py`). Prints figures, asserts none.

    python benchmarks/bench_forecast.py                   # 100k subscriptions x 3 years, and 1,000 currency series
    python benchmarks/bench_forecast.py --subscriptions 20000 --series 200 --ets-series 50   # quicker

Part 1: the synthetic account of `bench_mrr.py` (100k subscriptions over 3 years in usd, eur, jpy) through the MRR
transform, then the 90-day forecast and the 12-month rolling-origin backtest of the published method and its
baselines (naive, linear_trend, ets), timed, with the accuracy table per currency.

Part 2: 1,000 synthetic currency series (30 days to 3 years of history, MRR from about 1k to 10M, new MRR arriving
at a rate that grows or shrinks, churn as a rate of MRR with rare large losses, some contraction, expansion and
reactivation), the same forecast and backtest. statsmodels' ETS is fitted once per series and origin (up to 12 fits
a series, 20-80 ms each on this shared machine: 305 s for 841 series in one run, 237 s for 200 in another), so by
default it runs on a fixed sample of 60 series (--ets-series 1000 for all) and its time is also given per series;
the other methods run on every series.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_mrr  # noqa: E402

from segflow_pipeline.transform import forecast as fc  # noqa: E402
from segflow_pipeline.transform import forecast_accuracy as fa  # noqa: E402
from segflow_pipeline.transform import mrr  # noqa: E402
from segflow_pipeline.transform.money import cents_to_decimal  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.2f} s")
    return value, seconds


def synthetic_series(n: int, days: int = 3 * 365, seed: int = 17) -> pl.DataFrame:
    """`n` currency series ending on bench_mrr.TODAY, as metrics.mrr_daily rows (movements reconcile exactly)."""
    rng = np.random.default_rng(seed)
    length = np.where(rng.random(n) < 0.08, rng.integers(20, 60, n), rng.integers(60, days + 1, n))
    scale = np.exp(rng.uniform(np.log(1e3), np.log(1e7), n))  # a typical MRR level
    deal = scale / rng.uniform(50, 2000, n)  # a typical new subscription's MRR
    rate = rng.uniform(0.3, 12.0, n)  # new subscriptions a day at the start
    growth = rng.uniform(-0.3, 1.0, n) / 365  # yearly change of that rate
    churn = rng.uniform(0.0003, 0.004, n)  # share of MRR churning a day
    contraction = churn * rng.uniform(0.05, 0.5, n)
    expansion = rng.uniform(0.0, 0.4, n)  # expansion as a share of new
    big = rng.uniform(0.0, 0.004, n)  # chance a day of losing a large customer
    cents = {m: np.zeros((n, days), dtype=np.int64) for m in fc.MOVEMENTS}
    level = np.zeros(n)
    start = days - length
    for t in range(days):
        alive = t >= start
        opening = t == start
        age = np.maximum(t - start, 0)
        arrivals = rng.poisson(rate * np.exp(growth * age))
        new = arrivals * deal * rng.lognormal(0, 0.5, n) + np.where(opening, scale, 0.0)
        expand = new * expansion * rng.random(n)
        react = np.where(rng.random(n) < 0.05, deal * rng.random(n), 0.0)
        lost = level * churn * rng.gamma(2.0, 0.5, n) + np.where(rng.random(n) < big, level * rng.uniform(0.02, 0.12, n),
                                                                  0.0)
        shrink = level * contraction * rng.gamma(2.0, 0.5, n)
        moves = {"new_mrr": new, "expansion_mrr": expand, "reactivation_mrr": react,
                 "contraction_mrr": np.minimum(shrink, level), "churned_mrr": np.minimum(lost, level)}
        moves["churned_mrr"] = np.minimum(moves["churned_mrr"], level - moves["contraction_mrr"])
        for m, v in moves.items():
            cents[m][:, t] = np.where(alive, np.rint(v * 100), 0).astype(np.int64)
        level = level + (sum(cents[m][:, t] for m in fc.INFLOWS) - sum(cents[m][:, t] for m in fc.OUTFLOWS)) / 100
    net = sum(cents[m] for m in fc.INFLOWS) - sum(cents[m] for m in fc.OUTFLOWS)
    mrr_cents = np.cumsum(net, axis=1)
    first = bench_mrr.TODAY - dt.timedelta(days=days - 1)
    dates = pl.date_range(first, bench_mrr.TODAY, eager=True)
    series = np.repeat(np.arange(n), days)
    day = np.tile(np.arange(days), n)
    keep = day >= np.repeat(start, days)
    frame = pl.DataFrame({
        "integration": "bench", "currency": [f"s{i:04d}" for i in series[keep]], "date": dates.gather(day[keep]),
        "mrr": mrr_cents.ravel()[keep], **{m: cents[m].ravel()[keep] for m in fc.MOVEMENTS},
    })
    return frame.with_columns(*(cents_to_decimal(pl.col(c)).alias(c) for c in ("mrr", *fc.MOVEMENTS)))


def print_accuracy(accuracy: pl.DataFrame) -> None:
    table = accuracy.select(
        "currency", "horizon_days", "method", "origins",
        (pl.col("mape") * 100).round(2).alias("mape_%"), (pl.col("coverage_80") * 100).round(0).alias("cov80_%"),
        (pl.col("coverage_95") * 100).round(0).alias("cov95_%"), "beats_naive",
    ).sort("currency", "horizon_days", pl.col("method").replace_strict(
        {m: i for i, m in enumerate(fc.METHODS)}, return_dtype=pl.Int32))
    with pl.Config(tbl_rows=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(table)


def summarize(accuracy: pl.DataFrame, label: str) -> None:
    """Across series: mean MAPE per method and horizon, how often the published method beats naive, and the share
    of series whose 80 % coverage lies in 70-90 %."""
    usable = accuracy.filter(pl.col("origins") > 0)
    summary = usable.group_by("method", "horizon_days").agg(
        pl.len().alias("series"), (pl.col("mape").mean() * 100).round(2).alias("mean_mape_%"),
        (pl.col("mape").median() * 100).round(2).alias("median_mape_%"),
        (pl.col("coverage_80").mean() * 100).round(1).alias("mean_cov80_%"),
        (pl.col("coverage_95").mean() * 100).round(1).alias("mean_cov95_%"),
        (pl.col("beats_naive").mean() * 100).round(1).alias("beats_naive_%_of_series"),
        (pl.col("coverage_80").is_between(0.7, 0.9).mean() * 100).round(1).alias("cov80_in_70_90_%_of_series"),
    ).sort("horizon_days", pl.col("method").replace_strict({m: i for i, m in enumerate(fc.METHODS)},
                                                            return_dtype=pl.Int32))
    print(f"  {label}")
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_width_chars=250):
        print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--ets-series", type=int, default=60, help="series of part 2 that ETS also runs on")
    args = parser.parse_args()

    timed("import statsmodels' ETS (once per process, not counted below)",
          lambda: __import__("statsmodels.tsa.exponential_smoothing.ets"))
    print(f"Part 1: {args.subscriptions:,} subscriptions over 3 years (bench_mrr.py's account)")
    inputs, _ = bench_mrr.synthetic(args.subscriptions)
    daily, _ = timed("MRR transform (for the input, not the forecast)", lambda: mrr.daily_mrr(
        mrr.subscription_mrr_intervals(inputs, as_of=bench_mrr.AS_OF), today=bench_mrr.TODAY))
    result, t_forecast = timed("forecast, 90 days, flows_rates", lambda: fc.mrr_forecast(daily))
    accuracy, t_backtest = timed("backtest, 12 monthly origins x 4 methods", lambda: fa.forecast_accuracy(daily))
    for method in fc.METHODS:
        _, seconds = timed(f"  of which {method}", lambda m=method: fa.forecast_accuracy(daily, methods=(m,)))
    print(f"  rows: {result.forecast.height} forecast, {accuracy.height} accuracy; forecast + backtest "
          f"{t_forecast + t_backtest:.2f} s")
    print_accuracy(accuracy)

    print(f"\nPart 2: {args.series:,} synthetic currency series")
    frame, _ = timed("generate", lambda: synthetic_series(args.series))
    lengths = frame.group_by("currency").len()
    short = lengths.filter(pl.col("len") < fc.MIN_HISTORY_DAYS).height
    print(f"  {frame.height:,} daily rows; {short} series under {fc.MIN_HISTORY_DAYS} days (no forecast expected)")
    result, t_forecast = timed("forecast, 90 days, flows_rates", lambda: fc.mrr_forecast(frame))
    forecast_made = result.status.filter(pl.col("forecast")).height
    print(f"  {forecast_made} series forecast, {result.status.height - forecast_made} stated as too short; "
          f"{result.forecast.height:,} rows; interval order breaks: {fc.interval_order_breaks(result.forecast).height}"
          f"; horizon breaks: {fc.horizon_breaks(result.forecast, frame).height}")
    fast = (fc.FLOWS_RATES, fc.NAIVE, fc.LINEAR_TREND)
    accuracy, t_backtest = timed("backtest, 12 monthly origins x flows_rates, naive, linear_trend",
                                 lambda: fa.forecast_accuracy(frame, methods=fast))
    print(f"  forecast + backtest (all series, three methods): {t_forecast + t_backtest:.2f} s")
    summarize(accuracy, f"accuracy over the {args.series} series")
    names = sorted(lengths.filter(pl.col("len") >= 150)["currency"].to_list())[: args.ets_series]
    sample = frame.filter(pl.col("currency").is_in(names))
    sampled, t_ets = timed(f"backtest of all 4 methods on {len(names)} series (with statsmodels ETS)",
                           lambda: fa.forecast_accuracy(sample))
    if names:
        print(f"  ETS and the rest: {t_ets / len(names) * 1000:.0f} ms a series; all {args.series} series would take "
              f"about {t_ets / len(names) * args.series:.0f} s")
    summarize(sampled, f"accuracy over the {len(names)} series ETS ran on")
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
