"""The production deployment on one machine, for tests and benchmarks: PostgreSQL through deploy/postgres.sh, a
Dagster instance from deploy/dagster.yaml, the schedule's tick through Dagster's own scheduler code, and
`dagster-daemon run` launching the queued runs.

Everything that loads the pipeline (the code servers of the scheduler tick and of the daemon, and the runs those
launch) runs in subprocesses that inherit `os.environ`, so callers put the stack's environment there first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"
WORKSPACE = PROJECT / "workspace.yaml"
BIN = Path(sys.executable).parent
JOB = "daily_refresh_job"
SCHEDULE = "daily_refresh_job_schedule"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def sandbox_module():
    """deploy/sandbox_accounts.py (deploy/ is scripts, not a package)."""
    name = "segflow_deploy_sandbox_accounts"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "sandbox_accounts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def postgres_missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        return "PostgreSQL server binaries (pg_ctl, initdb, postgres) are not installed: apt-get install -y postgresql"
    if importlib.util.find_spec("dagster_postgres") is None:
        return "dagster-postgres is not installed in this environment: pip install -e '.[test]'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL server on 127.0.0.1; yields the SEGFLOW_PG_* settings deploy/dagster.yaml reads."""
    # Not under pytest's tmp_path: that is private to root, and the server runs as its own OS user when we are root.
    root = Path(tempfile.mkdtemp(prefix="segflow-pg-"))
    root.chmod(0o711)
    env = {"SEGFLOW_PG_HOST": "127.0.0.1", "SEGFLOW_PG_PORT": str(free_port()), "SEGFLOW_PG_USER": "dagster",
           "SEGFLOW_PG_PASSWORD": secrets.token_hex(16), "SEGFLOW_PG_DB": "dagster"}
    script = str(DEPLOY / "postgres.sh")
    try:
        subprocess.run([script, "start", str(root / "pg"), str(root / "run"), str(root / "postgres.log")],
                       env={**os.environ, **env}, check=True, capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        log = (root / "postgres.log").read_text() if (root / "postgres.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log[-2000:]}") from None
    try:
        yield env
    finally:
        subprocess.run([script, "stop", str(root / "pg")], env={**os.environ, **env}, capture_output=True,
                       timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def connect(pg: Mapping[str, str]):
    import psycopg2

    return psycopg2.connect(host=pg["SEGFLOW_PG_HOST"], port=int(pg["SEGFLOW_PG_PORT"]), user=pg["SEGFLOW_PG_USER"],
                            password=pg["SEGFLOW_PG_PASSWORD"], dbname=pg["SEGFLOW_PG_DB"])


def create_database(pg: Mapping[str, str], name: str) -> dict[str, str]:
    """A new empty database on the same server (a fresh Dagster instance); returns settings pointing at it."""
    con = connect(pg)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(f'create database "{name}"')
    finally:
        con.close()
    return {**pg, "SEGFLOW_PG_DB": name}


def query(pg: Mapping[str, str], sql: str, params: tuple = ()) -> list[tuple]:
    con = connect(pg)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def write_dagster_home(home: Path, **run_coordinator: Any) -> Path:
    """$DAGSTER_HOME/dagster.yaml = deploy/dagster.yaml, with run_coordinator settings overridden (e.g. a low
    max_concurrent_runs and a 1 s dequeue interval so a test does not wait)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"].update(run_coordinator)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def far_cron(now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
    """A daily cron 12 hours from now and its next tick: the daemon's own scheduler never reaches it during a run,
    so the only tick is the one `tick_schedule` evaluates."""
    now = now or dt.datetime.now(dt.timezone.utc)
    hour = (now.hour + 12) % 24
    tick = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if tick <= now:
        tick += dt.timedelta(days=1)
    return f"0 {hour} * * *", tick


def tick_schedule(tick: dt.datetime) -> None:
    """Run the scheduler daemon's iteration twice: now (it records the schedule as running from now on, as the
    daemon does on first sight) and just after `tick` (it evaluates that tick in the code server, creates one run
    per RunRequest and submits each through the instance's run coordinator, which queues it)."""
    import dagster as dg
    import dagster._daemon.daemon  # noqa: F401 - imports the scheduler module in the order Dagster expects
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._scheduler.scheduler import launch_scheduled_runs

    logger = logging.getLogger("segflow.deploy.tick")
    instance = dg.DagsterInstance.get()
    try:
        with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)])) as context:
            for when in (dt.datetime.now(dt.timezone.utc), tick + dt.timedelta(seconds=1)):
                list(launch_scheduled_runs(context, logger, end_datetime_utc=when, iteration_times={}))
    finally:
        instance.dispose()


