"""raw.swap_full on every table: other integrations untouched, one row per key, deleted objects flagged, old events
kept, table layouts unchanged, staging emptied, atomic on failure, long text (copied without DICT_FSST) intact."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from segflow_pipeline.stripe_api.tables import PRIMARY_KEYS, TABLES
from segflow_pipeline.warehouse import files, raw

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
    raw.clear_staging(con, integration)
    for table in TABLES:
        raw.append_staging(con, table, rows(table, integration, keys, **kwargs))


def key_values(con, table: str, integration: str) -> list:
    key = next(c for c in PRIMARY_KEYS[table] if c != "integration")
    return [r[0] for r in con.execute(f'select "{key}" from stripe.{table} where integration = ? order by 1',
                                      [integration]).fetchall()]


def everything(con, schema: str, integration: str) -> dict[str, list]:
    return {t: con.execute(f"select * from {schema}.{t} where integration = ? order by all", [integration]).fetchall()
            for t in TABLES}


def layouts(con) -> dict:
    return {(schema, table): con.execute(f"describe {schema}.{table}").fetchall()
            for schema in (raw.SCHEMA, raw.STAGING) for table in (*TABLES, "sync_state")
            if schema == raw.SCHEMA or table != "sync_state"}


def test_second_swap_replaces_only_this_integration_flags_deleted_keeps_old_events(con):
    stage(con, "other", ["o1", "o2"])
    raw.swap_full(con, "other", state("other", "evt_o"))
    stage(con, "acme", ["a1", "a2"], tag="first")
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    other_before = everything(con, raw.SCHEMA, "other")
    # A killed full sync of a third account left staged rows behind: neither published nor cleared by acme's swap.
    for table in TABLES:
        raw.append_staging(con, table, rows(table, "ghost", ["g1"]))

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
    assert raw.staged_rows(con, "acme") == {t: 0 for t in TABLES}
    assert raw.staged_rows(con, "ghost") == {t: 1 for t in TABLES}


def test_staged_duplicates_are_published_once_per_key(con):
    raw.clear_staging(con, "acme")
    for table in TABLES:
        raw.append_staging(con, table, [rows(table, "acme", ["k1", "k2"], tag="a"),
                                        rows(table, "acme", ["k1"], tag="b")])
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    for table in TABLES:
        counts = con.execute(f"select count(*) from stripe.{table} where integration = 'acme'").fetchone()[0]
        # quarantine keeps every row (a bad object may fail twice, and rows without an object id are all kept)
        assert counts == (3 if table == "quarantine" else 2), table
    assert raw.staged_rows(con, "acme") == {t: 0 for t in TABLES}


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
    staged = everything(con, raw.STAGING, "acme")
    assert raw._has_long_text(con, "invoices", "acme")
    assert not raw._has_long_text(con, "price_tiers", "acme")  # no text column beyond the keys
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    assert everything(con, raw.SCHEMA, "acme") == staged
    assert con.execute("select current_setting('disabled_compression_methods')").fetchone()[0].lower() == "rle"
    con.execute("checkpoint")
    assert everything(con, raw.SCHEMA, "acme") == staged


def test_short_text_is_not_taken_for_long():
    c = duckdb.connect()
    raw.ensure_tables(c)
    raw.append_staging(c, "invoices", rows("invoices", "acme", ["in_1", "in_2"], raw_size=4000))
    raw.append_staging(c, "invoices", rows("invoices", "other", ["in_3"], raw_size=9000))
    assert not raw._has_long_text(c, "invoices", "acme")
    assert raw._has_long_text(c, "invoices", "other")
    assert not raw._has_long_text(c, "invoices", "nobody")


def test_a_failed_swap_changes_nothing(con, monkeypatch):
    stage(con, "acme", ["a1"], raw_size=LONG)
    raw.swap_full(con, "acme", state("acme", "evt_1"))
    published = everything(con, raw.SCHEMA, "acme")
    stage(con, "acme", ["a2"], raw_size=LONG)
    staged = everything(con, raw.STAGING, "acme")

    def fail(*_args):
        raise RuntimeError("killed")

    monkeypatch.setattr(raw, "_write_state", fail)
    with pytest.raises(RuntimeError):
        raw.swap_full(con, "acme", state("acme", "evt_2"))
    assert everything(con, raw.SCHEMA, "acme") == published
    assert everything(con, raw.STAGING, "acme") == staged
    assert raw.read_state(con, "acme").last_event_id == "evt_1"
    assert con.execute("select current_setting('disabled_compression_methods')").fetchone()[0] == ""
    monkeypatch.undo()
    raw.swap_full(con, "acme", state("acme", "evt_2"))
    assert key_values(con, "invoices", "acme") == ["a2"]
    assert key_values(con, "customers", "acme") == ["a1", "a2"]


def test_compression_setting_is_restored_when_the_copy_fails():
    c = duckdb.connect()
    with pytest.raises(RuntimeError), raw._without_dict_fsst(c):
        assert "dict_fsst" in c.execute("select current_setting('disabled_compression_methods')").fetchone()[0].lower()
        raise RuntimeError("boom")
    assert c.execute("select current_setting('disabled_compression_methods')").fetchone()[0] == ""
