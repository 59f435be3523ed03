"""Runs the whole refresh job as of one instant in a worker process, for `test_clock_positions.py`.

A worker process (spawned, so nothing of the test process's state leaks in) takes a list of positions and runs them
one after another, each in a fresh folder, with SEGFLOW_AS_OF set to the position and the sandbox account built
at the same instant (served by the test process's emulator under a key of its own). It returns plain values.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Position:
    instant: str  # ISO 8601, UTC
    key: str
    root: str


@dataclass
class Outcome:
    instant: str
    success: bool
    seconds: float
    failed_checks: list[str] = field(default_factory=list)  # "asset · check: first offending rows"
    errors: list[str] = field(default_factory=list)
    last_day: str | None = None
    synced: dict[str, int] = field(default_factory=dict)


def run_positions(positions: list[Position], api_base: str) -> list[Outcome]:
    return [run_position(p, api_base) for p in positions]


def run_position(position: Position, api_base: str) -> Outcome:
    import dagster as dg
    import duckdb

    from segflow_pipeline.runner import failure_messages, load_definitions

    root = Path(position.root)
    published = root / "data" / "segflow.duckdb"
    os.environ.update({"STRIPE_API_KEY": position.key, "STRIPE_API_BASE": api_base,
                       "SEGFLOW_DUCKDB_PATH": str(published), "SEGFLOW_AS_OF": position.instant,
                       "SEGFLOW_INTEGRATIONS_FILE": str(root / "no-integrations.yaml")})
    os.environ.pop("DAGSTER_HOME", None)
    started = time.monotonic()
    job = load_definitions().resolve_job_def("daily_refresh_job")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config={"ops": {"stripe_sync": {"config": {"mode": "full"}}}},
                                        instance=instance, raise_on_error=False)
    outcome = Outcome(instant=position.instant, success=result.success, seconds=time.monotonic() - started)
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            if not data.passed:
                rows = data.metadata.get("first_failures")
                text = str(getattr(rows, "value", rows) or "")
                outcome.failed_checks.append(f"{data.asset_key.to_user_string()} · {data.check_name}: "
                                             + " / ".join(text.splitlines()[:4]))
    if not result.success:
        outcome.errors = failure_messages(result)
    if published.exists():
        con = duckdb.connect(str(published), read_only=True)
        try:
            day = con.execute("select max(date) from metrics.mrr_daily").fetchone()[0]
            outcome.last_day = day.isoformat() if day else None
            for table in ("subscriptions", "events", "invoices"):
                outcome.synced[table] = con.execute(f"select count(*) from stripe.{table}").fetchone()[0]
        finally:
            con.close()
    return outcome
