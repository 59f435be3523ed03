"""raw.swap_full on every table: other integrations untouched, one row per key, deleted objects flagged, old events
kept, table layouts unchanged, staging emptied, atomic on failure, long text (copied without DICT_FSST) intact."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from segflow_pipeline.raw_tables import PRIMARY_KEYS, TABLES, fetch_tag
from segflow_pipeline.warehouse import files, raw
from segflow_pipeline.warehouse.raw import ConflictingVersions

T0 = dt.datetime(2026, 1, 1)
LONG = 6000  # above DuckDB's zstd_min_string_length (4096)


@pytest.fixture(params=["memory", "file"])
def con(request, tmp_path):
    c = duckdb.connect() if request.param == "memory" else files.connect(tmp_path / "acme.duckdb")
    raw.ensure_tables(c)
    yield c
    c.close()


def state(integration: str, event_id: str) -> raw.SyncState:
    return raw.SyncState(integration, event_id, T0, T0, T0, "full", "sk_test_…abcd")


def rows(table: str, integration: str, keys: list[str], raw_size: int = 40, tag: str = "") -> pa.Table:
    """Rows of `table` keyed by `keys` (every primary-key column derives from the key), other columns null."""
    schema = TABLES[table]
    columns: dict[str, list] = {}
    for f in schema:
        if f.name == "integration":
            values = [integration] * len(keys)
        elif f.name in PRIMARY_KEYS[table]:
            values = [i for i, _ in enumerate(keys)] if pa.types.is_integer(f.type) else [f"{k}" for k in keys]
        elif f.name == "raw":
            values = [(f'{{"id":"{k}","tag":"{tag}"}}' + "x" * raw_size)[:raw_size] for k in keys]
        elif f.name == "deleted":
            values = [False] * len(keys)
        else:
            values = [None] * len(keys)
        columns[f.name] = values
    return pa.table(columns, schema=schema)


def stage(con, integration: str, keys: list[str], **kwargs) -> None:
    raw.begin_staging(con)
    for table in TABLES:
        raw.append_staging(con, table, rows(table, integration, keys, **kwargs))


def key_values(con, table: str, integration: str) -> list:
    key = next(c for c in PRIMARY_KEYS[table] if c != "integration")
    return [r[0] for r in con.execute(f'select "{key}" from stripe.{table} where integration = ? order by 1',
                                      [integration]).fetchall()]


def everything(con, where: str, integration: str) -> dict[str, list]:
    """Rows of every table of `stripe` (where="stripe") or of the open full sync's staging (where="staged", without
    the sync's own `_fetched` column)."""
    name = raw.staged if where == "staged" else (lambda t: f"{raw.SCHEMA}.{t}")
    columns = f'* exclude ("{raw.FETCHED}")' if where == "staged" else "*"
    return {t: con.execute(f"select {columns} from {name(t)} where integration = ? order by all",
                           [integration]).fetchall()
            for t in TABLES}


def fetched(table: pa.Table, started: int | None, arrived: int | None) -> pa.Table:
    """`table` as the sync stages it: tagged with when its page was fetched (None: not known)."""
    tag = None if started is None else fetch_tag(started, arrived)
    return table.append_column(raw.FETCHED, pa.repeat(pa.scalar(tag, pa.int64()), table.num_rows))


def layouts(con) -> dict:
    return {table: con.execute(f"describe {raw.SCHEMA}.{table}").fetchall() for table in (*TABLES, "sync_state")}


def tables_of(con, schema: str) -> set[str]:
    return {r[0] for r in con.execute("select table_name from duckdb_tables() where schema_name = ?",
                                      [schema]).fetchall()}


def test_second_swap_replaces_only_this_integration_flags_deleted_keeps_old_events(con):
    stage(con, "other", ["o1", "o2"])
    raw.swap_full(con, "other", state("other", "evt_o"))
    stage(con, "acme", ["a1", "a2"], tag="first")
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    other_before = everything(con, raw.SCHEMA, "other")
    # A full sync killed after staging left its staging tables: never published, dropped by the next sync.
    stage(con, "ghost", ["g1"])

    stage(con, "acme", ["a2", "a3"], tag="second")
    raw.swap_full(con, "acme", state("acme", "evt_2"))

    assert everything(con, raw.SCHEMA, "other") == other_before
    for table in TABLES:
        kept = ["a1", "a2", "a3"] if table in (*raw.DELETABLE, "events") else ["a2", "a3"]
        if table == "price_tiers":  # keyed by (price, tier_index): one tier per price here
            kept = ["a2", "a3"]
        assert key_values(con, table, "acme") == kept, table
        assert key_values(con, table, "ghost") == [], table
    for table in raw.DELETABLE:
        flagged = con.execute(f"select id from stripe.{table} where integration = 'acme' and deleted "
                              "order by 1").fetchall()
        assert flagged == [("a1",)], table
    # The re-listed object carries the second sync's row, the one Stripe stopped listing keeps its last row.
    assert con.execute("select raw like '%second%' from stripe.invoices where id = 'a2'").fetchone() == (True,)
    assert con.execute("select raw like '%first%' from stripe.customers where id = 'a1'").fetchone() == (True,)
    assert raw.read_state(con, "acme").last_event_id == "evt_2"
    assert raw.read_state(con, "other").last_event_id == "evt_o"
    assert tables_of(con, raw.SCHEMA) == {*TABLES, "sync_state"}  # no staging table outlives its sync


