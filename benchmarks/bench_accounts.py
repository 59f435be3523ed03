"""Accounts refreshed per hour by the production deployment on this machine, how that scales with concurrent runs
and workspaces, and where each run's time goes. Prints figures, asserts none.

    python benchmarks/bench_accounts.py                                   # 10 accounts, 10 workspaces, 1, 2, 4 runs
    python benchmarks/bench_accounts.py --accounts 10,100 --workspaces 10,100 --concurrency 1,2,4,8 --latency-ms 300
    python benchmarks/bench_accounts.py --plan 10:10:1,10:10:2,10:10:4,100:10:4,100:100:4 --publish-scale 1000:100
    python benchmarks/bench_accounts.py --plan 6:6:1,6:6:2 --storage pooled,stock      # before/after of the pool

Each configuration (A accounts spread round robin over W workspaces, c runs at once) gets a fresh Dagster instance
(deploy/dagster.yaml with max_concurrent_runs = c, a new database on one PostgreSQL server), one tick of the daily
schedule that queues one run per account, and `dagster-daemon run` launching them, each run in its own process,
against the Stripe emulator with A small sandbox accounts and a fixed latency per request. `--accounts`,
`--workspaces` and `--concurrency` run every combination (W capped at A); `--plan A:W:c,...` runs exactly those.

Throughput is A over the makespan, from the first run's launch to the last run's end (the daemon's own start-up and
the tick are not counted: in production the daemon is already running). Where the time goes is read from the
instance's event log in PostgreSQL: launch -> "Started process" (process start), -> first step start (code load
and run setup), each step's STEP_START -> STEP_SUCCESS grouped into sync (extract), transform (metrics, marts) and
publish, the gaps between steps (Dagster's per-step overhead), and the last step's end -> run end. The publish time
per workspace is the publish step's duration. CPU is counted from /proc while the daemon runs (`CpuMeter`): the
daemon, its code servers and every run, plus the PostgreSQL server's processes, per account.

`--storage pooled,stock` runs each configuration with each instance storage in turn: `pooled` is
deploy/dagster.yaml as it is (segflow_pipeline/instance_storage.py: connections kept open), `stock` the same file
with Dagster's own PostgreSQL storage (a connection per statement); the ratios compare the two.

`--publish-scale A:W,...` measures the publish of one workspace when the data directory holds A accounts' working
files and ready copies spread over W workspaces, without syncing them all through runs: every account's files are
hard links to the working file of one account synced by the first configuration's runs, so the publish reads a
real file of real size for each account (from the page cache after the first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.deploy import harness

STAGES = ("process start", "code load", "sync", "transform", "publish", "between steps", "run end")
LOGGED = ("PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS", "PIPELINE_FAILURE", "STEP_START",
          "STEP_SUCCESS", "STEP_FAILURE", "ENGINE_EVENT")


def workspace_of(i: int, workspaces: int) -> str:
    """Account i (1-based) of a configuration with W workspaces: round robin, so every workspace holds A/W."""
    return f"ws{(i - 1) % workspaces + 1:03d}"


def write_integrations(path: Path, integrations, workspaces: int) -> None:
    doc = {"integrations": [{"name": s.name, "key_env": s.key_env, "workspace": workspace_of(i, workspaces)}
                            for i, s in enumerate(integrations, start=1)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def stage_of(step_key: str) -> str:
    """A step's stage, from its op name: the Stripe multi-asset syncs, publish publishes, the rest transforms."""
    if step_key.startswith(("publish", "segflow_duckdb")):
        return "publish"
    if step_key.startswith(("extract", "stripe")):
        return "sync"
    return "transform"


TICK_S = os.sysconf("SC_CLK_TCK")


