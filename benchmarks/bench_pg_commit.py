"""What one event-log write waits for on the instance's PostgreSQL, with and without synchronous_commit.
Prints figures, asserts none.

    python benchmarks/bench_pg_commit.py [--rows 300]

A Dagster run stores each of its events (step starts, materializations, check results, logs: about 390 for one
account's refresh) in a transaction of its own; this times that pattern, one small insert and its commit, on a
throwaway server from deploy/postgres.sh, with the server's default (the commit waits for the WAL flush to disk) and
with `synchronous_commit = off`, the setting deploy/dagster.yaml gives the instance's connections.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segflow_pipeline_tests.deploy import harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    reason = harness.postgres_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with harness.postgres_server() as pg:
        con = harness.connect(pg)
        try:
            with con.cursor() as cur:
                cur.execute("create table event_logs (id serial primary key, event text)")
                con.commit()
                for setting in ("on", "off"):
                    cur.execute("select set_config('synchronous_commit', %s, false)", (setting,))
                    con.commit()
                    start = time.perf_counter()
                    for _ in range(args.rows):
                        cur.execute("insert into event_logs (event) values (%s)", ("x" * 800,))
                        con.commit()
                    per = (time.perf_counter() - start) / args.rows
                    print(f"synchronous_commit={setting}: {per * 1000:5.1f} ms per insert and commit "
                          f"({args.rows} rows; x 390 events = {per * 390:.1f} s per run)", flush=True)
        finally:
            con.close()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
