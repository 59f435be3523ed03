"""The sync against the local Stripe emulator over real HTTP with the real SDK: counts, incremental = full,
faults, kill -9, other integrations, key errors. Small accounts, so the whole file runs in well under a minute."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from segflow_pipeline.raw_tables import PRIMARY_KEYS, TABLES
from segflow_pipeline.resources.raw_sync import sync_account
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.stripe_api.keys import StripeSetupError
from segflow_pipeline.warehouse import raw

emulator = pytest.importorskip("stripe_sandbox.server", reason="the Stripe emulator is not available")
from stripe_sandbox.account import build_account  # noqa: E402

KEY = "sk_test_sandbox_full"
NOSUBS = "rk_test_sandbox_nosubs"
ROOT = Path(__file__).resolve().parents[2]


def new_reader(url: str, key: str = KEY, **kwargs) -> StripeReader:
    kwargs.setdefault("max_requests_per_second", 2000)
    return StripeReader(key, api_base=url, **kwargs)


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    raw.ensure_tables(con)
    return con


def snapshot(con: duckdb.DuckDBPyConnection, integration: str = "default",
             skip: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[tuple]]:
    """Every raw table of one integration, ordered by primary key (sync bookkeeping like synced_at left out)."""
    # The emulator renders an event's data.object from the object's current state, so the same event reads
    # differently after a change (Stripe's events are immutable): compare events by id, type, time and object.
    skip = {"quarantine": ("synced_at",), "events": ("data_object", "previous_attributes"), **(skip or {})}
    result = {}
    for table, schema in TABLES.items():
        cols = [c for c in schema.names if c not in skip.get(table, ())]
        select = ", ".join(f'"{c}"' for c in cols)
        order = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
        result[table] = con.execute(f"select {select} from stripe.{table} where integration = ? order by {order}",
                                    [integration]).fetchall()
    return result


def assert_same_tables(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> None:
    for table in TABLES:
        assert len(a[table]) == len(b[table]), table
        assert a[table] == b[table], table


def assert_same_objects(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> None:
    """Same rows in every table, except that `a` may hold events `b` no longer sees (older than 30 days)."""
    assert_same_tables({**a, "events": []}, {**b, "events": []})
    assert set(b["events"]) <= set(a["events"])
    oldest = min(row[3] for row in b["events"])  # created
    assert all(row[3] < oldest for row in set(a["events"]) - set(b["events"]))


@pytest.fixture(scope="module")
def account():
    return build_account(n_subscriptions=150, seed=11)


@pytest.fixture(scope="module")
def server(account):
    with emulator.EmulatorServer({KEY: account, NOSUBS: account}, latency_s=0.0, rate_limit_per_s=None,
                                 error_rate=0.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def full_db(tmp_path_factory, server):
    """One full sync of the module's account, shared by read-only tests."""
    path = tmp_path_factory.mktemp("full") / "sync.duckdb"
    con = connect(path)
    reader = new_reader(server.url)
    report = sync_account(reader, con, integration="default", mode="auto", concurrency=16)
    yield con, report
    con.close()


def test_full_sync_reads_every_object_once(account, full_db):
    con, report = full_db
    counts = account.counts()
    assert report.mode == "full"
    stored = raw.table_counts(con, "default")
    for table in ("customers", "subscriptions", "subscription_items", "invoices", "invoice_lines", "prices",
                  "products", "coupons", "events"):
        assert stored[table] == counts[table], table
        assert report.tables[table]["rows"] == counts[table], table
    for table, schema in TABLES.items():
        keys = ", ".join(PRIMARY_KEYS[table])
        dups = con.execute(f"select count(*) from (select {keys} from stripe.{table} group by all "
                           "having count(*) > 1)").fetchone()[0]
        assert dups == 0, table
    assert stored["quarantine"] == 0 and not report.warnings
    # Canceled and incomplete_expired subscriptions are there too (status=all).
    statuses = {s for (s,) in con.execute("select distinct status from stripe.subscriptions").fetchall()}
    assert {"canceled", "active"} <= statuses
    # Prices come with their tiers (expanded) and discounts with their coupon.
    assert con.execute("select count(*) from stripe.price_tiers").fetchone()[0] > 0
    assert con.execute("select count(*) from stripe.discounts where coupon is null").fetchone()[0] == 0
    state = raw.read_state(con, "default")
    assert state.last_event_id and state.last_mode == "full"