def _cpu_fields(pid: int) -> tuple[int, float, float]:
    """(parent pid, own CPU-seconds, CPU-seconds of its children it has reaped), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK_S, (int(fields[13]) + int(fields[14])) / TICK_S


class CpuMeter:
    """CPU-seconds of this benchmark's child processes (the daemon, its code servers and every run, each sampled
    every `interval_s` until it exits: a process shorter than that is missed) and of the PostgreSQL server (its
    postmaster, every backend it has reaped, and those alive at the end), over the life of the block. Counted from
    /proc, so a run whose parent was killed before reaping it still counts; RUSAGE_CHILDREN would lose it."""

    def __init__(self, pg: dict[str, str], interval_s: float = 0.5) -> None:
        backend = harness.query(pg, "select pg_backend_pid()")[0][0]
        self.postmaster = _cpu_fields(backend)[0]
        self.interval_s = interval_s
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()

    def _postgres(self) -> float:
        own = sum(_cpu_fields(self.postmaster)[1:])
        return own + sum(self._own(pid) for pid in harness.descendants(self.postmaster))

    @staticmethod
    def _own(pid: int) -> float:
        try:
            return _cpu_fields(pid)[1]
        except (OSError, ValueError, IndexError):
            return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            for pid in harness.descendants(os.getpid()):
                self.seen[pid] = max(self.seen.get(pid, 0.0), self._own(pid))

    def __enter__(self) -> "CpuMeter":
        self.postgres_s = -self._postgres()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.postgres_s += self._postgres()
        self.processes_s = sum(self.seen.values())


def run_timings(pg: dict[str, str]) -> dict[str, dict]:
    """Per run: its launch and end, each stage's seconds and each step's seconds, from the event log."""
    rows = harness.query(pg, "select run_id, dagster_event_type, step_key, extract(epoch from timestamp), event "
                             "from event_logs where dagster_event_type = any(%s) order by id", (list(LOGGED),))
    events: dict[str, list] = defaultdict(list)
    for run_id, kind, step, at, event in rows:
        if kind == "ENGINE_EVENT":
            if "Started process for run" not in event:
                continue
            kind = "PROCESS_STARTED"
        events[run_id].append((kind, step, float(at)))
    out = {}
    for run_id, evs in events.items():
        first = {}
        for kind, step, at in evs:
            first.setdefault(kind, at)
        starts = {step: at for kind, step, at in evs if kind == "STEP_START"}
        ends = {step: at for kind, step, at in evs if kind in ("STEP_SUCCESS", "STEP_FAILURE")}
        steps = {s: ends[s] - starts[s] for s in starts if s in ends}
        end = first.get("PIPELINE_SUCCESS", first.get("PIPELINE_FAILURE"))
        launch = first.get("PIPELINE_STARTING")
        if not steps or end is None or launch is None:
            continue
        first_step, last_step = min(starts.values()), max(ends.values())
        process = first.get("PROCESS_STARTED", launch)
        stage = {s: 0.0 for s in STAGES}
        stage["process start"] = process - launch
        stage["code load"] = first_step - process
        for s, secs in steps.items():
            stage[stage_of(s)] += secs
        stage["between steps"] = (last_step - first_step) - sum(steps.values())
        stage["run end"] = end - last_step
        out[run_id] = {"launch": launch, "end": end, "stage": stage, "steps": steps}
    return out


def use_stock_storage(home: Path) -> None:
    """Rewrite `home`'s dagster.yaml to Dagster's own PostgreSQL storage (one `storage: postgres:` block with the
    same connection settings) in place of the deployment's pooled storages."""
    path = home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    postgres_db = config["run_storage"]["config"]["postgres_db"]
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        del config[key]
    path.write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": postgres_db}}, **config}, sort_keys=False))


