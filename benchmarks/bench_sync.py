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
- with --rss-lines: peak RSS of a sync process and of its row-building helpers (no latency, no limit) over an
  account with that many lines, with the pipeline's DuckDB memory settings (`warehouse.files.connect`).
The emulator serves from a process of its own, on the same machine: its CPU and any other load count against the
sync, so the load average is printed with the figures.
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

import orjson
import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segflow_pipeline import config  # noqa: E402
from stripe_sandbox.account import build_account  # noqa: E402
from stripe_sandbox.server import EmulatorServer  # noqa: E402
from segflow_pipeline.stripe_api import objects  # noqa: E402
from segflow_pipeline.stripe_api.client import StripeReader  # noqa: E402
from segflow_pipeline.resources.raw_sync import sync_account  # noqa: E402
from segflow_pipeline.warehouse import files, raw, raw_sink  # noqa: E402

KEY = "sk_test_sandbox_full"


def log(message: str) -> None:
    print(message, flush=True)


def serve(n_subscriptions: int, seed: int) -> None:
    """Emulator process: serves one account; reads `faults L R E`, `mutate F S`, `quit` on stdin."""
    account = build_account(n_subscriptions=n_subscriptions, seed=seed)
    with EmulatorServer({KEY: account}, latency_s=0.0, rate_limit_per_s=None, error_rate=0.0) as server:
        print(json.dumps({"url": server.url, "counts": account.counts()}), flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "faults":
                server.set_faults(latency_s=float(args[0]), rate_limit_per_s=float(args[1]) or None,
                                  error_rate=float(args[2]))
                print("ok", flush=True)
            elif command == "mutate":
                print(len(account.mutate(fraction=float(args[0]), seed=int(args[1]))), flush=True)
            else:
                return


class Emulator:
    """The emulator in a process of its own, so its CPU does not compete with the sync's for one GIL."""

    def __init__(self, n_subscriptions: int, seed: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(n_subscriptions), str(seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        hello = json.loads(self.proc.stdout.readline())
        self.url, self.counts = hello["url"], hello["counts"]

    def command(self, *words: object) -> str:
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


def run_sync(url: str, path: Path, mode: str, rate: float, concurrency: int):
    # the pipeline's DuckDB settings (memory limit, text storage)
    con = files.connect(path, config.duckdb_memory_limit())
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
    import os, resource, sys, threading, time
    from pathlib import Path
    from segflow_pipeline.stripe_api.client import StripeReader
    from segflow_pipeline.resources.raw_sync import sync_account
    from segflow_pipeline.warehouse import files, raw
    url, path = sys.argv[1:3]
    helpers = {}  # pid -> peak RSS (VmHWM, kB) of each child: the row-building helpers

    def watch_helpers():
        while True:
            for pid in open(f"/proc/self/task/{os.getpid()}/children").read().split():
                try:
                    with open(f"/proc/{pid}/status") as status:
                        hwm = [int(line.split()[1]) for line in status if line.startswith("VmHWM")]
                except OSError:
                    continue
                if hwm:
                    helpers[pid] = max(helpers.get(pid, 0), hwm[0])
            time.sleep(0.1)

    threading.Thread(target=watch_helpers, daemon=True).start()
    # the pipeline's own memory settings (SEGFLOW_DUCKDB_MEMORY_LIMIT)
    con = files.connect(Path(path), config.duckdb_memory_limit())
    limit = con.execute("select current_setting('memory_limit')").fetchone()[0].replace(" ", "")
    raw.ensure_tables(con)
    started = time.monotonic()
    report = sync_account(StripeReader("sk_test_sandbox_full", api_base=url, max_requests_per_second=100000),
                          con, mode="full")
    print(report.tables["invoice_lines"]["rows"], report.objects, report.requests, time.monotonic() - started,
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, ",".join(map(str, helpers.values())) or "0", limit)
""")


def rss_run(lines_wanted: int) -> None:
    # The seeded accounts carry about 1.4 invoice lines per invoice and 12 lines per subscription.
    n_subs = max(100, lines_wanted // 12)
    log(f"building an account with {n_subs} subscriptions for ~{lines_wanted:,} invoice lines ...")
    emulator = Emulator(n_subs, 3)
    try:
        log(f"account: {emulator.counts}")
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, emulator.url, str(Path(tmp) / "rss.duckdb")],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 cwd=ROOT, check=True)
        lines, objs, requests, seconds, maxrss_kb, helpers_kb, limit = out.stdout.strip().splitlines()[-1].split()
        helpers = [int(kb) / 1024 for kb in helpers_kb.split(",") if int(kb)]
        total = int(maxrss_kb) / 1024 + sum(helpers)
        # A helper's own ru_maxrss would count the parent's pages it shares between fork and exec; VmHWM does not.
        log(f"sync of {int(lines):,} invoice lines ({int(objs):,} objects, {requests} requests) in "
            f"{float(seconds):.0f} s (DuckDB memory_limit {limit}, the pipeline's default unless "
            f"SEGFLOW_DUCKDB_MEMORY_LIMIT is set, at most {raw_sink.LOAD_MEMORY_LIMIT_MIB:.0f} MiB while a full sync "
            f"loads): peak RSS of the sync process {int(maxrss_kb) / 1024:.0f} MiB, "
            f"of its {len(helpers)} row-building helpers " + " + ".join(f"{h:.0f}" for h in helpers)
            + f" MiB; sum of the peaks {total:.0f} MiB (an upper bound: shared library pages count in each)")
    finally:
        emulator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--rss-lines", type=int, default=0, help="only measure peak RSS for this many lines")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("SUBSCRIPTIONS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.rss_lines:
        rss_run(args.rss_lines)
        return

    log(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    started = time.monotonic()
    emulator = Emulator(args.subscriptions, 7)
    try:
        log(f"account ({time.monotonic() - started:.1f} s to build, served by its own process): {emulator.counts}")
        bench(emulator, args)
    finally:
        emulator.close()
    log(f"benchmark process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
        f"load average after: {os.getloadavg()[0]:.1f}")


def bench(emulator: Emulator, args: argparse.Namespace) -> None:
    url = emulator.url
    cpu = cpu_per_page(url)
    for kind, (sdk_ms, ours_ms) in cpu.items():
        log(f"CPU per 100 {kind}: SDK json+StripeObject {sdk_ms:.1f} ms, orjson+Arrow rows {ours_ms:.1f} ms "
            f"({100 / ours_ms * 1000:,.0f} {kind}/s per core, embedded lines and items not counted)")
    emulator.command("faults", args.latency, args.rate, 0.0)
    log(f"emulator: {args.latency * 1000:.0f} ms latency, {args.rate:.0f} req/s limit")

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        cpu_before, children_before = time.process_time(), os.times()
        full, full_s = run_sync(url, db, "full", args.rate, args.concurrency)
        cpu_s = time.process_time() - cpu_before
        children = os.times()
        helpers_s = (children.children_user + children.children_system
                     - children_before.children_user - children_before.children_system)
        req_rate = full.requests / full_s
        obj_rate = full.objects / full_s
        log(f"full sync: {full.objects:,} objects, {full.requests} requests in {full_s:.1f} s "
            f"-> {obj_rate:,.0f} objects/s, {req_rate:.1f} req/s = {100 * req_rate / args.rate:.0f} % of the "
            f"{args.rate:.0f} req/s ceiling (429 retries {full.retried_429}, 5xx retries {full.retried_5xx}); "
            f"sync CPU {cpu_s:.1f} s = {cpu_s / full_s:.2f} cores, its row-building helpers {helpers_s:.1f} s")
        for table, stats in full.tables.items():
            if stats["rows"]:
                log(f"  {table}: {stats['rows']:,} rows, last page after {stats['seconds']:.1f} s")

        count, base_s, pages = baseline(url, args.baseline_seconds)
        base_rate = count / base_s
        log(f"baseline auto_paging_iter over /v1/invoices (sequential, stopped after {base_s:.0f} s): {count:,} "
            f"objects in {pages} pages = {base_rate:,.0f} objects/s; extrapolated to {full.objects:,} objects: "
            f"{full.objects / base_rate / 60:.1f} min vs {full_s / 60:.1f} min -> {obj_rate / base_rate:.1f}x")

        changed = int(emulator.command("mutate", 0.01, 1))
        inc, inc_s = run_sync(url, db, "auto", args.rate, args.concurrency)
        log(f"incremental ({inc.mode}) after {changed} subscriptions changed or created (1 %): {inc.requests} "
            f"requests in {inc_s:.1f} s = {100 * inc.requests / full.requests:.1f} % of the full sync's "
            f"{full.requests}; rows upserted: " + ", ".join(
                f"{t} {s['rows']}" for t, s in inc.tables.items() if s["rows"]))

if __name__ == "__main__":
    main()
