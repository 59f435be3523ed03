"""Shared pieces of the reliability and security suite: one sandbox account, its fault-free reference run, and
helpers to run the pipeline (in process or as the CLI) and to read a DuckDB file's tables for comparison.

The reference run is the whole Dagster job, in process, against an emulator without faults. Every test that says
"equal to a fault-free run" compares with it: the same account object is served by each test's own emulator.
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segflow_pipeline.runner import load_definitions
from segflow_pipeline.sandbox.account import SandboxAccount, build_account
from segflow_pipeline.sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.tables import PRIMARY_KEYS, TABLES

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_SUBSCRIPTIONS = 250
SEED = 21
# Sync bookkeeping: when a row was synced says nothing about Stripe's data.
BOOKKEEPING = {"quarantine": ("synced_at",)}


def distinctive_key(prefix: str = "sk_test_") -> str:
    """A key no test reuses: the prefix and a random 24-character tail."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass
class Env:
    """Where one test's pipeline writes, and the environment that points it at an emulator."""

    root: Path
    published: Path
    values: dict[str, str]

    @property
    def working_dir(self) -> Path:
        return self.published.parent / ".segflow"

    def process_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SEGFLOW_", "DAGSTER_"))}
        return {**env, **self.values, **extra}


def make_env(root: Path, url: str, key: str) -> Env:
    published = root / "data" / "segflow.duckdb"
    return Env(root=root, published=published, values={
        "STRIPE_API_KEY": key, "STRIPE_API_BASE": url, "SEGFLOW_DUCKDB_PATH": str(published),
        "SEGFLOW_INTEGRATIONS_FILE": str(root / "no-integrations.yaml"),
    })


def apply_env(monkeypatch: pytest.MonkeyPatch, env: Env) -> None:
    for name, value in env.values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def run_job(*, full: bool = True, max_requests_per_second: float | None = None,
            instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """`daily_refresh_job` in process, as the schedule and `segflow refresh` run it."""
    run_config: dict = {"ops": {"stripe_sync": {"config": {"mode": "full" if full else "auto"}}}}
    if max_requests_per_second:
        run_config["resources"] = {"stripe": {"config": {"max_requests_per_second": max_requests_per_second}}}
    job = load_definitions().resolve_job_def("daily_refresh_job")
    return job.execute_in_process(run_config=run_config, raise_on_error=False, instance=instance)


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """Metadata values of the asset's materialization in this run, e.g. asset='stripe/subscriptions'."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key.to_user_string() == asset:
                return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:{e.asset_check_evaluation_data.check_name}":
            e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def table_rows(con: duckdb.DuckDBPyConnection, schema: str, table: str, skip: tuple[str, ...] = ()) -> list[tuple]:
    columns = [c for (c,) in con.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, table]).fetchall() if c not in skip]
    select = ", ".join(f'"{c}"' for c in columns)
    return con.execute(f'select {select} from "{schema}"."{table}" order by all').fetchall()


def published_state(path: Path) -> dict[str, list[tuple]]:
    """Every stripe.* table the sync fills (bookkeeping columns left out) and metrics.mrr_daily, rows sorted."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        state = {f"stripe.{t}": table_rows(con, "stripe", t, BOOKKEEPING.get(t, ())) for t in TABLES}
        state["metrics.mrr_daily"] = table_rows(con, "metrics", "mrr_daily")
        return state
    finally:
        con.close()


def assert_same_state(actual: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert len(actual[name]) == len(expected[name]), name
        assert actual[name] == expected[name], name


@dataclass
class Reference:
    """The fault-free run every other run is compared with."""

    account: SandboxAccount
    key: str
    state: dict[str, list[tuple]]
    published: Path


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    account = build_account(n_subscriptions=N_SUBSCRIPTIONS, seed=SEED)
    key = distinctive_key()
    root = tmp_path_factory.mktemp("reference")
    mp = pytest.MonkeyPatch()
    try:
        with EmulatorServer({key: account}) as server:
            env = make_env(root, server.url, key)
            apply_env(mp, env)
            result = run_job(max_requests_per_second=500)
            assert result.success
        state = published_state(env.published)
    finally:
        mp.undo()
    assert state["stripe.subscriptions"] and state["metrics.mrr_daily"]
    assert not state["stripe.quarantine"]
    yield Reference(account=account, key=key, state=state, published=env.published)


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """One CLI command (`segflow ...` or `dagster ...` from the project's venv), output captured as text."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(predicate, timeout: float, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
