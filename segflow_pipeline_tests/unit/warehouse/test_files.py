"""Publishing: per-integration working files, union, atomic swap under open readers."""

import threading
import time

import duckdb
import pytest

from segflow_pipeline.warehouse import files


def _write(published, integration, value):
    with files.integration_connection(published, integration) as con:
        con.execute("create schema if not exists metrics")
        con.execute("create or replace table metrics.t as select ? as integration, ?::integer as v",
                    [integration, value])


def test_publish_unions_integrations_and_skips_other_schemas(tmp_path):
    published = tmp_path / "segflow.duckdb"
    _write(published, "a", 1)
    _write(published, "b", 2)
    with files.integration_connection(published, "a") as con:
        con.execute("create table main.scratch as select 1 as x")
    publication = files.publish(published, ["a", "b"])
    assert publication.counts == {"metrics.t": 2}
    assert [(c.integration, c.state) for c in publication.accounts.values()] == [("a", "current"), ("b", "current")]
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, v from metrics.t order by 1").fetchall() == [("a", 1), ("b", 2)]
    assert con.execute("select count(*) from information_schema.tables where table_name='scratch'").fetchone()[0] == 0
    con.close()


def test_open_reader_keeps_its_snapshot_and_never_blocks_publish(tmp_path):
    published = tmp_path / "segflow.duckdb"
    _write(published, "a", 1)
    files.publish(published, ["a"])
    reader = duckdb.connect(str(published), read_only=True)
    _write(published, "a", 2)
    files.publish(published, ["a"])  # must not wait for or fail on the open reader
    assert reader.execute("select v from metrics.t").fetchone()[0] == 1  # old snapshot, consistent
    reader.close()
    fresh = duckdb.connect(str(published), read_only=True)
    assert fresh.execute("select v from metrics.t").fetchone()[0] == 2  # new data on reconnect
    fresh.close()
    assert not list(tmp_path.glob(".segflow.duckdb.tmp-*"))


def test_second_writer_of_one_integration_waits_then_says_busy(tmp_path):
    published = tmp_path / "segflow.duckdb"
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with files.integration_connection(published, "a"):
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(5)
    try:
        with pytest.raises(files.WarehouseBusy, match="another refresh is writing it"):
            with files.integration_connection(published, "a", timeout_s=0.3):
                pass
        with files.integration_connection(published, "b", timeout_s=0.3):
            pass  # another account is not blocked
    finally:
        release.set()
        thread.join()


def _limit_mib(con):
    # DuckDB shows the limit rounded to one decimal in its own units ("488.2 MiB" for 512MB, "1.8 GiB" for 2GB).
    value, unit = con.execute("select current_setting('memory_limit')").fetchone()[0].split()
    return float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def test_working_connections_run_under_a_memory_limit(tmp_path):
    published = tmp_path / "segflow.duckdb"
    with files.integration_connection(published, "a") as con:
        assert _limit_mib(con) == pytest.approx(512e6 / 2**20, rel=0.01)
    with files.integration_connection(published, "a", memory_limit="2GB") as con:
        assert _limit_mib(con) == pytest.approx(2e9 / 2**20, rel=0.05)
    with pytest.raises(ValueError, match=files.MEMORY_LIMIT_ENV):
        with files.integration_connection(published, "a", memory_limit="lots"):
            pass


def test_a_memory_limit_with_a_quote_is_refused_not_run_as_sql(tmp_path):
    # The limit is a bound parameter: text that would close the quote of an f-string is refused by DuckDB as a
    # value, and nothing after it runs.
    published = tmp_path / "segflow.duckdb"
    with pytest.raises(ValueError, match="is not a DuckDB memory limit"):
        with files.integration_connection(published, "a", memory_limit="1GB'; create table pwned(x int); --"):
            pass
    with files.integration_connection(published, "a") as con:
        assert con.execute("select count(*) from duckdb_tables() where table_name = 'pwned'").fetchone()[0] == 0


