"""The `segflow` and `dagster` commands as a user runs them: several accounts, one broken, partitions, check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segflow_pipeline_tests.support.accounts import ACME_KEY, GLOBEX_KEY, NOSUBS_KEY
from segflow_pipeline_tests.support.paths import PROJECT

BIN = Path(sys.executable).parent
BROKEN_KEY = "sk_test_revoked0000000000000000wxyz"


def run(args, env, cwd, timeout=300):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def accounts(emulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("accounts")
    (root / "integrations.yaml").write_text(
        "integrations:\n"
        "  - {name: acme, key_env: STRIPE_KEY_ACME}\n"
        "  - {name: globex, key_env: STRIPE_KEY_GLOBEX, options: {churn_recognition: period_end}}\n"
        "  - {name: broken, key_env: STRIPE_KEY_BROKEN}\n")
    env = {**os.environ, "STRIPE_API_BASE": emulator.url, "SEGFLOW_DUCKDB_PATH": str(root / "data" / "segflow.duckdb"),
           "SEGFLOW_INTEGRATIONS_FILE": str(root / "integrations.yaml"), "STRIPE_KEY_ACME": ACME_KEY,
           "STRIPE_KEY_GLOBEX": GLOBEX_KEY, "STRIPE_KEY_BROKEN": BROKEN_KEY, "PYTHONPATH": str(PROJECT)}
    env.pop("STRIPE_API_KEY", None)
    env.pop("DAGSTER_HOME", None)
    refresh = run([str(BIN / "segflow"), "refresh", "--full"], env, root)
    return root, env, refresh


def test_refresh_all_fails_only_the_broken_account(accounts):
    root, env, refresh = accounts
    assert refresh.returncode == 1
    assert "acme: refreshed" in refresh.stdout and "globex: refreshed" in refresh.stdout
    assert "broken" in refresh.stderr and "Stripe rejected the API key sk_test_…wxyz (401)" in refresh.stderr
    for text in (refresh.stdout, refresh.stderr):
        assert BROKEN_KEY not in text and ACME_KEY not in text


def test_accounts_have_separate_rows(accounts):
    root, _, _ = accounts
    con = duckdb.connect(str(root / "data" / "segflow.duckdb"), read_only=True)
    try:
        integrations = {r[0] for r in con.execute("select distinct integration from metrics.mrr_daily").fetchall()}
        subs = dict(con.execute("select integration, count(*) from stripe.subscriptions group by 1").fetchall())
    finally:
        con.close()
    assert integrations == {"acme", "globex"}
    assert subs["acme"] != subs["globex"] and "broken" not in subs


def test_dagster_cli_refreshes_one_partition(accounts):
    root, env, _ = accounts
    out = run([str(BIN / "dagster"), "asset", "materialize", "-m", "segflow_pipeline.definitions", "--select", "*",
               "--partition", "globex"], env, root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RUN_SUCCESS" in out.stderr + out.stdout


def test_schedule_requests_one_run_per_account(accounts):
    root, env, _ = accounts
    code = ("import datetime as dt, json, dagster as dg\n"
            "from segflow_pipeline.runner import load_definitions\n"
            "d = load_definitions()\n"
            "s = d.resolve_schedule_def('daily_refresh_job_schedule')\n"
            "ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 26, 6),\n"
            "                                repository_def=d.get_repository_def())\n"
            "print(json.dumps([[r.run_key, r.partition_key] for r in s.evaluate_tick(ctx).run_requests]))\n")
    out = run([sys.executable, "-c", code], env, root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        ["2026-11-26:acme", "acme"], ["2026-11-26:globex", "globex"], ["2026-11-26:broken", "broken"]]


def test_check_reports_mode_permissions_and_subscriptions(accounts, emulator):
    root, env, _ = accounts
    ok = run([str(BIN / "segflow"), "check", "--integration", "acme"], env, root)
    assert ok.returncode == 0, ok.stderr
    assert "sk_test_…p7dc (secret, test mode)" in ok.stdout
    assert "read subscriptions: ok" in ok.stdout and "read events: ok" in ok.stdout
    assert f"subscriptions visible: {emulator.accounts[ACME_KEY].counts()['subscriptions']}" in ok.stdout
    missing = run([str(BIN / "segflow"), "check", "--key-env", "NOSUBS"], {**env, "NOSUBS": NOSUBS_KEY}, root)
    assert missing.returncode == 2
    assert "read subscriptions: MISSING" in missing.stdout and "rak_subscription_read" in missing.stdout
    publishable = run([str(BIN / "segflow"), "check", "--key-env", "PK"], {**env, "PK": "pk_test_abcdefgh12345678"}, root)
    assert publishable.returncode == 2 and "publishable keys cannot read subscriptions" in publishable.stderr


def test_integrations_add_validates_before_saving(accounts, tmp_path):
    _, env, _ = accounts
    env = {**env, "SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "integrations.yaml"), "NEW_KEY": BROKEN_KEY}
    refused = run([str(BIN / "segflow"), "integrations", "add", "newco", "--key-env", "NEW_KEY"], env, tmp_path)
    assert refused.returncode == 2 and "Stripe rejected the API key" in refused.stderr
    assert not (tmp_path / "integrations.yaml").exists()
    env["NEW_KEY"] = GLOBEX_KEY
    saved = run([str(BIN / "segflow"), "integrations", "add", "newco", "--key-env", "NEW_KEY"], env, tmp_path)
    assert saved.returncode == 0, saved.stderr
    text = (tmp_path / "integrations.yaml").read_text()
    assert "newco" in text and "NEW_KEY" in text and GLOBEX_KEY not in text
    listed = run([str(BIN / "segflow"), "integrations", "list"], env, tmp_path)
    assert "newco\tkey_env=NEW_KEY (key set)" in listed.stdout
