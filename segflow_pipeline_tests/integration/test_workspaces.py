"""Workspaces end to end: three sandbox accounts in three workspaces (one of them `default`) and one entry whose
workspace is refused, refreshed by `segflow refresh` (the real job, in process, over HTTP to the emulator). Each
workspace's file holds its own accounts' rows and nobody else's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segflow_pipeline_tests.support.accounts import ACME_KEY, GLOBEX_KEY
from segflow_pipeline_tests.support.paths import PROJECT

BIN = Path(sys.executable).parent
FILE = """integrations:
  - {name: acme, key_env: STRIPE_KEY_ACME, workspace: north}
  - {name: globex, key_env: STRIPE_KEY_GLOBEX, workspace: south}
  - {name: initech, key_env: STRIPE_KEY_INITECH}
  - {name: escaper, key_env: STRIPE_KEY_ACME, workspace: ../south}
"""


@pytest.fixture(scope="module")
def refreshed(emulator, tmp_path_factory):
    root = tmp_path_factory.mktemp("workspaces")
    (root / "integrations.yaml").write_text(FILE)
    env = {**os.environ, "STRIPE_API_BASE": emulator.url, "SEGFLOW_DUCKDB_PATH": str(root / "data" / "segflow.duckdb"),
           "SEGFLOW_INTEGRATIONS_FILE": str(root / "integrations.yaml"), "STRIPE_KEY_ACME": ACME_KEY,
           "STRIPE_KEY_GLOBEX": GLOBEX_KEY, "STRIPE_KEY_INITECH": ACME_KEY, "PYTHONPATH": str(PROJECT)}
    env.pop("STRIPE_API_KEY", None)
    env.pop("DAGSTER_HOME", None)
    env.pop("SEGFLOW_WORKSPACE_PATH_TEMPLATE", None)
    refresh = subprocess.run([str(BIN / "segflow"), "refresh", "--full"], env=env, cwd=root, capture_output=True,
                             text=True, timeout=600)
    return root, env, refresh


def integrations_in(path: Path) -> dict[str, set[str]]:
    """For every published table with an `integration` column: the integrations whose rows it holds."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute("select table_schema, table_name from information_schema.columns "
                             "where column_name = 'integration' order by all").fetchall()
        return {f"{s}.{t}": {r[0] for r in con.execute(f'select distinct integration from "{s}"."{t}"').fetchall()}
                for s, t in tables}
    finally:
        con.close()


def test_each_account_refreshes_and_the_refused_workspace_fails_only_its_own(refreshed):
    root, _, refresh = refreshed
    assert refresh.returncode == 1, refresh.stderr
    for name in ("acme", "globex", "initech"):
        assert f"{name}: refreshed" in refresh.stdout, refresh.stdout + refresh.stderr
    assert "escaper" in refresh.stderr
    assert f"line 5: workspace '../south' is refused" in refresh.stderr and "e.g. workspace: south" in refresh.stderr
    # nothing was written outside the data directory's own layout
    assert sorted(p.name for p in (root / "data").iterdir()) == [".segflow", "reports", "segflow.duckdb", "workspaces"]
    assert sorted(p.name for p in (root / "data" / "workspaces").iterdir()) == ["north", "south"]


def test_each_workspace_directory_holds_its_accounts_working_files_and_nobody_elses(refreshed):
    """A volume per workspace holds everything of that workspace: published file, reports, working files."""
    root, _, _ = refreshed
    data = root / "data"
    for home, name in ((data, "initech"), (data / "workspaces" / "north", "acme"),
                       (data / "workspaces" / "south", "globex")):
        assert sorted(p.name for p in (home / ".segflow").glob("*.duckdb")) == [f"{name}.duckdb",
                                                                             f"{name}.ready.duckdb"]


@pytest.mark.parametrize("where, only", [
    ("data/workspaces/north/segflow.duckdb", "acme"),
    ("data/workspaces/south/segflow.duckdb", "globex"),
    ("data/segflow.duckdb", "initech"),  # `default` publishes to SEGFLOW_DUCKDB_PATH, as before workspaces
], ids=["north", "south", "default"])
def test_a_workspace_file_holds_its_own_accounts_rows_and_nobody_elses(refreshed, where, only):
    root, _, _ = refreshed
    found = integrations_in(root / where)
    for table in ("stripe.subscriptions", "stripe.customers", "stripe.invoices", "metrics.mrr_daily",
                  "marts.kpis_monthly"):
        assert found.get(table) == {only}, (table, found.get(table))
    assert set().union(*found.values()) == {only}, found


def test_a_workspace_file_holds_every_object_of_its_account(refreshed, emulator):
    root, _, _ = refreshed
    for where, key in (("data/workspaces/north/segflow.duckdb", ACME_KEY),
                       ("data/workspaces/south/segflow.duckdb", GLOBEX_KEY)):
        counts = emulator.accounts[key].counts()
        con = duckdb.connect(str(root / where), read_only=True)
        try:
            for table in ("subscriptions", "customers", "invoices"):
                n = con.execute(f"select count(*) from stripe.{table}").fetchone()[0]
                assert n == counts[table], (where, table)
        finally:
            con.close()