def launch_run(tags: Mapping[str, str], timeout_s: float = 120) -> None:
    """`dagster job launch`: a run of the job submitted through the instance's run coordinator (queued)."""
    import json

    subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(WORKSPACE), "-j", JOB,
                    "--tags", json.dumps(dict(tags))],
                   cwd=PROJECT, check=True, capture_output=True, text=True, timeout=timeout_s)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(Path(stat).parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def daemon(log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` against $DAGSTER_HOME for the life of the block. Stopped by its PID; the code servers
    it started (their PIDs noted before it stops) get a SIGTERM too if they outlive it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], cwd=PROJECT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        started = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            left = [p for p in started if _alive(p)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while left and time.monotonic() < deadline:
                time.sleep(0.2)
                left = [p for p in left if _alive(p)]


def run_rows(pg: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every run in the instance's run storage, with its tags, straight from PostgreSQL."""
    rows = query(pg, "select run_id, status, partition, start_time, end_time, create_timestamp from runs")
    tags: dict[str, dict[str, str]] = {}
    for run_id, key, value in query(pg, "select run_id, key, value from run_tags"):
        tags.setdefault(run_id, {})[key] = value
    return [{"run_id": r[0], "status": r[1], "partition": r[2], "start": r[3], "end": r[4], "created": r[5],
             "tags": tags.get(r[0], {})} for r in rows]


def wait_for_runs(pg: Mapping[str, str], expected: int, timeout_s: float, proc: subprocess.Popen | None = None
                  ) -> list[dict[str, Any]]:
    """Poll run storage until `expected` runs exist and all are finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = run_rows(pg)
        if len(rows) >= expected and all(r["status"] in TERMINAL for r in rows):
            return rows
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {proc.returncode}")
        if time.monotonic() > deadline:
            states = sorted((r["tags"].get("segflow/integration", "?"), r["status"]) for r in rows)
            raise TimeoutError(f"runs not finished after {timeout_s:.0f}s: {states}")
        time.sleep(1.0)


def failure_messages(pg: Mapping[str, str], run_id: str) -> list[str]:
    """What the event log says about a run's failure (step failures, engine events, the run failure)."""
    import json

    rows = query(pg, "select event from event_logs where run_id = %s and dagster_event_type in "
                     "('STEP_FAILURE', 'ENGINE_EVENT', 'PIPELINE_FAILURE') order by id", (run_id,))
    return [json.loads(event).get("user_message", "") for (event,) in rows]


def explain(pg: Mapping[str, str], runs: list[dict[str, Any]], log: Path | None = None) -> str:
    """For an assertion message: each failed run's messages, and the daemon log's errors."""
    lines = []
    for r in runs:
        if r["status"] != "SUCCESS":
            lines.append(f"{r['partition']} {r['status']} {dict(r['tags'])}: {failure_messages(pg, r['run_id'])}")
    if log is not None and log.exists():
        lines += [line for line in log.read_text(errors="replace").splitlines()
                  if " - ERROR - " in line or "Traceback" in line or "Error" in line][-20:]
    return "\n".join(lines)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals in progress at one instant (an end at t frees its slot before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best
