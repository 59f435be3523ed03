"""BI readers during a refresh: a process holding the published file open never errors, never sees partial
state, never blocks the writer, and sees the new data when it reconnects."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.paths import PROJECT

KEY = "sk_test_readers_51Hx8Yz2eZvKYlo2Cqq"
READER = textwrap.dedent("""
    import json, sys, time, duckdb
    # mode "hold": one connection for the whole refresh; "poll": a new connection each time. DuckDB shares one
    # database instance per file within a process, so the two modes run in separate processes.
    path, stop_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    q = ("select (select count(*) from metrics.mrr_daily), (select sum(mrr)::varchar from metrics.mrr_daily), "
         "(select count(*) from stripe.subscriptions), (select count(*) from stripe.invoice_lines)")
    held = duckdb.connect(path, read_only=True) if mode == "hold" else None
    first = (held or duckdb.connect(path, read_only=True)).execute(q).fetchone()
    seen, errors, changed, loops = set(), [], 0, 0
    while True:
        loops += 1
        try:
            if held is not None:
                if held.execute(q).fetchone() != first:
                    changed += 1
            else:
                fresh = duckdb.connect(path, read_only=True)
                seen.add(fresh.execute(q).fetchone())
                fresh.close()
        except Exception as exc:
            errors.append(repr(exc))
        if stop_file and __import__("os").path.exists(stop_file):
            break
        time.sleep(0.02)
    print(json.dumps({"first": first, "held_changed": changed, "seen": sorted(seen), "errors": errors,
                      "loops": loops}, default=str))
""")


def test_reader_keeps_snapshot_during_refresh_and_sees_new_data_after(tmp_path):
    account = build_account(n_subscriptions=200, seed=21)
    published = tmp_path / "data" / "segflow.duckdb"
    with EmulatorServer({KEY: account}) as server:
        env = {**os.environ, "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": server.url,
               "SEGFLOW_DUCKDB_PATH": str(published), "SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "none.yaml"),
               "PYTHONPATH": str(PROJECT)}
        env.pop("DAGSTER_HOME", None)
        segflow = str(Path(sys.executable).parent / "segflow")
        first = subprocess.run([segflow, "refresh", "--full"], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]

        account.mutate(fraction=0.2, seed=3)
        stop = tmp_path / "stop"
        readers = [subprocess.Popen([sys.executable, "-c", READER, str(published), str(stop), mode],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for mode in ("hold", "poll")]
        time.sleep(0.5)
        second = subprocess.run([segflow, "refresh"], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        time.sleep(0.3)
        stop.touch()
        held, polled = (json.loads(r.communicate(timeout=60)[0].strip().splitlines()[-1]) for r in readers)
    assert second.returncode == 0, second.stderr[-2000:]
    assert held["errors"] == [] and polled["errors"] == []
    assert held["held_changed"] == 0  # the open connection kept one consistent snapshot throughout
    seen = [tuple(s) for s in polled["seen"]]
    # Reconnecting readers saw exactly two states, old and new: never a half-written one.
    assert len(seen) == 2, seen
    assert tuple(held["first"]) in seen
    assert held["loops"] > 10 and polled["loops"] > 10  # both read throughout the refresh