def run_once(pg: dict[str, str], accounts: int, workspaces: int, concurrency: int, emulator_url: str,
             integrations, work: Path, storage: str = "pooled") -> dict:
    label = f"a{accounts}_w{workspaces}_c{concurrency}_{storage}"
    db = harness.create_database(pg, f"bench_{label}_{int(time.time())}")
    home = harness.write_dagster_home(work / f"home_{label}", max_concurrent_runs=concurrency,
                                      dequeue_interval_seconds=1, dequeue_num_workers=max(4, concurrency))
    if storage == "stock":
        use_stock_storage(home)
    cron, tick = harness.far_cron()
    integrations = integrations[:accounts]
    write_integrations(work / f"integrations_{label}.yaml", integrations, workspaces)
    data = work / f"data_{label}"
    env = {**db, "DAGSTER_HOME": str(home), "SEGFLOW_INTEGRATIONS_FILE": str(work / f"integrations_{label}.yaml"),
           "SEGFLOW_DUCKDB_PATH": str(data / "segflow.duckdb"), "STRIPE_API_BASE": emulator_url,
           "SEGFLOW_REFRESH_CRON": cron, "SEGFLOW_REFRESH_TIMEZONE": "UTC",
           **{s.key_env: s.key for s in integrations}}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    load0 = os.getloadavg()[0]
    meter = CpuMeter(db)
    try:
        t = time.monotonic()
        harness.tick_schedule(tick)
        tick_s = time.monotonic() - t
        with meter, harness.daemon(work / f"daemon_{label}.log") as proc:
            runs = harness.wait_for_runs(db, accounts, timeout_s=4 * 3600, proc=proc)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cpu_s = meter.processes_s + meter.postgres_s
    failed = [r["partition"] for r in runs if r["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(f"runs failed in {label}: {failed}\n{harness.explain(db, runs, work / f'daemon_{label}.log')}")
    timings = run_timings(db)
    events = harness.query(db, "select count(*) from event_logs where run_id = any(%s)",
                           ([r["run_id"] for r in runs],))[0][0] / len(runs)
    first = min(t["launch"] for t in timings.values())
    last = max(t["end"] for t in timings.values())
    stage = {s: statistics.mean(t["stage"][s] for t in timings.values()) for s in STAGES}
    publish = [t["stage"]["publish"] for t in timings.values()]
    steps: dict[str, list[float]] = defaultdict(list)
    for t in timings.values():
        for s, secs in t["steps"].items():
            steps[s].append(secs)
    return {"label": label, "data": data, "storage": storage, "accounts": accounts, "workspaces": workspaces, "concurrency": concurrency,
            "makespan_s": last - first, "per_hour": accounts / (last - first) * 3600,
            "run_s": statistics.mean(t["end"] - t["launch"] for t in timings.values()),
            "peak": harness.max_overlap([(t["launch"], t["end"]) for t in timings.values()]), "tick_s": tick_s,
            "stage": stage, "publish_median": statistics.median(publish), "publish_max": max(publish),
            "steps": {s: statistics.mean(v) for s, v in steps.items()}, "timed": len(timings), "cpu_s": cpu_s,
            "cpu_pg_s": meter.postgres_s, "events": events,
            "load": (load0, os.getloadavg()[0])}


def publish_scale(source: Path, integrations_file: Path, accounts: int, workspaces: int, work: Path,
                  samples: int = 3) -> dict:
    """Publish `samples` workspaces of a data directory holding `accounts` accounts over `workspaces` workspaces,
    every account's working file and ready copy a copy of `source`'s account acct01; seconds per publish."""
    from segflow_pipeline import config
    from segflow_pipeline.warehouse import files

    os.environ["SEGFLOW_INTEGRATIONS_FILE"] = str(integrations_file)
    from segflow_pipeline.defs.marts.assets import MODELS
    from segflow_pipeline.defs.publish.assets import (
        OTHER_TABLE_COMMENTS,  # needs an integrations file to import
    )
    from segflow_pipeline.warehouse.comments import published_comments

    comments = published_comments(MODELS, OTHER_TABLE_COMMENTS)
    published = work / f"scale_a{accounts}_w{workspaces}" / "segflow.duckdb"
    src_work = files.working_path(config.workspace_path(workspace_of(1, 1), published=source), "acct01")
    names = [f"acct{i:04d}" for i in range(1, accounts + 1)]
    members: dict[str, list[str]] = defaultdict(list)
    for i, name in enumerate(names, start=1):
        members[workspace_of(i, workspaces)].append(name)
    t = time.monotonic()
    # Hard links to one file (nothing here writes them): 1,000 accounts cost no disk. A working file and its ready
    # copy then share one modification time, so the copy counts as current and publishing reads it as it is. Each
    # account's files are beside its own workspace's file, as the pipeline keeps them.
    for ws, accounts_of in members.items():
        home = config.workspace_path(ws, published=published)
        files.state_dir(home).mkdir(parents=True)
        for name in accounts_of:
            os.link(src_work, files.working_path(home, name))
            os.link(src_work, files.ready_path(home, name))
    populate_s = time.monotonic() - t
    took = []
    for ws in sorted(members)[:samples]:
        target = config.workspace_path(ws, published=published)
        t = time.monotonic()
        publication = files.publish(target, members[ws], comments=comments, target=target)
        took.append(time.monotonic() - t)
        assert all(c.state == "current" for c in publication.accounts.values()), publication.accounts
    size = src_work.stat().st_size
    shutil.rmtree(published.parent)
    return {"accounts": accounts, "workspaces": workspaces, "per_workspace": len(members[min(members)]),
            "median": statistics.median(took), "all": took, "populate_s": populate_s, "file_kb": size / 1024}


def parse_plan(args) -> list[tuple[int, int, int]]:
    if args.plan:
        return [tuple(int(x) for x in item.split(":")) for item in args.plan.split(",")]  # type: ignore[misc]
    ints = lambda text: [int(x) for x in text.split(",")]
    plan: list[tuple[int, int, int]] = []
    for a in ints(args.accounts):
        for w in sorted({min(w, a) for w in ints(args.workspaces)}):  # no more workspaces than accounts
            plan += [(a, w, c) for c in ints(args.concurrency)]
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", default="10", help="account counts, comma-separated")
    parser.add_argument("--workspaces", default="10", help="workspace counts, comma-separated")
    parser.add_argument("--concurrency", default="1,2,4", help="max_concurrent_runs values, comma-separated")
    parser.add_argument("--plan", default="", help="exact configurations A:W:c, comma-separated (overrides the grid)")
    parser.add_argument("--publish-scale", default="", help="A:W,...: publish of one workspace among A accounts' "
                                                            "files over W workspaces (no runs)")
    parser.add_argument("--storage", default="pooled", help="instance storages to compare, comma-separated: "
                                                            "pooled (deploy/dagster.yaml), stock (Dagster's own)")
    parser.add_argument("--subscriptions", type=int, default=40, help="subscriptions per account")
    parser.add_argument("--latency-ms", type=float, default=300, help="milliseconds the emulator adds per request")
    args = parser.parse_args()
    plan = parse_plan(args)
    scale = [tuple(int(x) for x in item.split(":")) for item in args.publish_scale.split(",") if item]
    reason = harness.postgres_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0

    sandbox = harness.sandbox_module()
    most = max(a for a, _, _ in plan)
    integrations = [sandbox.sandbox_integration(i) for i in range(1, most + 1)]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start")
    print(f"accounts of {args.subscriptions} subscriptions, emulator latency {args.latency_ms:.0f} ms per request; "
          "instance: deploy/dagster.yaml on PostgreSQL, DefaultRunLauncher (a process per run)")
    print("configurations (accounts:workspaces:concurrency): " + ", ".join(f"{a}:{w}:{c}" for a, w, c in plan))
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="segflow-bench-accounts-") as tmp, harness.postgres_server() as pg:
        work = Path(tmp)
        accounts = sandbox.build_accounts(most, args.subscriptions)
        with EmulatorServer(accounts, latency_s=args.latency_ms / 1000) as emulator:
            storages = args.storage.split(",")
            for (a, w, c), storage in [(p, st) for p in plan for st in storages]:
                r = run_once(pg, a, w, c, emulator.url, integrations, work, storage)
                results.append(r)
                s = r["stage"]
                print(f"\n{a} accounts in {w} workspaces, max_concurrent_runs={c}, {storage} storage: "
                      f"{r['per_hour']:6.0f} accounts/hour"
                      f"  makespan {r['makespan_s']:6.1f} s  mean run {r['run_s']:5.1f} s (launch to end)"
                      f"  peak in progress {r['peak']}  (tick {r['tick_s']:.1f} s; load {r['load'][0]:.1f} -> "
                      f"{r['load'][1]:.1f}; {r['timed']} runs timed)", flush=True)
                print("  mean per run, s: " + "  ".join(f"{k} {s[k]:.2f}" for k in STAGES)
                      + f"  = {sum(s.values()):.2f}", flush=True)
                print(f"  CPU of the daemon, its code servers, the runs and PostgreSQL: {r['cpu_s']:.0f} s, "
                      f"{r['cpu_s'] / a:.1f} s per account (PostgreSQL {r['cpu_pg_s'] / a:.1f} s of it); "
                      f"{r['events']:.0f} event-log rows per run", flush=True)
                print(f"  publish step per workspace: median {r['publish_median']:.2f} s, max {r['publish_max']:.2f} s"
                      f" ({a // w} accounts per workspace)", flush=True)
                slow = sorted(r["steps"].items(), key=lambda kv: -kv[1])
                print(f"  steps ({len(slow)}), mean s: " + ", ".join(f"{k} {v:.2f}" for k, v in slow), flush=True)
            scaled = []
            if scale:
                source = results[0]
                print(f"\npublish scale (no runs: every account's working file and ready copy is a hard link to acct01's working file "
                      f"from {source['label']}):", flush=True)
                for a, w in scale:
                    try:
                        p = publish_scale(source["data"] / "segflow.duckdb",
                                          work / f"integrations_{source['label']}.yaml", a, w, work)
                    except Exception as exc:  # noqa: BLE001 - the runs' figures above stand; say why this one is missing
                        print(f"  {a} accounts over {w} workspaces: failed: {exc!r}", flush=True)
                        continue
                    scaled.append(p)
                    print(f"  {a} accounts over {w} workspaces ({p['per_workspace']} per workspace, "
                          f"{p['file_kb']:.0f} KiB each, populated in {p['populate_s']:.1f} s): publish of one "
                          f"workspace median {p['median']:.2f} s (" + ", ".join(f"{x:.2f}" for x in p["all"]) + ")",
                          flush=True)
    print("\nratios:")
    for r in results:
        stock = next((q for q in results if q["storage"] == "stock" and q["accounts"] == r["accounts"]
                      and q["workspaces"] == r["workspaces"] and q["concurrency"] == r["concurrency"]), None)
        if r["storage"] == "pooled" and stock:
            print(f"  pooled over stock storage, {r['accounts']} accounts/{r['workspaces']} workspaces, "
                  f"c={r['concurrency']}: throughput x{r['per_hour'] / stock['per_hour']:.2f}, mean run "
                  f"x{r['run_s'] / stock['run_s']:.2f}, CPU per account x{r['cpu_s'] / stock['cpu_s']:.2f}")
    by = {(r["accounts"], r["workspaces"], r["concurrency"]): r for r in results if r["storage"] == storages[0]}
    for (a, w, c), r in by.items():
        if c != 1 and (a, w, 1) in by:
            print(f"  throughput {a} accounts/{w} workspaces, c={c} over c=1: "
                  f"x{r['per_hour'] / by[(a, w, 1)]['per_hour']:.2f}")
    for (a, w, c), r in by.items():
        if w != 10 and (a, 10, c) in by:
            print(f"  publish step {a} accounts, c={c}, {w} workspaces over 10 workspaces: "
                  f"x{r['publish_median'] / by[(a, 10, c)]['publish_median']:.2f}")
    for p in scaled:
        base = next((q for q in scaled if q["per_workspace"] == p["per_workspace"] and q is not p
                     and q["accounts"] < p["accounts"]), None)
        if base:
            print(f"  publish of a {p['per_workspace']}-account workspace among {p['accounts']} accounts over among "
                  f"{base['accounts']}: x{p['median'] / base['median']:.2f}")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
