"""Shared fixtures for end-to-end tests: one emulator per session (two sandbox accounts), env pointed at it."""

import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.accounts import ACME_KEY, GLOBEX_KEY, NOSUBS_KEY


@pytest.fixture(scope="session")
def emulator():
    acme = build_account(n_subscriptions=250, seed=11)
    globex = build_account(n_subscriptions=120, seed=12, now=acme.now)
    with EmulatorServer({ACME_KEY: acme, GLOBEX_KEY: globex, NOSUBS_KEY: acme}) as server:
        yield server


@pytest.fixture
def pipeline_env(emulator, tmp_path, monkeypatch):
    """A fresh DuckDB location and the environment key of the `acme` sandbox account."""
    published = tmp_path / "data" / "segflow.duckdb"
    monkeypatch.setenv("STRIPE_API_KEY", ACME_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator.url)
    monkeypatch.setenv("SEGFLOW_DUCKDB_PATH", str(published))
    monkeypatch.setenv("SEGFLOW_INTEGRATIONS_FILE", str(tmp_path / "integrations.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return published

