"""Time and peak memory of the whole marts layer beside the MRR transform on the same data. Prints, asserts nothing.

    python benchmarks/bench_marts.py                        # 100k subscriptions over 3 years
    python benchmarks/bench_marts.py --subscriptions 20000  # quicker

Data: the synthetic account of bench_mrr.py (subscriptions over 3 years in usd, eur and jpy, cancellations, trials,
coupons, upgrades dated by invoice lines), with a customer row (name, email) per customer, written to a working
DuckDB file as the sync would. Each phase then runs in a process of its own, as the assets do, so that its peak RSS
(ru_maxrss: Python, Polars and DuckDB together) is its own:

- transform: read the inputs of metrics.mrr_daily from the file, `subscription_mrr_intervals`, `daily_mrr`,
  `customer_movements` (timed: "compute"), then write metrics.mrr_daily and metrics.mrr_customer_movements;
- marts: every `dbt_like_sql/marts` model in dependency order, its declared tests run on the result and the result
  written (`sql_models.run_model`, `test_failures`, `tables.replace_rows`), on a connection with the pipeline's DuckDB
  memory limit (`warehouse.files.connect`); then the reporting currency: rates of the sandbox's rates file,
  metrics.mrr_daily_reporting and marts.kpis_monthly_reporting with their checks, written.

Printed: each phase's wall time and peak RSS, the slowest models, and the ratios marts / transform.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_mrr  # noqa: E402

from segflow_pipeline import config  # noqa: E402
from segflow_pipeline.config import SANDBOX_FX_RATES, MrrOptions  # noqa: E402
from segflow_pipeline.transform import mrr  # noqa: E402
from segflow_pipeline.transform import reporting_currency as rc  # noqa: E402
from segflow_pipeline.warehouse import files, raw, sql_models  # noqa: E402
from segflow_pipeline.warehouse import tables as wh  # noqa: E402

NAME = "default"
INPUT_TABLES = ("subscriptions", "subscription_items", "prices", "price_tiers", "coupons", "discounts", "customers",
                "invoice_lines", "events", "invoices")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(path: Path, n_subs: int) -> dict:
    """The synthetic account's raw tables in a working file at `path`."""
    inputs, _ = bench_mrr.synthetic(n_subs)
    customers = inputs.subscriptions.select(pl.col("customer").unique().sort().alias("id")).with_columns(
        pl.lit(NAME).alias("integration"), pl.format("Customer {}", "id").alias("name"),
        pl.format("{}@example.test", "id").alias("email"), pl.lit("usd").alias("currency"),
        pl.lit(False).alias("deleted"))
    frames = {t: getattr(inputs, t) for t in INPUT_TABLES if t != "invoices"}
    frames["customers"] = bench_mrr.conform(customers, "customers")
    # one product per billing interval, so that marts.mrr_by_product has products to group by
    frames["prices"] = inputs.prices.with_columns(pl.format("prod_{}", "recurring_interval").alias("product"))
    frames["products"] = bench_mrr.conform(frames["prices"].select(
        pl.lit(NAME).alias("integration"), pl.col("product").unique().alias("id")).with_columns(
        pl.format("Plan {}", "id").alias("name")), "products")
    frames["invoices"] = bench_mrr.empty("invoices")
    con = files.connect(path, config.duckdb_memory_limit())
    raw.ensure_tables(con)
    for table, frame in frames.items():
        wh.replace_rows(con, "stripe", table, frame.drop("raw", strict=False), NAME)
    con.close()
    return {t: f.height for t, f in frames.items()}


def phase_transform(path: Path) -> dict:
    con = files.connect(path, config.duckdb_memory_limit())
    started = time.perf_counter()
    frames = {t: wh.read_table(con, "stripe", t, NAME) for t in INPUT_TABLES}
    read = time.perf_counter() - started
    started = time.perf_counter()
    intervals = mrr.subscription_mrr_intervals(mrr.MrrInputs(**frames, snapshots=pl.DataFrame(
        schema=mrr.SNAPSHOT_SCHEMA)), options=MrrOptions(), as_of=bench_mrr.AS_OF)
    daily = mrr.daily_mrr(intervals, bench_mrr.TODAY)
    movements = mrr.customer_movements(intervals, bench_mrr.TODAY)
    compute = time.perf_counter() - started
    started = time.perf_counter()
    wh.replace_rows(con, "metrics", "mrr_daily", daily, NAME)
    wh.replace_rows(con, "metrics", "mrr_customer_movements", movements, NAME)
    write = time.perf_counter() - started
    con.close()
    return {"read": read, "compute": compute, "write": write, "daily_rows": daily.height,
            "movement_rows": movements.height, "peak_rss_mb": peak_rss_mb()}


