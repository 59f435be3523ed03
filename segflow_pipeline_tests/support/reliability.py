"""Shared pieces of the reliability and security suite: the sandbox account's size, the fault-free reference run's
shape (`Reference`, built by the `reference` fixture in reliability/conftest.py), helpers to run the pipeline (in
process or as the CLI) and to read a DuckDB file's tables for comparison, and a scriptable fake Stripe.
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
import duckdb
import orjson
import pytest

from segflow_pipeline.runner import load_definitions
from stripe_sandbox.account import SandboxAccount
from segflow_pipeline.raw_tables import TABLES

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


Answer = tuple[int, bytes, str]  # status, body, content type


@dataclass
class Request:
    """One GET the fake received: path, decoded query, the target as sent (path?query) and the headers."""

    path: str
    query: dict[str, str]
    target: str
    headers: dict[str, str]


class FakeStripe:
    """A scripted Stripe on 127.0.0.1 for what the emulator never does (paging that never ends, bodies that are not
    Stripe's, a proxy echoing the key): `answer(fake, request)` returns (status, body, content type) for each
    GET. With `upstream` (an emulator's URL), `forward(...)` passes a request on and returns its answer, so a
    test can serve a real account and change only what it is about. Every request is kept in `requests`."""

    def __init__(self, answer: Callable[["FakeStripe", Request], Answer],
                 upstream: str | None = None) -> None:
        self.answer = answer
        self.upstream = upstream
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                request = Request(parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), self.path,
                                  dict(self.headers))
                with fake.lock:
                    fake.requests.append(request)
                try:
                    status, body, ctype = fake.answer(fake, request)
                except Exception as exc:  # noqa: BLE001 - a bug in a test's script answers 500, visibly
                    status, body, ctype = 500, f"fake stripe: {type(exc).__name__}: {exc}".encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = do_GET

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeStripe":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def forward(self, request: Request) -> Answer:
        """The upstream emulator's answer to the same GET."""
        assert self.upstream is not None
        outgoing = urllib.request.Request(self.upstream + request.target, headers={
            k: v for k, v in request.headers.items() if k.lower() in ("authorization", "stripe-version")})
        try:
            with urllib.request.urlopen(outgoing, timeout=60) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")


def json_answer(body: object, status: int = 200) -> Answer:
    return status, orjson.dumps(body), "application/json"


def empty_list(path: str) -> Answer:
    return json_answer({"object": "list", "url": path, "data": [], "has_more": False})


def step_events(result: dg.ExecuteInProcessResult, event_type: str) -> list:
    """The run's events of one type (e.g. 'STEP_UP_FOR_RETRY', 'STEP_FAILURE')."""
    return [e for e in result.all_events if e.event_type_value == event_type]
