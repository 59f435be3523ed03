"""Throughput, incremental cost and memory of the Stripe sync against the local emulator. Prints figures, asserts none.

    python benchmarks/bench_sync.py                       # ~20k subscriptions, 300 ms latency, 100 req/s limit
    python benchmarks/bench_sync.py --subscriptions 2000  # quicker
    python benchmarks/bench_sync.py --rss-lines 1000000   # peak RSS of a sync of ~1M invoice lines (subprocess)

Figures:
- full sync: objects/s (rows of every raw table but quarantine), requests/s, share of the 100 req/s ceiling;
- baseline: the official SDK's sequential `auto_paging_iter` over /v1/invoices, stopped after --baseline-seconds
  and extrapolated to the account's object count (same latency and limit);
- incremental after 1 % of subscriptions changed: its requests as % of the full sync's;
- CPU per 100-object page: SDK parsing into StripeObjects vs orjson + Arrow rows (what the sync does);
- with --rss-lines: peak RSS of a sync process (no latency, no limit) over an account with that many lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb
import orjson
import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segflow_pipeline.sandbox.account import build_account  # noqa: E402
from segflow_pipeline.sandbox.server import EmulatorServer  # noqa: E402
from segflow_pipeline.stripe_api import objects  # noqa: E402
from segflow_pipeline.stripe_api.client import StripeReader  # noqa: E402
from segflow_pipeline.stripe_api.sync import sync_account  # noqa: E402
from segflow_pipeline.warehouse import raw  # noqa: E402

KEY = "sk_test_sandbox_full"


def log(message: str) -> None:
    print(message, flush=True)


def run_sync(url: str, path: Path, mode: str, rate: float, concurrency: int):
    con = duckdb.connect(str(path))
    raw.ensure_tables(con)
    reader = StripeReader(KEY, api_base=url, max_requests_per_second=rate)
    started = time.monotonic()
    report = sync_account(reader, con, mode=mode, concurrency=concurrency)
    seconds = time.monotonic() - started
    con.close()
    return report, seconds


def baseline(url: str, seconds: float) -> tuple[int, float, int]:
    """Sequential paging as most extractors do it: the SDK's auto_paging_iter, StripeObjects and all."""
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=5)
    count, started = 0, time.monotonic()
    for _ in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter():
        count += 1
        if time.monotonic() - started >= seconds:
            break
    elapsed = time.monotonic() - started
    return count, elapsed, -(-count // 100)


def cpu_per_page(url: str) -> dict[str, float]:
    """Milliseconds of one core per 100-object page, for invoices and subscriptions."""
    client = stripe.StripeClient(KEY, base_addresses={"api": url})
    result = {}
    for kind, path, params in (("invoices", "/v1/invoices", {"limit": 100}),
                               ("subscriptions", "/v1/subscriptions", {"limit": 100, "status": "all"})):
        response = client.raw_request("get", path, **params)
        body = response.body.encode()
        n = 20
        started = time.process_time()
        for _ in range(n):
            # What raw_request + deserialize cost: stdlib json into OrderedDicts, then StripeObjects.
            decoded = json.loads(body.decode(), object_pairs_hook=dict)
            client.deserialize(decoded, api_mode="V1")
        sdk = (time.process_time() - started) / n
        started = time.process_time()
        for _ in range(n):
            objects.rows_of(kind, orjson.loads(body)["data"], "default")
        ours = (time.process_time() - started) / n
        result[kind] = (sdk * 1000, ours * 1000)
    return result


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys, time, duckdb
    from segflow_pipeline.stripe_api.client import StripeReader
    from segflow_pipeline.stripe_api.sync import sync_account
    from segflow_pipeline.warehouse import raw
    url, path = sys.argv[1:3]
    con = duckdb.connect(path)
    con.execute("set memory_limit = '1GB'")
    raw.ensure_tables(con)
    started = time.monotonic()
    report = sync_account(StripeReader("sk_test_sandbox_full", api_base=url, max_requests_per_second=100000),
                          con, mode="full", concurrency=8)
    print(report.tables["invoice_lines"]["rows"], report.objects, report.requests, time.monotonic() - started,
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def rss_run(lines_wanted: int) -> None:
    # The seeded accounts carry about 10 invoice lines per subscription.
    n_subs = max(100, lines_wanted // 10)
    log(f"building an account with {n_subs} subscriptions for ~{lines_wanted} invoice lines ...")
    account = build_account(n_subscriptions=n_subs, seed=3)
    log(f"account: {account.counts()}")
    with EmulatorServer({KEY: account}, latency_s=0.0, rate_limit_per_s=None, error_rate=0.0) as server, \
            tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, server.url, str(Path(tmp) / "rss.duckdb")],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             cwd=ROOT, check=True)
        lines, objs, requests, seconds, maxrss_kb = out.stdout.split()
        log(f"sync of {int(lines):,} invoice lines ({int(objs):,} objects, {requests} requests) in "
            f"{float(seconds):.0f} s: peak RSS of the sync process {int(maxrss_kb) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--rss-lines", type=int, default=0, help="only measure peak RSS for this many lines")
    args = parser.parse_args()
    if args.rss_lines:
        rss_run(args.rss_lines)
        return

    started = time.monotonic()
    account = build_account(n_subscriptions=args.subscriptions, seed=7)
    counts = account.counts()
    log(f"account ({time.monotonic() - started:.1f} s to build): {counts}")
    with EmulatorServer({KEY: account}, latency_s=0.0, rate_limit_per_s=None, error_rate=0.0) as server, \
            tempfile.TemporaryDirectory() as tmp:
        cpu = cpu_per_page(server.url)
        for kind, (sdk_ms, ours_ms) in cpu.items():
            log(f"CPU per 100 {kind}: SDK json+StripeObject {sdk_ms:.1f} ms, orjson+Arrow rows {ours_ms:.1f} ms "
                f"({100 / ours_ms * 1000:,.0f} objects/s per core)")
        server.set_faults(latency_s=args.latency, rate_limit_per_s=args.rate, error_rate=0.0)
        log(f"emulator: {args.latency * 1000:.0f} ms latency, {args.rate:.0f} req/s limit")

        db = Path(tmp) / "bench.duckdb"
        full, full_s = run_sync(server.url, db, "full", args.rate, args.concurrency)
        req_rate = full.requests / full_s
        obj_rate = full.objects / full_s
        log(f"full sync: {full.objects:,} objects, {full.requests} requests in {full_s:.1f} s "
            f"-> {obj_rate:,.0f} objects/s, {req_rate:.1f} req/s = {100 * req_rate / args.rate:.0f} % of the "
            f"{args.rate:.0f} req/s ceiling (429 retries {full.retried_429}, 5xx retries {full.retried_5xx})")

        count, base_s, pages = baseline(server.url, args.baseline_seconds)
        base_rate = count / base_s
        log(f"baseline auto_paging_iter over /v1/invoices: {count:,} objects ({pages} pages) in {base_s:.1f} s "
            f"= {base_rate:,.0f} objects/s; extrapolated to {full.objects:,} objects: "
            f"{full.objects / base_rate / 60:.1f} min vs {full_s / 60:.1f} min -> {obj_rate / base_rate:.1f}x faster")

        changed = account.mutate(fraction=0.01, seed=1)
        inc, inc_s = run_sync(server.url, db, "auto", args.rate, args.concurrency)
        log(f"incremental ({inc.mode}) after {len(changed)} subscriptions changed (1 %): {inc.requests} requests "
            f"in {inc_s:.1f} s = {100 * inc.requests / full.requests:.1f} % of the full sync's {full.requests}")
    log(f"benchmark process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        f"(emulator included)")


if __name__ == "__main__":
    main()