def test_identical_staged_copies_are_published_once_per_key(con):
    raw.begin_staging(con)
    for table in TABLES:
        raw.append_staging(con, table, [fetched(rows(table, "acme", ["k1", "k2"], tag="a"), 1, 2),
                                        fetched(rows(table, "acme", ["k1"], tag="a"), 3, 4)])
    found = raw.swap_full(con, "acme", state("acme", "evt_1"))
    for table in TABLES:
        counts = con.execute(f"select count(*) from stripe.{table} where integration = 'acme'").fetchone()[0]
        # quarantine keeps every row (a bad object may fail twice, and rows without an object id are all kept)
        assert counts == (3 if table == "quarantine" else 2), table
    assert found.dropped == {t: 1 for t in TABLES if t != "quarantine"} and found.resolved == {}
    assert tables_of(con, raw.SCHEMA) == {*TABLES, "sync_state"}


@pytest.mark.parametrize("first, second, winner", [
    pytest.param((1, 2), (3, 4), "b", id="second-fetched-after-the-first-answer"),
    pytest.param((3, 4), (1, 2), "a", id="first-fetched-after-the-second-answer"),
    pytest.param((1, 4), (2, 3), None, id="requests-at-the-same-time"),
    pytest.param((None, None), (3, 4), None, id="fetch-time-unknown"),
])
def test_differing_staged_versions_keep_the_one_fetched_later_or_fail(con, first, second, winner):
    raw.begin_staging(con)
    raw.append_staging(con, "invoices", [fetched(rows("invoices", "acme", ["k1", "k2"], tag="a"), *first),
                                         fetched(rows("invoices", "acme", ["k1"], tag="b"), *second)])
    if winner is None:
        with pytest.raises(ConflictingVersions, match="invoices k1 twice with different contents"):
            raw.swap_full(con, "acme", state("acme", "evt_1"))
        assert key_values(con, "invoices", "acme") == []  # nothing of the sync was written
        return
    found = raw.swap_full(con, "acme", state("acme", "evt_1"))
    assert found.resolved == {"invoices": 1} and found.examples == ["invoices k1"]
    assert con.execute("select raw like ? from stripe.invoices where id = 'k1'",
                       [f'%"tag":"{winner}"%']).fetchall() == [(True,)]


def test_the_later_created_version_wins_and_its_children_go_with_it(con):
    def subscription(tag: str, created: int, quantity: int, started: int) -> list[pa.Table]:
        sub = rows("subscriptions", "acme", ["sub_1"], tag=tag).set_column(
            TABLES["subscriptions"].names.index("created"), "created",
            pa.array([T0 + dt.timedelta(seconds=created)], pa.timestamp("us")))
        item = pa.table({"integration": ["acme"], "id": ["si_1"], "subscription": ["sub_1"],
                         "quantity": [quantity]}).cast(pa.schema([TABLES["subscription_items"].field(n) for n in
                                                                  ("integration", "id", "subscription", "quantity")]))
        return [fetched(sub, started, started + 2), fetched(item, started, started + 2)]

    raw.begin_staging(con)
    # The newer version (created one second later) arrives first, in requests running at the same time.
    newer, older = subscription("new", 1, 7, 1), subscription("old", 0, 1, 2)
    for table, parts in (("subscriptions", [newer[0], older[0]]), ("subscription_items", [newer[1], older[1]])):
        raw.append_staging(con, table, parts)
    found = raw.swap_full(con, "acme", state("acme", "evt_1"))
    assert found.resolved == {"subscriptions": 1}  # the items went with their subscription, no conflict
    assert con.execute("select raw like '%\"tag\":\"new\"%' from stripe.subscriptions").fetchall() == [(True,)]
    assert con.execute("select quantity from stripe.subscription_items").fetchall() == [(7,)]


