"""kill -9 of `segflow refresh` at several points (mid-sync after some pages, after the sync before MRR, while the new
published file is being written), then a re-run: the tables equal an uninterrupted
run, and a reader polling the published file all along never gets an error or a state other than a complete
refresh (before the first publish the file may not exist)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import (
    BIN,
    Env,
    assert_same_state,
    make_env,
    published_state,
    wait_for,
)

CONTRACT_TABLES = ("stripe.subscriptions", "stripe.invoices", "stripe.invoice_lines", "stripe.customers",
                   "stripe.prices", "stripe.coupons", "metrics.mrr_daily")


def fingerprint(con: duckdb.DuckDBPyConnection) -> tuple:
    """What a BI reader would notice of a half-written refresh: row counts, today's MRR per currency, last date."""
    counts = tuple(con.execute(f"select count(*) from {t}").fetchone()[0] for t in CONTRACT_TABLES)
    mrr = con.execute("select currency, mrr from metrics.mrr_daily where date = (select max(date) from "
                      "metrics.mrr_daily) order by currency").fetchall()
    return counts, tuple(mrr)


class PollingReader(threading.Thread):
    """A BI tool reconnecting every few milliseconds: opens the published file read-only and queries it."""

    def __init__(self, path: Path, expected: tuple) -> None:
        super().__init__(daemon=True)
        self.path, self.expected = path, expected
        self.stop = threading.Event()
        self.reads = 0
        self.missing = 0
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.path.exists():
                self.missing += 1
            else:
                try:
                    con = duckdb.connect(str(self.path), read_only=True)
                    try:
                        seen = fingerprint(con)
                    finally:
                        con.close()
                    self.reads += 1
                    if seen != self.expected:
                        self.problems.append(f"partial state {seen}")
                except Exception as exc:  # noqa: BLE001 - any error a reader could get is a failure here
                    self.problems.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)


class Refresh:
    """`segflow refresh` in a subprocess of its own, recorded in a DAGSTER_HOME the test can read."""

    def __init__(self, env: Env, dagster_home: Path, full: bool = True) -> None:
        self.dagster_home = dagster_home
        self.known_runs = set(self._run_dbs())
        logs = env.root / "logs"
        logs.mkdir(exist_ok=True)
        n = len(list(logs.iterdir()))
        self.stdout, self.stderr = logs / f"{n}.out", logs / f"{n + 1}.err"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                [str(BIN / "segflow"), "refresh", *(["--full"] if full else [])],
                env=env.process_env(DAGSTER_HOME=str(dagster_home)), cwd=env.root, stdout=out, stderr=err)

    def _run_dbs(self) -> list[Path]:
        return [p for p in (self.dagster_home / "history" / "runs").glob("*.db") if p.name != "index.db"]

    def step_events(self) -> set[tuple[str, str]]:
        """(event type, step key) of this run's step events so far."""
        found: set[tuple[str, str]] = set()
        for db in set(self._run_dbs()) - self.known_runs:
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
                try:
                    found |= set(con.execute("select dagster_event_type, step_key from event_logs "
                                             "where step_key is not null").fetchall())
                finally:
                    con.close()
            except sqlite3.Error:
                pass  # being created or written right now; ask again
        return found

    def kill_when(self, predicate, timeout: float = 120) -> bool:
        """SIGKILL the refresh as soon as `predicate()` holds; True if it was still running then."""
        hit = wait_for(lambda: predicate() or self.proc.poll() is not None, timeout, interval=0.005)
        alive = hit and self.proc.poll() is None and predicate()
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return alive and self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 240) -> int:
        return self.proc.wait(timeout=timeout)


def tmp_files(published: Path) -> list[Path]:
    return sorted(published.parent.glob(f".{published.name}.tmp-*"))


@pytest.mark.slow
def test_kill_9_at_every_stage_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    expected_fp = fingerprint(duckdb.connect(str(reference.published), read_only=True))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    with EmulatorServer({reference.key: reference.account}, latency_s=0.01) as server:
        env = make_env(tmp_path, server.url, reference.key)
        published = env.published
        reader = PollingReader(published, expected_fp)
        reader.start()
        try:
            def requests_since(start: int, n: int):
                return lambda: server.stats()["requests"] >= start + n

            # 1. The very first refresh dies mid-sync: nothing is published, nothing half-synced is kept.
            run = Refresh(env, dagster_home)
            assert run.kill_when(requests_since(0, 15)), "the refresh ended before it could be killed mid-sync"
            assert not published.exists()
            working = env.working_dir / "default.duckdb"
            if working.exists():
                con = duckdb.connect(str(working), read_only=True)
                try:
                    assert con.execute("select count(*) from stripe.subscriptions").fetchone()[0] == 0
                finally:
                    con.close()

            # 2. An uninterrupted run publishes exactly what a fault-free run does.
            assert Refresh(env, dagster_home).finish() == 0
            assert_same_state(published_state(published), reference.state)
            good = published.read_bytes()

            # 3. Killed mid-sync after some pages (a full sync), 4. after the sync and before MRR (an incremental
            # one, as the schedule runs): the published file is not touched at all.
            run = Refresh(env, dagster_home)
            assert run.kill_when(requests_since(server.stats()["requests"], 20)), "the sync ended before the kill"
            assert published.read_bytes() == good
            run = Refresh(env, dagster_home, full=False)
            assert run.kill_when(lambda: ("STEP_SUCCESS", "stripe_sync") in run.step_events()), \
                "the refresh ended before it could be killed between the sync and MRR"
            assert published.read_bytes() == good

            # 5. Killed while the new published file is being written beside the old one.
            for _ in range(3):
                run = Refresh(env, dagster_home, full=False)
                if run.kill_when(lambda: bool(tmp_files(published))):
                    break
            else:
                pytest.fail("three refreshes published before the test could kill one while publishing")
            assert tmp_files(published), "the killed publish left its temporary file"
            assert_same_state(published_state(published), reference.state)

            # 6. The re-run (incremental, as the schedule would do it) ends equal to an uninterrupted run; a reader
            # that kept its connection open all along still reads its snapshot.
            held = duckdb.connect(str(published), read_only=True)
            try:
                run = Refresh(env, dagster_home, full=False)
                assert run.finish() == 0, run.stderr.read_text()[-3000:]
                assert fingerprint(held) == expected_fp
            finally:
                held.close()
        finally:
            reader.stop.set()
            reader.join(timeout=10)
    assert_same_state(published_state(published), reference.state)
    assert not reader.problems, reader.problems[:5]
    assert reader.reads > 20 and reader.missing > 0
    # A publish killed half way leaves no file behind once the next publish has run.
    assert tmp_files(published) == []
