"""Accounts refreshed per hour by the production deployment on this machine, and how it scales with concurrent runs.
Prints figures, asserts none.

    python benchmarks/bench_accounts.py                          # 8 accounts, 300 ms latency, 1, 2 and 4 runs at once
    python benchmarks/bench_accounts.py --accounts 12 --concurrency 1,4,8

For each concurrency c: a fresh Dagster instance (deploy/dagster.yaml with max_concurrent_runs = c, a new database
on one PostgreSQL server), one tick of the daily schedule that queues one run per account, and `dagster-daemon run`
launching them, each run in its own process, against the Stripe emulator with K small sandbox accounts and a fixed
latency per request. Throughput is K over the makespan, from the first run's start to the last run's end (the
daemon's own start-up is not counted: in production it is already running). The scaling ratio is that throughput
over the throughput with one run at a time, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stripe_sandbox.server import EmulatorServer  # noqa: E402
from segflow_pipeline_tests.deploy import harness  # noqa: E402


def run_once(pg: dict[str, str], concurrency: int, accounts: int, emulator_url: str, integrations, work: Path
             ) -> dict[str, float]:
    db = harness.create_database(pg, f"bench_c{concurrency}_{int(time.time())}")
    home = harness.write_dagster_home(work / f"home_c{concurrency}", max_concurrent_runs=concurrency,
                                      dequeue_interval_seconds=1, dequeue_num_workers=concurrency)
    cron, tick = harness.far_cron()
    env = {**db, "DAGSTER_HOME": str(home), "SEGFLOW_INTEGRATIONS_FILE": str(work / "integrations.yaml"),
           "SEGFLOW_DUCKDB_PATH": str(work / f"data_c{concurrency}" / "segflow.duckdb"),
           "STRIPE_API_BASE": emulator_url, "SEGFLOW_REFRESH_CRON": cron, "SEGFLOW_REFRESH_TIMEZONE": "UTC",
           **{s.key_env: s.key for s in integrations}}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        t = time.monotonic()
        harness.tick_schedule(tick)
        tick_s = time.monotonic() - t
        with harness.daemon(work / f"daemon_c{concurrency}.log") as proc:
            runs = harness.wait_for_runs(db, accounts, timeout_s=3600, proc=proc)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    failed = [r["partition"] for r in runs if r["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(f"runs failed with concurrency {concurrency}: {failed}; see {work}")
    first, last = min(r["start"] for r in runs), max(r["end"] for r in runs)
    return {"makespan_s": last - first, "per_hour": accounts / (last - first) * 3600,
            "run_s": sum(r["end"] - r["start"] for r in runs) / len(runs),
            "peak": harness.max_overlap([(r["start"], r["end"]) for r in runs]), "tick_s": tick_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=8)
    parser.add_argument("--subscriptions", type=int, default=40, help="subscriptions per account")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the emulator adds to each request")
    parser.add_argument("--concurrency", default="1,2,4", help="max_concurrent_runs values, comma-separated")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    reason = harness.postgres_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0

    sandbox = harness.sandbox_module()
    integrations = [sandbox.sandbox_integration(i) for i in range(1, args.accounts + 1)]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start")
    print(f"{args.accounts} accounts x {args.subscriptions} subscriptions, emulator latency {args.latency * 1000:.0f} ms"
          f" per request; instance: deploy/dagster.yaml on PostgreSQL, DefaultRunLauncher (a process per run)")
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="segflow-bench-accounts-") as tmp, harness.postgres_server() as pg:
        work = Path(tmp)
        sandbox.write_integrations(work / "integrations.yaml", integrations)
        accounts = sandbox.build_accounts(args.accounts, args.subscriptions)
        with EmulatorServer(accounts, latency_s=args.latency) as emulator:
            for c in levels:
                r = results[c] = run_once(pg, c, args.accounts, emulator.url, integrations, work)
                print(f"max_concurrent_runs={c}: {r['per_hour']:7.0f} accounts/hour  makespan {r['makespan_s']:6.1f} s"
                      f"  mean run {r['run_s']:5.1f} s  peak in progress {r['peak']}  (tick queued them in"
                      f" {r['tick_s']:.1f} s)", flush=True)
    base = results[levels[0]]["per_hour"]
    print("scaling vs " + f"{levels[0]} run at a time: " + ", ".join(
        f"{c} -> x{results[c]['per_hour'] / base:.2f}" for c in levels))
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