def test_invoices_with_more_than_ten_lines_have_all_of_them(account, full_db):
    con, _ = full_db
    long_invoices = [inv for inv in account.invoices if len(inv.lines) > 10]
    assert long_invoices, "the account should hold invoices with more than 10 lines"
    for inv in long_invoices[:5]:
        stored = {r[0] for r in con.execute("select id from stripe.invoice_lines where invoice = ?",
                                            [inv.id]).fetchall()}
        assert stored == {ln.id for ln in inv.lines}


def test_sync_is_read_only(server, full_db):
    assert server.non_get_requests == 0
    assert {method for method, *_ in server.request_log} == {"GET"}


def test_full_sync_lists_in_half_open_created_windows(server, full_db):
    from urllib.parse import parse_qs, urlsplit

    lists = [urlsplit(path) for _, path, _, _ in server.request_log
             if urlsplit(path).path in ("/v1/customers", "/v1/subscriptions", "/v1/invoices", "/v1/events")]
    assert lists
    for url in lists:
        query = parse_qs(url.query)
        assert "created[gte]" in query and "created[lt]" in query, url
        assert "created[gt]" not in query and "created[lte]" not in query
        if url.path == "/v1/subscriptions":
            assert query["status"] == ["all"]


def test_incremental_after_changes_equals_a_full_sync(tmp_path):
    acct = build_account(n_subscriptions=500, seed=5)
    with emulator.EmulatorServer({KEY: acct}, latency_s=0.0, rate_limit_per_s=None, error_rate=0.0) as srv:
        inc = connect(tmp_path / "inc.duckdb")
        full_report = sync_account(new_reader(srv.url), inc, mode="full")
        ref = connect(tmp_path / "ref.duckdb")
        sync_account(new_reader(srv.url), ref, mode="full")

        changed = acct.mutate(fraction=0.02, seed=3)
        assert changed
        reader = new_reader(srv.url)
        srv.request_log.clear()
        inc_report = sync_account(reader, inc, mode="auto")
        assert inc_report.mode == "incremental"
        assert inc_report.requests < full_report.requests / 3
        # Most changes create an invoice; their subscriptions and customers come expanded in the invoices read
        # (and are compared below like everything else), so far fewer are read one by one than changed.
        reads = [path.split("?")[0] for _, path, _, _ in srv.request_log]
        direct = [r for r in reads if r.startswith(("/v1/subscriptions", "/v1/customers"))]
        assert len(direct) < len(changed), (len(changed), direct)  # without expansions: 16 for 10 changes
        for sub_id in changed:
            assert inc.execute("select count(*) from stripe.subscriptions where id = ?", [sub_id]).fetchone()[0] == 1

        # The same history (the previous full sync) plus a full sync of the changed account...
        sync_account(new_reader(srv.url), ref, mode="full")
        assert_same_tables(snapshot(inc), snapshot(ref))
        # ...and a fresh database with only a full sync of the changed account hold the same objects (the
        # incremental one also keeps events that aged past Stripe's 30 days since its first sync).
        fresh = connect(tmp_path / "fresh.duckdb")
        sync_account(new_reader(srv.url), fresh, mode="full")
        assert_same_objects(snapshot(inc), snapshot(fresh))

        again = sync_account(new_reader(srv.url), inc, mode="auto")
        assert again.mode == "incremental" and again.requests <= 5
        assert_same_tables(snapshot(inc), snapshot(ref))


def test_faults_end_in_the_same_tables_and_are_counted(tmp_path, account, full_db):
    with emulator.EmulatorServer({KEY: account}, latency_s=0.0, rate_limit_per_s=None, error_rate=0.0) as srv:
        # 5 % of answers are 500s, 3 % broken bodies (half cut short with a 200, half an HTML 502), and a limit
        # of 15 req/s the reader (allowed 2000) does not know about, so 429s come back.
        srv.set_faults(latency_s=0.0, rate_limit_per_s=15, error_rate=0.05, bad_body_rate=0.03)
        con = connect(tmp_path / "faults.duckdb")
        reader = new_reader(srv.url, backoff_base=0.02, backoff_cap=0.5, max_retries=12)
        report = sync_account(reader, con, mode="full", concurrency=16)
        assert srv.stats()["by_status"].get(500, 0) == report.retried_5xx - srv.stats()["by_status"].get(502, 0)
    assert report.retried_5xx > 0 and report.retried_429 > 0
    assert_same_tables(snapshot(con), snapshot(full_db[0]))