def test_publish_never_waits_for_another_accounts_refresh(tmp_path):
    # A run of account b holds b's working file (a long sync). Publishing a's refresh must neither wait for it nor
    # read b's file mid-write: it takes b's last ready copy.
    published = tmp_path / "segflow.duckdb"
    _write(published, "a", 1)
    _write(published, "b", 10)
    files.publish(published, ["a", "b"])
    _write(published, "a", 2)
    entered, release = threading.Event(), threading.Event()

    def hold_b():
        with files.integration_connection(published, "b") as con:
            con.execute("update metrics.t set v = 11")  # uncommitted-looking work in progress
            entered.set()
            release.wait(120)

    thread = threading.Thread(target=hold_b)
    thread.start()
    entered.wait(5)
    try:
        files.publish(published, ["a", "b"], timeout_s=1)
        # publish returned while b's working file was still held: it did not wait for b's run to end
        assert thread.is_alive() and not release.is_set()
    finally:
        release.set()
        thread.join()
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, v from metrics.t order by 1").fetchall() == [("a", 2), ("b", 10)]
    con.close()
    files.publish(published, ["a", "b"])  # b's own publish, once its run is done
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, v from metrics.t order by 1").fetchall() == [("a", 2), ("b", 11)]
    con.close()


def test_first_run_of_a_new_account_during_a_publish_is_not_attached(tmp_path):
    # The race of a working file created between "does it exist" and "attach": publish reads ready copies only.
    published = tmp_path / "segflow.duckdb"
    _write(published, "a", 1)
    entered, release = threading.Event(), threading.Event()

    def first_run_of_c():
        with files.integration_connection(published, "c") as con:
            con.execute("create schema metrics")
            con.execute("create table metrics.t as select 'c' as integration, 5::integer as v")
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=first_run_of_c)
    thread.start()
    entered.wait(5)
    try:
        publication = files.publish(published, ["a", "c"], timeout_s=1)
        assert publication.counts == {"metrics.t": 1}
        assert publication.accounts["c"].state == "never"
    finally:
        release.set()
        thread.join()


def _report(folder, text):
    folder.mkdir(parents=True)
    (folder / "mrr.html").write_text(text)


def test_reports_are_published_only_by_the_run_that_wrote_them(tmp_path):
    published = tmp_path / "data" / "segflow.duckdb"
    _report(files.pending_reports_dir(published, "acme", "run-ok"), "good")
    assert files.publish_reports(published, "run-ok") == ["acme"]
    shown = files.reports_dir(published, "acme") / "mrr.html"
    assert shown.read_text() == "good"
    # A run that failed before publishing leaves its reports pending; another run's publish does not show them.
    _report(files.pending_reports_dir(published, "acme", "run-failed"), "from a failed run")
    _report(files.pending_reports_dir(published, "globex", "run-failed"), "from a failed run")
    assert files.publish_reports(published, "run-other") == []
    assert shown.read_text() == "good" and not files.reports_dir(published, "globex").exists()
    # The next successful run of the account replaces the report and drops what the failed run left.
    _report(files.pending_reports_dir(published, "acme", "run-next"), "newer")
    assert files.publish_reports(published, "run-next") == ["acme"]
    assert shown.read_text() == "newer"
    assert not files.pending_reports_dir(published, "acme", "run-failed").exists()
    assert [p.name for p in (published.parent / "reports").iterdir()] == ["acme"]


def _cut(path, keep: float = 0.5):
    with open(path, "r+b") as handle:
        handle.truncate(int(path.stat().st_size * keep))


def _big(published, integration, rows=200_000):
    """A working file of several DuckDB blocks, so that cutting it loses data."""
    with files.integration_connection(published, integration) as con:
        con.execute("create schema if not exists metrics")
        con.execute("create or replace table metrics.t as select ? as integration, range::integer as v, "
                    "md5(range::varchar) as filler from range(?)", [integration, rows])


def test_a_damaged_working_file_keeps_its_last_good_copy_and_the_others_publish(tmp_path):
    published = tmp_path / "segflow.duckdb"
    _big(published, "a")
    _write(published, "b", 2)
    files.publish(published, ["a", "b"])
    ready = files.ready_path(published, "a").read_bytes()
    _big(published, "a", rows=300_000)
    _cut(files.working_path(published, "a"))
    _write(published, "b", 3)
    publication = files.publish(published, ["a", "b"])
    a, b = publication.accounts["a"], publication.accounts["b"]
    assert (a.state, b.state) == ("kept", "current")
    assert "a.duckdb cannot be read (cut short" in a.reason and a.copy_time is not None
    assert files.ready_path(published, "a").read_bytes() == ready  # the last good copy was not replaced
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, count(*), max(v) from metrics.t group by 1 order by 1").fetchall() == [
        ("a", 200_000, 199_999), ("b", 1, 3)]
    con.close()