def test_table_layouts_stay_as_ensure_tables_makes_them(con):
    before = layouts(con)
    for sync, keys in enumerate((["a1", "a2"], ["a2"], ["a3"])):
        stage(con, "acme", keys, raw_size=LONG if sync % 2 else 40)
        raw.swap_full(con, "acme", state("acme", f"evt_{sync}"))
        assert layouts(con) == before
    for table, schema in TABLES.items():
        described = con.execute(f"describe stripe.{table}").fetchall()
        assert [(r[0], r[1]) for r in described] == [(f.name, raw.duckdb_type(f.type)) for f in schema]
    tables = {r[0] for r in con.execute("select table_name from duckdb_tables() where schema_name = 'stripe'")
              .fetchall()}
    assert tables == {*TABLES, "sync_state"}


def test_long_text_is_published_intact_and_settings_come_back(con):
    con.execute("set disabled_compression_methods = 'rle'")
    stage(con, "acme", [f"in_{i}" for i in range(300)], raw_size=LONG, tag="long")
    raw.append_staging(con, "customers", rows("customers", "acme", ["cus_short"], raw_size=100))
    staged = everything(con, "staged", "acme")
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    assert everything(con, raw.SCHEMA, "acme") == staged
    assert con.execute("select current_setting('disabled_compression_methods')").fetchone()[0].lower() == "rle"
    con.execute("checkpoint")
    assert everything(con, raw.SCHEMA, "acme") == staged


def test_a_failed_swap_changes_nothing(con, monkeypatch):
    stage(con, "acme", ["a1"], raw_size=LONG)
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    published = everything(con, raw.SCHEMA, "acme")
    stage(con, "acme", ["a2"], raw_size=LONG)
    setting = con.execute("select current_setting('disabled_compression_methods')").fetchone()[0]

    def fail(*_args):
        raise RuntimeError("killed")

    monkeypatch.setattr(raw, "_write_state", fail)
    with pytest.raises(RuntimeError):
        raw.swap_full(con, "acme", state("acme", "evt_2"))
    assert everything(con, raw.SCHEMA, "acme") == published
    raw.ensure_tables(con)  # what the next sync does first: a failed sync's staging is dropped
    assert tables_of(con, raw.SCHEMA) == {*TABLES, "sync_state"}
    assert raw.read_state(con, "acme").last_event_id == "evt_1"
    assert con.execute("select current_setting('disabled_compression_methods')").fetchone()[0] == setting
    monkeypatch.undo()
    stage(con, "acme", ["a2"], raw_size=LONG)
    raw.swap_full(con, "acme", state("acme", "evt_2"))
    assert key_values(con, "invoices", "acme") == ["a2"]
    assert key_values(con, "customers", "acme") == ["a1", "a2"]


def test_text_storage_settings_are_restored_when_the_copy_fails():
    c = duckdb.connect()
    before = c.execute("select current_setting('zstd_min_string_length')").fetchone()[0]
    with pytest.raises(RuntimeError), raw.text_storage(c):
        assert "dict_fsst" in c.execute("select current_setting('disabled_compression_methods')").fetchone()[0].lower()
        assert c.execute("select current_setting('zstd_min_string_length')").fetchone()[0] == 256
        raise RuntimeError("boom")
    assert c.execute("select current_setting('disabled_compression_methods')").fetchone()[0] == ""
    assert c.execute("select current_setting('zstd_min_string_length')").fetchone()[0] == before


def test_long_json_text_is_stored_compressed_with_zstd(tmp_path):
    from segflow_pipeline.warehouse import files

    c = files.connect(tmp_path / "w.duckdb")
    raw.ensure_tables(c)
    stage(c, "acme", [f"in_{i}" for i in range(3000)], raw_size=LONG)
    raw.swap_full(c, "acme", state("acme", "evt_1"))
    c.execute("checkpoint")
    kinds = {r[0] for r in c.execute(
        "select distinct compression from pragma_storage_info('stripe.invoices') where column_name = 'raw' "
        "and segment_type = 'VARCHAR'").fetchall()}
    assert kinds == {"ZSTD"}, kinds


def test_staging_a_killed_sync_left_is_never_published(tmp_path):
    published = tmp_path / "segflow.duckdb"
    files.working_path(published, "acme").parent.mkdir(parents=True)
    c = files.connect(files.working_path(published, "acme"))
    raw.ensure_tables(c)
    stage(c, "acme", ["a1"])
    raw.swap_full(c, "acme", state("acme", "evt_1"))
    stage(c, "acme", ["a2"])  # ...and the process is killed before the swap
    c.close()
    files.publish(published, ["acme"])
    reader = duckdb.connect(str(published), read_only=True)
    assert tables_of(reader, raw.SCHEMA) == {*TABLES, "sync_state"}
    assert key_values(reader, "invoices", "acme") == ["a1"]
    reader.close()