SYNC_SCRIPT = textwrap.dedent("""
    import sys, duckdb
    from segflow_pipeline.stripe_api.client import StripeReader
    from segflow_pipeline.resources.raw_sync import sync_account
    from segflow_pipeline.warehouse import raw
    url, path, mode = sys.argv[1:4]
    con = duckdb.connect(path)
    raw.ensure_tables(con)
    def progress(table, rows, pages, rate, eta):
        print("progress", table, rows, flush=True)
    reader = StripeReader("sk_test_sandbox_full", api_base=url, max_requests_per_second=2000)
    sync_account(reader, con, mode=mode, progress=progress, concurrency=4)
    print("done", flush=True)
""")


def run_and_kill(url: str, path: Path, mode: str, after_lines: int) -> bool:
    """Start a sync in a subprocess and SIGKILL it after `after_lines` progress lines; True if it was killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, url, str(path), mode], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    seen = 0
    try:
        for line in proc.stdout:
            if line.startswith("done"):
                break
            seen += 1
            if seen >= after_lines:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=30)
    return proc.returncode == -signal.SIGKILL


def test_kill_9_mid_sync_then_rerun_equals_an_uninterrupted_sync(tmp_path, account, full_db):
    expected = snapshot(full_db[0])
    with emulator.EmulatorServer({KEY: account}, latency_s=0.01, rate_limit_per_s=None, error_rate=0.0) as srv:
        path = tmp_path / "killed.duckdb"
        # Killed during a first full sync: nothing published, the re-run publishes everything once.
        assert run_and_kill(srv.url, path, "full", after_lines=3)
        con = connect(path)
        assert raw.read_state(con, "default") is None
        assert raw.table_counts(con, "default")["subscriptions"] == 0
        sync_account(new_reader(srv.url), con, mode="auto")
        assert_same_tables(snapshot(con), expected)
        con.close()
        # Killed at later points of further syncs (listing, children, the final progress lines just before the
        # swap): the tables are the last published ones, and a re-run ends equal to an uninterrupted sync.
        for after_lines, mode in ((6, "full"), (10, "full"), (15, "full"), (1, "incremental")):
            killed = run_and_kill(srv.url, path, mode, after_lines=after_lines)
            con = connect(path)
            assert raw.read_state(con, "default") is not None
            assert_same_tables(snapshot(con), expected)
            if killed:
                sync_account(new_reader(srv.url), con, mode="auto")
                assert_same_tables(snapshot(con), expected)
            con.close()


def test_other_integrations_rows_are_untouched(tmp_path, server, full_db):
    con = connect(tmp_path / "two.duckdb")
    sync_account(new_reader(server.url), con, integration="acme", mode="full")
    acme = snapshot(con, "acme")
    sync_account(new_reader(server.url), con, integration="default", mode="full")
    sync_account(new_reader(server.url), con, integration="default", mode="full")
    sync_account(new_reader(server.url), con, integration="default", mode="incremental")
    assert snapshot(con, "acme") == acme
    assert_same_tables(snapshot(con, "default"), snapshot(full_db[0]))


def test_missing_permission_fails_naming_it(tmp_path, server):
    con = connect(tmp_path / "nosubs.duckdb")
    with pytest.raises(StripeSetupError, match="rak_subscription_read"):
        sync_account(new_reader(server.url, NOSUBS), con, mode="full")
    assert raw.read_state(con, "default") is None


def test_invalid_key_propagates_setup_error(tmp_path, server):
    con = connect(tmp_path / "badkey.duckdb")
    with pytest.raises(StripeSetupError, match="invalid, expired or was revoked"):
        sync_account(new_reader(server.url, "sk_test_not_a_sandbox_key"), con, mode="full")


def test_switching_keys_makes_the_next_auto_sync_full(tmp_path, account, full_db):
    empty = build_account(n_subscriptions=0, seed=8, now=account.now, livemode=True)
    live = "sk_live_sandbox_empty"
    with emulator.EmulatorServer({KEY: account, live: empty}, latency_s=0.0, rate_limit_per_s=None,
                                 error_rate=0.0) as srv:
        con = connect(tmp_path / "switch.duckdb")
        first = sync_account(new_reader(srv.url, live), con, mode="auto")
        assert first.mode == "full" and any("sees no subscriptions" in w for w in first.warnings)
        second = sync_account(new_reader(srv.url, KEY), con, mode="auto")  # the user fixed the key
        assert second.mode == "full"
        assert_same_tables(snapshot(con), snapshot(full_db[0]))
        assert sync_account(new_reader(srv.url, KEY), con, mode="auto").mode == "incremental"
