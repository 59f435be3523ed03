"""`segflow demo --sandbox-now` and `segflow refresh` as a new user runs them: the headline after a good run, one
summary a person can act on after a bad one, runs kept where `segflow ui` shows them."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.paths import PROJECT

BIN = Path(sys.executable).parent
SANDBOX_KEY = "sk_test_sandbox_full"
INSTANT = "2025-03-01T00:00:05Z"  # just after UTC midnight on the day after a non-leap February ends
SUBSCRIPTIONS = 60


def user_env(**extra: str) -> dict[str, str]:
    """A shell with nothing of ours set: no key, no paths, no DAGSTER_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SEGFLOW_", "DAGSTER_"))}
    return {**env, "PYTHONPATH": str(PROJECT), **extra}


def segflow(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "segflow"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = segflow(["demo", "--subscriptions", str(SUBSCRIPTIONS), "--sandbox-now", INSTANT], root, user_env())
    return root, out


def test_demo_at_an_instant_succeeds_and_ends_with_the_headline(demo):
    root, out = demo
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    published = root / "data" / "segflow.duckdb"
    con = duckdb.connect(str(published), read_only=True)
    try:
        today = con.execute("select max(date) from metrics.mrr_daily").fetchone()[0]
        rows = con.execute(
            "select t.currency, t.mrr, coalesce(b.mrr, 0), t.paying_customers from metrics.mrr_daily t "
            "left join metrics.mrr_daily b on b.currency = t.currency and b.date = t.date - 30 "
            "where t.date = ? order by 1", [today]).fetchall()
    finally:
        con.close()
    assert today == dt.date(2025, 3, 1)  # the pipeline ran as of the sandbox's instant, not the real clock
    assert {r[0] for r in rows} == {"eur", "jpy", "usd"}
    headline = out.stdout[out.stdout.index("MRR today"):]
    assert "MRR today (2025-03-01, end of day UTC)" in headline and "vs 30 days ago (2025-01-30)" in headline
    for currency, mrr, before, customers in rows:
        line = re.search(rf"^  {currency.upper()} +([\d,.]+) +([+-][\d,.]+) \((new|[+-][\d,.]+ %)\) +([\d,]+)$",
                         headline, re.M)
        assert line, (currency, headline)
        shown_mrr, shown_change, shown_pct, shown_customers = line.groups()
        assert Decimal(shown_mrr.replace(",", "")) == mrr
        assert Decimal(shown_change.replace(",", "")) == mrr - before
        if before == 0:
            assert shown_pct == "new"
        else:
            assert abs(Decimal(shown_pct[:-2].replace(",", "")) - (mrr - before) * 100 / before) <= Decimal("0.05")
        assert int(shown_customers.replace(",", "")) == customers
    assert f"DuckDB file  {published}" in headline
    assert f"Charts       {root / 'data' / 'reports' / 'default' / 'mrr.html'}" in headline
    assert "make ui" in headline and str(root / ".dagster_home") in headline and "docs/mrr.md" in headline
    assert (root / "data" / "reports" / "default" / "mrr.png").exists()


def test_demo_runs_are_kept_for_the_ui(demo):
    root, out = demo
    assert out.returncode == 0
    home = root / ".dagster_home"
    assert (home / "dagster.yaml").read_text() == (PROJECT / "deploy" / "dagster.dev.yaml").read_text()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["daily_refresh_job"] and runs[0].is_success
        mrr = instance.get_latest_materialization_event(dg.AssetKey(["metrics", "mrr_daily"]))
        assert mrr is not None and mrr.run_id == runs[0].run_id
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["metrics", "mrr_daily"]), "movements_reconcile")])
        assert list(checks.values())[0].status.value == "SUCCEEDED"
    finally:
        instance.dispose()
    assert '"fixed": true' in (root / "data" / ".segflow" / "sandbox.json").read_text()


