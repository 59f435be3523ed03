"""Ctrl-C (SIGINT) or SIGTERM stops `segflow refresh`: the interrupted step is not retried, nothing downstream runs,
the published file stays byte for byte as it was, and the command exits 128 + the signal's number with a last line
saying what happened (Dagster's own log of the interrupted step comes before it). Before the fix the step's RetryPolicy took the interrupt for a failure, retried the sync 30 s
later and published."""

from __future__ import annotations

import shutil
import signal

import pytest

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import make_env, wait_for
from segflow_pipeline_tests.reliability.test_crash_resume import Refresh


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_the_refresh_without_retry_or_publish(signum, reference, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    with EmulatorServer({reference.key: reference.account}, latency_s=0.05) as server:
        env = make_env(tmp_path, server.url, reference.key)
        # The last good refresh: the reference run's published and working files (same account, same key).
        shutil.copytree(reference.published.parent, env.published.parent,
                        ignore=shutil.ignore_patterns("*.lock", "reports"))
        before = env.published.read_bytes()
        run = Refresh(env, dagster_home)
        syncing = wait_for(lambda: run.proc.poll() is not None or (
            ("STEP_START", "stripe_sync") in run.step_events() and server.stats()["requests"] >= 20), 180)
        assert syncing and run.proc.poll() is None, "the refresh ended before it could be interrupted"
        run.proc.send_signal(signum)
        code = run.proc.wait(timeout=180)
        events = run.step_events()
    err = run.stderr.read_text()
    assert code == 128 + signum, err[-3000:]
    assert ("STEP_UP_FOR_RETRY", "stripe_sync") not in events and ("STEP_RESTARTED", "stripe_sync") not in events
    assert ("STEP_FAILURE", "stripe_sync") in events
    assert not [step for kind, step in events if kind == "STEP_START" and step != "stripe_sync"], events
    assert env.published.read_bytes() == before
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"segflow: interrupted by {signal.Signals(signum).name}") and "nothing was published" in last