def test_reports_are_published_beside_their_workspace_file(refreshed):
    root, _, _ = refreshed
    data = root / "data"
    assert sorted(p.name for p in (data / "workspaces" / "north" / "reports").iterdir()) == ["acme"]
    assert sorted(p.name for p in (data / "workspaces" / "south" / "reports").iterdir()) == ["globex"]
    assert sorted(p.name for p in (data / "reports").iterdir()) == ["initech"]


def test_runs_are_tagged_with_their_workspace(refreshed):
    root, env, _ = refreshed
    code = ("import datetime as dt, json, dagster as dg\n"
            "from segflow_pipeline.runner import load_definitions\n"
            "d = load_definitions()\n"
            "s = d.resolve_schedule_def('daily_refresh_job_schedule')\n"
            "c = dg.build_schedule_context(repository_def=d.get_repository_def(),\n"
            "    scheduled_execution_time=dt.datetime(2028, 2, 29, 6, tzinfo=dt.timezone.utc))\n"
            "print(json.dumps({r.partition_key: r.tags for r in s.evaluate_tick(c).run_requests}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    tags = json.loads(out.stdout.strip().splitlines()[-1])
    assert {k: (v["segflow/integration"], v["segflow/workspace"]) for k, v in tags.items()} == {
        "acme": ("acme", "north"), "globex": ("globex", "south"), "initech": ("initech", "default"),
        "escaper": ("escaper", "none")}


def test_refreshing_one_account_republishes_only_its_workspace_and_shows_its_file(refreshed):
    root, env, _ = refreshed
    north, south = (root / "data" / "workspaces" / w / "segflow.duckdb" for w in ("north", "south"))
    default = root / "data" / "segflow.duckdb"
    before = {p: p.stat().st_mtime_ns for p in (north, south, default)}
    elsewhere = _files_outside(root / "data", root / "data" / "workspaces" / "south")
    refresh = subprocess.run([str(BIN / "segflow"), "refresh", "--integration", "globex"], env=env, cwd=root,
                             capture_output=True, text=True, timeout=600)
    assert refresh.returncode == 0, refresh.stderr
    assert f"DuckDB file  {south.resolve()}" in refresh.stdout and "integration 'globex'" in refresh.stdout
    assert "integration 'acme'" not in refresh.stdout and "integration 'initech'" not in refresh.stdout
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after[south] > before[south]
    assert after[north] == before[north] and after[default] == before[default]
    assert set().union(*integrations_in(south).values()) == {"globex"}
    # the run wrote nothing outside its workspace's directory: a pod given only that volume could run it
    assert _files_outside(root / "data", root / "data" / "workspaces" / "south") == elsewhere


def _files_outside(top: Path, inside: Path) -> dict[str, tuple[int, int]]:
    """Every file under `top` but not under `inside`: (size, modification time)."""
    return {str(p.relative_to(top)): (p.stat().st_size, p.stat().st_mtime_ns) for p in top.rglob("*")
            if p.is_file() and not p.is_relative_to(inside)}


def _sync_state(path: Path) -> tuple:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("select last_mode, last_full_sync_at from stripe.sync_state "
                           "where integration = 'acme'").fetchone()
    finally:
        con.close()


def test_an_account_whose_working_file_is_still_beside_the_default_file_keeps_its_history(refreshed, emulator):
    """The layout before workspaces had their own directories: every working file beside the default file. The
    account's next refresh moves its working file into its workspace's directory and goes on from it (an
    incremental sync from its cursor, not a first full one)."""
    root, env, _ = refreshed
    data = root / "data"
    north_state = data / "workspaces" / "north" / ".segflow"
    full_sync_at = _sync_state(north_state / "acme.duckdb")[1]
    assert full_sync_at is not None
    for name in ("acme.duckdb", "acme.ready.duckdb"):
        (north_state / name).replace(data / ".segflow" / name)
    refresh = subprocess.run([str(BIN / "segflow"), "refresh", "--integration", "acme"], env=env, cwd=root,
                             capture_output=True, text=True, timeout=600)
    assert refresh.returncode == 0, refresh.stderr
    assert not (data / ".segflow" / "acme.duckdb").exists() and not (data / ".segflow" / "acme.ready.duckdb").exists()
    assert _sync_state(north_state / "acme.duckdb") == ("incremental", full_sync_at)
    counts = emulator.accounts[ACME_KEY].counts()
    con = duckdb.connect(str(data / "workspaces" / "north" / "segflow.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from stripe.subscriptions").fetchone()[0] == counts["subscriptions"]
    finally:
        con.close()
