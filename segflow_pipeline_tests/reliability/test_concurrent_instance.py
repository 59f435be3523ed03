"""Two refreshes started at once in a fresh DAGSTER_HOME both get a working Dagster instance: its sqlite tables are
created once, under a lock, not by both processes racing (before the fix one of them failed with "table ... already
exists" or a UNIQUE constraint on alembic_version in about one start in three)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from segflow_pipeline_tests.support.reliability import PROJECT

START = """
import os, sys, time
start = float(sys.argv[1])
from segflow_pipeline import runner
while time.time() < start:
    time.sleep(0.001)
with runner.dagster_instance() as instance:
    instance.get_runs(limit=1)
print("ok", flush=True)
"""
ROUNDS = 4
PROCESSES = 3


def test_refreshes_started_together_share_one_fresh_dagster_home(tmp_path: Path):
    failures: list[str] = []
    for round_ in range(ROUNDS):
        home = tmp_path / f"dagster_home_{round_}"
        home.mkdir()
        (home / "dagster.yaml").write_text("")
        env = {"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin",
               "PYTHONPATH": str(PROJECT)}
        start = time.time() + 6  # after every process has imported Dagster
        procs = [subprocess.Popen([sys.executable, "-c", START, str(start)], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(PROCESSES)]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            if proc.returncode != 0 or out.strip() != "ok":
                failures.append(err.strip().splitlines()[-1] if err.strip() else out)
    assert failures == []