def phase_marts(path: Path) -> dict:
    con = files.connect(path, config.duckdb_memory_limit())
    models: dict[str, dict] = {}
    as_of = bench_mrr.AS_OF
    started = time.perf_counter()
    for model in sql_models.load_models():
        t0 = time.perf_counter()
        rows = sql_models.run_model(con, model, NAME, as_of)
        t1 = time.perf_counter()
        failures = sql_models.test_failures(con, model, rows, NAME, as_of)
        t2 = time.perf_counter()
        wh.replace_rows(con, model.schema, model.name, pl.from_arrow(rows), NAME)
        models[model.name] = {"run": t1 - t0, "tests": t2 - t1, "write": time.perf_counter() - t2,
                              "rows": rows.num_rows,
                              "failing_tests": sorted(n for n, b in failures.items() if b.height)}
    sql_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    rates = rc.rates_table(pl.read_csv(SANDBOX_FX_RATES, infer_schema=False), "usd")
    daily = wh.read_table(con, "metrics", "mrr_daily", NAME)
    missing = rc.missing_rates(daily, rates, "usd")
    reporting = rc.daily_reporting(daily, rates, "usd")
    gaps = rc.reporting_gaps(reporting, daily)
    wh.replace_rows(con, "metrics", "mrr_daily_reporting", reporting, NAME)
    kpis = wh.read_table(con, "marts", "kpis_monthly", NAME)
    reporting_kpis = rc.kpis_reporting(kpis, reporting, rates, "usd")
    mismatches = rc.conversion_mismatches(reporting_kpis, kpis, rates, "usd")
    breaks = rc.kpi_range_breaks(reporting_kpis)
    wh.replace_rows(con, "marts", "kpis_monthly_reporting", reporting_kpis, NAME)
    reporting_seconds = time.perf_counter() - t0
    con.close()
    return {"sql": sql_seconds, "reporting": reporting_seconds, "total": sql_seconds + reporting_seconds,
            "models": models, "reporting_rows": reporting.height, "reporting_kpi_rows": reporting_kpis.height,
            "reporting_failures": missing.height + gaps.height + mismatches.height + breaks.height,
            "peak_rss_mb": peak_rss_mb()}


def run_phase(phase: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--db", str(path)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--phase", choices=["transform", "marts"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps((phase_transform if args.phase == "transform" else phase_marts)(args.db)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{NAME}.duckdb"
        t0 = time.perf_counter()
        counts = prepare(path, args.subscriptions)
        print(f"synthetic account: {args.subscriptions:,} subscriptions, {counts['customers']:,} customers, "
              f"{counts['invoice_lines']:,} invoice lines over {bench_mrr.DAYS} days, written to a working file in "
              f"{time.perf_counter() - t0:.1f}s; DuckDB memory limit "
              f"{config.duckdb_memory_limit() or files.DEFAULT_MEMORY_LIMIT}; load average {os.getloadavg()[0]:.1f}")
        transform = run_phase("transform", path)
        print(f"MRR transform: read {transform['read']:.2f}s + compute {transform['compute']:.2f}s + write "
              f"{transform['write']:.2f}s = {transform['read'] + transform['compute'] + transform['write']:.2f}s "
              f"({transform['daily_rows']:,} daily rows, {transform['movement_rows']:,} customer movements); "
              f"peak RSS {transform['peak_rss_mb']:,.0f} MB")
        marts = run_phase("marts", path)
        print(f"marts: {len(marts['models'])} SQL models with their tests {marts['sql']:.2f}s + reporting currency "
              f"{marts['reporting']:.2f}s = {marts['total']:.2f}s; peak RSS {marts['peak_rss_mb']:,.0f} MB")
        for name, m in sorted(marts["models"].items(), key=lambda kv: -(kv[1]["run"] + kv[1]["tests"])):
            print(f"  {name:<24} run {m['run']:5.2f}s  tests {m['tests']:5.2f}s  write {m['write']:5.2f}s  "
                  f"{m['rows']:>9,} rows" + (f"  FAILING {m['failing_tests']}" if m["failing_tests"] else ""))
        print(f"  reporting currency: {marts['reporting_rows']:,} daily rows, {marts['reporting_kpi_rows']} months, "
              f"{marts['reporting_failures']} failing rows")
        whole = transform["read"] + transform["compute"] + transform["write"]
        print(f"ratio marts / transform, time: {marts['total'] / whole:.2f} (whole transform asset), "
              f"{marts['total'] / transform['compute']:.2f} (its compute only); peak RSS: "
              f"{marts['peak_rss_mb'] / transform['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