def test_a_failing_check_ends_in_one_summary_and_changes_nothing_published(demo):
    """The demo's working file corrupted (one quantity = 10^15), then `segflow refresh` against the same account."""
    root, out = demo
    assert out.returncode == 0
    published = root / "data" / "segflow.duckdb"
    report = root / "data" / "reports" / "default" / "mrr.html"
    before = published.read_bytes(), report.read_bytes()
    con = duckdb.connect(str(root / "data" / ".segflow" / "default.duckdb"))
    try:
        item = con.execute(
            "select i.id from stripe.subscription_items i join stripe.subscriptions s on s.id = i.subscription "
            "where s.status = 'active' and i.quantity = 1 order by i.id limit 1").fetchone()[0]
        con.execute("update stripe.subscription_items set quantity = 1000000000000000 where id = ?", [item])
    finally:
        con.close()
    moment = int(dt.datetime.fromisoformat(INSTANT).timestamp())
    account = build_account(n_subscriptions=SUBSCRIPTIONS, seed=7, now=moment)
    with EmulatorServer({SANDBOX_KEY: account}) as server:
        failed = segflow(["refresh"], root, user_env(STRIPE_API_KEY=SANDBOX_KEY, STRIPE_API_BASE=server.url,
                                                     SEGFLOW_AS_OF=INSTANT))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    text = failed.stdout + failed.stderr
    summary = failed.stderr[failed.stderr.index("segflow: the refresh of 'default' FAILED"):]
    # Each failed check once, with what it means, a few offending rows and what to do.
    blocks = {b.splitlines()[0]: b for b in summary.split("\n  Failed check: ")[1:]}
    # mrr_by_product reads the quantity too; the live check values today from the current objects, which the
    # series cannot hold
    assert set(blocks) == {"metrics/mrr_daily · matches_schema", "metrics/mrr_daily · matches_live_subscriptions",
                           "marts/mrr_by_product · not_null", "marts/mrr_by_product · mrr_not_negative"}
    assert text.count("Failed check: metrics/mrr_daily · matches_schema") == 1
    mrr = blocks["metrics/mrr_daily · matches_schema"]
    assert "amounts that fit the contract's DECIMAL(18,2)" in " ".join(mrr.split())  # the check's description
    rows = re.findall(r"^      - .*$", mrr, re.M)
    # 4 cells of metrics.mrr_daily, then the subscription's own row of today's metrics.mrr_snapshots (its mrr null)
    assert len(rows) == 3 and "5 row(s) break it; the first 3:" in mrr
    assert all(re.search(r"currency=usd, date=2025-\d\d-\d\d, .*check=not_nullable", r) for r in rows), rows
    assert "What to do: Look the rows' subscriptions" in mrr
    product = blocks["marts/mrr_by_product · not_null"]
    product = " ".join(product.split())
    assert re.search(r"quantity=10000000000000\d\d\b", product)  # the corrupted item (plus any others of that price)
    assert "dbt_like_sql/marts/mrr_by_product.sql" in product
    # where to look: the tables the model reads, among them the item prices, where the corrupted quantity shows
    assert "marts.subscription_item_mrr" in product and "stripe.prices" in product
    assert "the published file keeps its previous data" in summary and "make ui" in summary
    # No stack trace for a check that failed on purpose; the live log says where the details are.
    assert "Stack Trace" not in text and "Traceback" not in text and 'File "' not in text
    assert "mrr_daily                          error: failed (details at the end)" in failed.stderr
    assert "MRR today" not in failed.stdout
    # Nothing a reader sees changed: the published file and its report are the demo's, byte for byte.
    assert (published.read_bytes(), report.read_bytes()) == before


def test_sandbox_serve_builds_the_account_at_the_given_instant(tmp_path):
    port = _free_port()
    server = subprocess.Popen([str(BIN / "segflow"), "sandbox", "serve", "--port", str(port), "--subscriptions", "40",
                               "--now", "2028-02-29T00:00:05Z"], cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline()
        assert f"serving at http://127.0.0.1:{port}" in first and "as of 2028-02-29T00:00:05Z" in first, first
        import stripe

        client = stripe.StripeClient(SANDBOX_KEY, base_addresses={"api": f"http://127.0.0.1:{port}"})
        newest = max(s.created for s in client.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter())
        assert newest <= int(dt.datetime(2028, 2, 29, 0, 0, 5, tzinfo=dt.timezone.utc).timestamp())
        assert newest > int(dt.datetime(2027, 12, 1, tzinfo=dt.timezone.utc).timestamp())
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
