"""Benchmark of the sandbox: account generation (time, objects, memory) and emulator throughput.

Generation is measured at 1k, 10k and 100k subscriptions. Throughput is measured against a 100k-subscription
account served from a separate process (so the server has its own interpreter lock, as a real Stripe endpoint
would), with 8 client threads paging 100-object pages of subscriptions and invoices through the official SDK's
`StripeClient.raw_request` and through plain `requests` sessions. Cold pages encode objects on first access;
warm pages are served from the encoded-bytes cache.

Run: .venv/bin/python benchmarks/bench_emulator.py [--sizes 1000,10000,100000] [--serve-size 100000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import threading
import time
from typing import Any

import orjson

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer

KEY = "sk_test_sandbox_full"
NOW = 1767225600


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_generation(sizes: list[int]) -> None:
    print("== account generation ==")
    print(f"{'subscriptions':>13} {'seconds':>8} {'objects':>10} {'invoices':>9} {'lines':>9} {'events':>8} "
          f"{'RSS MB':>8} {'JSON MB (est.)':>14}")
    for n in sizes:
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        acct = build_account(n_subscriptions=n, seed=7, now=NOW)
        seconds = time.perf_counter() - t0
        grown = rss_mb() - before
        counts = acct.counts()
        objects = sum(v for k, v in counts.items() if k not in ("subscription_items", "invoice_lines"))
        # JSON size: every subscription, customer and event encoded; invoices estimated from a 5,000 sample.
        json_bytes = 0
        for kind in ("subscriptions", "customers", "events", "prices", "products", "coupons"):
            json_bytes += sum(len(acct.encoded(kind, r)) for r in acct.tables[kind].rows)
        invs = acct.tables["invoices"].rows
        sample = invs[:: max(1, len(invs) // 5000)]
        if sample:
            json_bytes += sum(len(acct.encoded("invoices", r)) for r in sample) * len(invs) / len(sample)
        print(f"{n:>13,} {seconds:>8.2f} {objects:>10,} {counts['invoices']:>9,} {counts['invoice_lines']:>9,} "
              f"{counts['events']:>8,} {grown:>8.0f} {json_bytes / 2**20:>14.0f}")
        del acct
        gc.collect()


def _serve(n: int, conn: Any) -> None:
    acct = build_account(n_subscriptions=n, seed=7, now=NOW)
    server = EmulatorServer({KEY: acct}).start()
    first = {k: acct.tables[k].ids[:: max(1, len(acct.tables[k].ids) // 64)] for k in ("subscriptions", "invoices")}
    conn.send((server.url, first, acct.counts()))
    conn.recv()  # block until the benchmark is done
    server.stop()


def _run_threads(n_threads: int, seconds: float, work: Any) -> tuple[int, float]:
    stop = time.perf_counter() + seconds
    counts = [0] * n_threads

    def loop(i: int) -> None:
        step = work(i)
        while time.perf_counter() < stop:
            step()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - t0


def bench_throughput(n: int, seconds: float, n_threads: int = 8) -> None:
    import requests
    import stripe

    print(f"\n== emulator throughput: {n:,} subscriptions, {n_threads} client threads, 100-object pages ==")
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(n, child), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    url, starts, counts = parent.recv()
    print(f"server process ready in {time.perf_counter() - t0:.1f}s at {url}: {counts['subscriptions']:,} "
          f"subscriptions, {counts['invoices']:,} invoices")
    try:
        for resource, extra in (("subscriptions", {"status": "all"}), ("invoices", {})):
            path = f"/v1/{resource}"

            def sdk_work(i: int, resource: str = resource, extra: dict = extra, path: str = path) -> Any:
                client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
                cursors = starts[resource]
                state = {"after": cursors[(i * len(cursors)) // n_threads]}

                def step() -> None:
                    resp = client.raw_request("get", path, limit=100, starting_after=state["after"], **extra)
                    body = orjson.loads(resp.body)
                    state["after"] = body["data"][-1]["id"] if body["has_more"] else cursors[0]

                return step

            def requests_work(i: int, resource: str = resource, extra: dict = extra, path: str = path,
                              shift: int = 0) -> Any:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {KEY}"
                cursors = starts[resource]
                state = {"after": cursors[(i * len(cursors)) // n_threads + shift]}

                def step() -> None:
                    resp = session.get(url + path, params={"limit": 100, "starting_after": state["after"], **extra})
                    body = orjson.loads(resp.content)
                    state["after"] = body["data"][-1]["id"] if body["has_more"] else cursors[0]

                return step

            # The warm runs start from the same cursors as the cold SDK run, whose pages are then cached; the
            # last run starts from other cursors, so its pages are encoded on first access.
            runs = (("SDK raw_request (cold cache)", sdk_work), ("SDK raw_request (warm)", sdk_work),
                    ("requests.Session (warm)", requests_work),
                    ("requests.Session (cold cache)", lambda i, w=requests_work: w(i, shift=1)))
            for label, work in runs:
                done, elapsed = _run_threads(n_threads, seconds, work)
                print(f"  {resource:<13} {label:<30} {done / elapsed:>8.0f} req/s  ({done} pages in {elapsed:.1f}s)")
    finally:
        parent.send("done")
        proc.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--serve-size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if sizes:
        bench_generation(sizes)
    if args.serve_size:
        bench_throughput(args.serve_size, args.seconds)


if __name__ == "__main__":
    main()
