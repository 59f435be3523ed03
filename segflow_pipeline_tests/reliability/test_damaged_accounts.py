"""One account's damaged files stay that account's problem, and heal.

After a good refresh of three accounts, account `a`'s working file is damaged (cut in half, its header zeroed, or
held open by another process with a pending write-ahead log). A refresh of account `b` still publishes: `a` keeps
its last good copy, is named in a warning and fails its check on the published file; if even that copy is
unusable, `a` is left out and `b` and `c` are published. The next refresh of `a` moves the damaged file aside (kept,
named in the message) and rebuilds it with a full sync. Before the fix a refresh of `b` exited 1 with an IO error
on `a`'s copy, and `a`'s file never healed."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import Env, make_env, run_cli

ACCOUNTS = ("a", "b", "c")
FILE = "".join(f"  - {{name: {n}, key_env: STRIPE_KEY_{n.upper()}}}\n" for n in ACCOUNTS)


def env_for(root: Path, url: str, key: str) -> tuple[Env, dict[str, str]]:
    env = make_env(root, url, key)
    (root / "integrations.yaml").write_text("integrations:\n" + FILE)
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    values = env.process_env(SEGFLOW_INTEGRATIONS_FILE=str(root / "integrations.yaml"), DAGSTER_HOME=str(home),
                             **{f"STRIPE_KEY_{n.upper()}": key for n in ACCOUNTS})
    return env, values


def per_account(path: Path) -> dict[str, tuple[int, int]]:
    """(subscriptions, MRR rows) per account in a published file."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        subs = dict(con.execute("select integration, count(*) from stripe.subscriptions group by 1").fetchall())
        mrr = dict(con.execute("select integration, count(*) from metrics.mrr_daily group by 1").fetchall())
    finally:
        con.close()
    return {name: (subs[name], mrr.get(name, 0)) for name in subs}


def check_evaluations(home: Path) -> dict[str, list[tuple[bool, dict]]]:
    """Every evaluation of each check of the published file recorded in DAGSTER_HOME, oldest first."""
    found: dict[str, list[tuple[bool, dict]]] = {}
    for db in sorted((home / "history" / "runs").glob("*.db"), key=lambda p: p.stat().st_mtime):
        if db.name == "index.db":
            continue
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("select event from event_logs where dagster_event_type = 'ASSET_CHECK_EVALUATION' "
                               "order by id").fetchall()
        finally:
            con.close()
        for (body,) in rows:
            data = json.loads(body)["dagster_event"]["event_specific_data"]
            if data["asset_key"]["path"] == ["publish", "segflow_duckdb"]:
                metadata = {k: v.get("text", v.get("value")) for k, v in data["metadata"].items()}
                found.setdefault(data["check_name"], []).append((data["success"], metadata))
    return found


@pytest.fixture(scope="module")
def good(reference, tmp_path_factory):
    """A good refresh of the three accounts: its data folder, copied by each test."""
    root = tmp_path_factory.mktemp("three_accounts")
    with EmulatorServer({reference.key: reference.account}) as server:
        env, values = env_for(root, server.url, reference.key)
        out = run_cli(["segflow", "refresh", "--full"], values, cwd=root, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = per_account(env.published)
    assert set(counts) == set(ACCOUNTS)
    return root / "data", counts


@pytest.fixture
def server(reference):
    with EmulatorServer({reference.key: reference.account}) as srv:
        yield srv


def start_from(good, root: Path, server, reference) -> tuple[Env, dict[str, str]]:
    shutil.copytree(good[0], root / "data", ignore=shutil.ignore_patterns("*.lock", "reports"))
    return env_for(root, server.url, reference.key)


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def zero_header(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"\0" * 4096)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [truncate, zero_header], ids=["truncated", "zeroed-header"])
def test_a_damaged_working_file_stays_with_its_account_and_heals(damage, good, server, reference, tmp_path):
    env, values = start_from(good, tmp_path, server, reference)
    working = env.working_dir / "a.duckdb"
    ready_before = (env.working_dir / "a.ready.duckdb").read_bytes()
    damage(working)
    damaged = working.read_bytes()

    # Another account's refresh publishes every account; `a` from its last good copy, said so by name.
    out = run_cli(["segflow", "refresh", "--full", "--integration", "b"], values, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert per_account(env.published) == good[1]
    assert (env.working_dir / "a.ready.duckdb").read_bytes() == ready_before
    warning = [line for line in out.stderr.splitlines() if line.startswith("segflow: warning: a:")]
    assert warning and "a.duckdb" in warning[0] and "last good copy" in warning[0], out.stderr[-3000:]
    passed, metadata = check_evaluations(env.root / "dagster_home")["includes_a"][-1]
    assert not passed and "a.duckdb" in metadata["reason"], metadata

    # The account's own refresh moves the damaged file aside, keeps it, and rebuilds it with a full sync.
    out = run_cli(["segflow", "refresh", "--integration", "a"], values, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    kept = list(env.working_dir.glob("a.duckdb.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    healed = [line for line in out.stderr.splitlines() if "moved it to" in line]
    assert healed and str(kept[0]) in healed[0] and "full sync" in healed[0], out.stderr[-3000:]
    assert per_account(env.published) == good[1]
    assert check_evaluations(env.root / "dagster_home")["includes_a"][-1][0]


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("set checkpoint_threshold = '1GB'")
con.execute("create table main.outside as select 1 as x")
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_an_outside_connection_holding_a_working_file_does_not_stop_the_others(good, server, reference, tmp_path):
    env, values = start_from(good, tmp_path, server, reference)
    working = env.working_dir / "a.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(working)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert working.with_name("a.duckdb.wal").exists()
        out = run_cli(["segflow", "refresh", "--full", "--integration", "b"], values, cwd=tmp_path, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    assert per_account(env.published) == good[1]
    warning = [line for line in out.stderr.splitlines() if line.startswith("segflow: warning: a:")]
    assert warning and f"PID {holder.pid}" in warning[0], out.stderr[-3000:]


@pytest.mark.slow
def test_an_account_without_a_usable_copy_is_left_out_and_the_others_are_published(good, server, reference,
                                                                                   tmp_path):
    env, values = start_from(good, tmp_path, server, reference)
    truncate(env.working_dir / "a.duckdb")
    truncate(env.working_dir / "a.ready.duckdb")
    out = run_cli(["segflow", "refresh", "--full", "--integration", "b"], values, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert per_account(env.published) == {name: good[1][name] for name in ("b", "c")}
    warning = [line for line in out.stderr.splitlines() if line.startswith("segflow: warning: a:")]
    assert warning and "not published" in warning[0], out.stderr[-3000:]
    checks = check_evaluations(env.root / "dagster_home")
    assert not checks["includes_a"][-1][0] and checks["includes_b"][-1][0] and checks["includes_c"][-1][0]
