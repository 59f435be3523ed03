"""Shared fixtures for end-to-end tests: one emulator per session (two sandbox accounts), env pointed at it."""

import sys
from pathlib import Path

import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer

PROJECT = Path(__file__).resolve().parents[2]
CHECK_CONTRACT = PROJECT.parent / "shared" / "tools" / "check_contract.py"
ACME_KEY = "sk_test_acme_4eC39HqLyjWDarjtT1zdp7dc"
GLOBEX_KEY = "rk_test_globex_51Hx8Yz2eZvKYlo2C9Xw"
NOSUBS_KEY = "rk_test_nosubs_51Hx8Yz2eZvKYlo2Cab"


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


def python() -> str:
    return sys.executable