def test_an_account_without_a_usable_copy_is_left_out(tmp_path):
    published = tmp_path / "segflow.duckdb"
    _big(published, "a")
    _write(published, "b", 2)
    files.publish(published, ["a", "b"])
    for path in (files.working_path(published, "a"), files.ready_path(published, "a")):
        with open(path, "r+b") as handle:
            handle.write(b"\0" * 4096)  # the header zeroed
    publication = files.publish(published, ["a", "b"])
    a = publication.accounts["a"]
    assert a.state == "skipped" and "not a valid DuckDB database file" in a.reason and "cannot be read either" in a.reason
    assert publication.accounts["b"].state == "current"
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, v from metrics.t").fetchall() == [("b", 2)]
    con.close()


def test_a_copy_that_fails_while_it_is_read_is_left_out_and_set_aside(tmp_path):
    # A ready copy that opens, as long as its header says, with its tables and counts, but one data block
    # overwritten: only reading the rows tells (DuckDB's block checksum).
    published = tmp_path / "segflow.duckdb"
    _big(published, "a")
    _write(published, "b", 2)
    files.publish(published, ["a", "b"])
    ready = files.ready_path(published, "a")
    con = duckdb.connect(str(ready), read_only=True)
    block, size = con.execute("select max(block_id), current_setting('default_block_size') from "
                              "pragma_storage_info('metrics.t') where column_name = 'filler'").fetchone()
    con.close()
    files.working_path(published, "a").unlink()  # nothing to copy it again from
    with open(ready, "r+b") as handle:
        handle.seek(files.DUCKDB_HEADER_BYTES + block * int(size) + 1000)
        handle.write(b"\x5a" * 1000)
    assert files.refresh_ready_copy(published, "a").state == "kept"  # opens, tables and counts as they were
    publication = files.publish(published, ["a", "b"])
    a = publication.accounts["a"]
    assert a.state == "skipped" and "cannot be read" in a.reason, a
    assert list(ready.parent.glob("a.ready.duckdb.damaged-*")) and not ready.exists()
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("select integration, v from metrics.t").fetchall() == [("b", 2)]
    con.close()


def test_the_sync_moves_a_damaged_working_file_aside_and_starts_a_new_one(tmp_path):
    published = tmp_path / "segflow.duckdb"
    _big(published, "a")
    working = files.working_path(published, "a")
    _cut(working)
    damaged = working.read_bytes()
    with pytest.raises(files.DamagedFile, match="moves it aside and rebuilds it with a full sync"):
        with files.integration_connection(published, "a"):
            pass
    said: list[str] = []
    with files.integration_connection(published, "a", heal=said.append) as con:
        assert con.execute("select count(*) from duckdb_tables() where schema_name = 'metrics'").fetchone() == (0,)
    (aside,) = working.parent.glob("a.duckdb.damaged-*")
    assert aside.read_bytes() == damaged
    assert len(said) == 1 and str(aside) in said[0] and "rebuilds it with a full sync" in said[0]


def _rows(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("select integration, v from metrics.t order by 1").fetchall()
    finally:
        con.close()


def test_a_workspace_publishes_its_own_accounts_only_to_its_own_file(tmp_path):
    published = tmp_path / "segflow.duckdb"
    a_file, b_file = tmp_path / "workspaces" / "a" / "segflow.duckdb", tmp_path / "workspaces" / "b" / "segflow.duckdb"
    _write(published, "acme", 1)
    _write(published, "initech", 2)
    _write(published, "globex", 3)
    files.publish(published, ["acme", "initech"], target=a_file)
    files.publish(published, ["globex"], target=b_file)
    assert _rows(a_file) == [("acme", 1), ("initech", 2)]
    assert _rows(b_file) == [("globex", 3)]
    assert not published.exists()  # the default workspace was not published by either
    # a later publish of b leaves a's file as it was, and reads globex's copy only
    _write(published, "acme", 10)
    files.publish(published, ["globex"], target=b_file)
    assert _rows(a_file) == [("acme", 1), ("initech", 2)]
    assert files.ready_path(published, "acme").stat().st_mtime_ns < files.working_path(published, "acme").stat(
    ).st_mtime_ns  # acme's ready copy was not even refreshed by b's publish


def test_publishing_one_workspace_never_takes_another_workspaces_lock(tmp_path):
    published = tmp_path / "segflow.duckdb"
    a_file, b_file = tmp_path / "workspaces" / "a" / "segflow.duckdb", tmp_path / "workspaces" / "b" / "segflow.duckdb"
    _write(published, "acme", 1)
    _write(published, "globex", 2)
    assert files.publish_lock(a_file) != files.publish_lock(b_file) != files.publish_lock(published)
    with files.file_lock(files.publish_lock(b_file), timeout_s=0, what="b"):  # b's publish is under way
        files.publish(published, ["acme"], target=a_file, timeout_s=0)  # a's does not wait for it
        files.publish(published, ["acme"], timeout_s=0)  # nor does the default workspace's
        with pytest.raises(files.WarehouseBusy, match="publishing .*workspaces/b/segflow.duckdb is busy"):
            files.publish(published, ["globex"], target=b_file, timeout_s=0)  # b's own lock is held
    assert _rows(a_file) == [("acme", 1)] and _rows(published) == [("acme", 1)]
    assert not b_file.exists()


def test_reports_go_beside_their_workspace_file(tmp_path):
    published = tmp_path / "segflow.duckdb"
    target = tmp_path / "workspaces" / "a" / "segflow.duckdb"
    _report(files.pending_reports_dir(target, "acme", "run1"), "new")  # a run writes them beside its workspace's file
    assert files.publish_reports(published, "run1", target) == ["acme"]
    assert (files.reports_dir(target, "acme") / "mrr.html").read_text() == "new"
    assert not files.reports_dir(published, "acme").exists()


def test_a_working_file_beside_the_default_workspace_moves_to_its_own_workspace(tmp_path):
    """Before workspaces had directories of their own every working file was beside the default file: the first
    connection of an account in another workspace moves its working file, write-ahead log and ready copy over,
    with its history, and says so."""
    default = tmp_path / "segflow.duckdb"
    north = tmp_path / "workspaces" / "north" / "segflow.duckdb"
    _write(default, "a", 7)
    assert files.publish(default, ["a"]).accounts["a"].state == "current"  # a ready copy beside the default file
    said = []
    with files.integration_connection(north, "a", earlier=[default], moved=said.append) as con:
        assert con.execute("select v from metrics.t").fetchall() == [(7,)]
    assert files.working_path(north, "a").exists() and files.ready_path(north, "a").exists()
    assert not files.working_path(default, "a").exists() and not files.ready_path(default, "a").exists()
    assert len(said) == 1 and str(files.working_path(north, "a")) in said[0]
    # from then on it is there: nothing moves again, and the workspace publishes it
    with files.integration_connection(north, "a", earlier=[default], moved=said.append):
        pass
    assert len(said) == 1
    publication = files.publish(north, ["a"])
    assert publication.accounts["a"].state == "current" and publication.counts == {"metrics.t": 1}


def test_a_working_file_already_in_its_workspace_wins_over_an_older_one(tmp_path):
    default = tmp_path / "segflow.duckdb"
    north = tmp_path / "workspaces" / "north" / "segflow.duckdb"
    _write(default, "a", 1)
    _write(north, "a", 2)
    with files.integration_connection(north, "a", earlier=[default]) as con:
        assert con.execute("select v from metrics.t").fetchall() == [(2,)]
    assert files.working_path(default, "a").exists()  # not ours to remove: left as it was


def test_a_working_file_moves_across_file_systems_by_copy(tmp_path, monkeypatch):
    """A volume per workspace: rename fails with EXDEV, so the file is copied beside its new place, flushed,
    renamed into place, and only then removed from the old one."""
    import errno
    import os

    default = tmp_path / "segflow.duckdb"
    north = tmp_path / "workspaces" / "north" / "segflow.duckdb"
    _write(default, "a", 3)
    real_replace = os.replace

    def replace(src, dst):
        if str(src).startswith(str(tmp_path / ".segflow")):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with files.integration_connection(north, "a", earlier=[default]) as con:
        assert con.execute("select v from metrics.t").fetchall() == [(3,)]
    assert not files.working_path(default, "a").exists()
    assert not list(files.state_dir(north).glob(".*.tmp-*"))


def test_publishing_a_workspace_takes_along_the_working_files_its_accounts_left_beside_the_default_file(tmp_path):
    """Right after the move to one directory per workspace, the first run of a workspace publishes its other
    accounts too (their files are moved over), not only its own; a file a run is writing is left to that run."""
    default = tmp_path / "segflow.duckdb"
    north = tmp_path / "workspaces" / "north" / "segflow.duckdb"
    for name, value in (("a", 1), ("b", 2), ("c", 3)):
        _write(default, name, value)
    with files.file_lock(files.working_path(default, "c").with_suffix(".lock"), timeout_s=0, what="c"):
        publication = files.publish(north, ["a", "b", "c"], target=north, earlier=[default])
    assert {n: c.state for n, c in publication.accounts.items()} == {"a": "current", "b": "current", "c": "never"}
    assert _rows(north) == [("a", 1), ("b", 2)]
    assert files.working_path(north, "b").exists() and files.working_path(default, "c").exists()
