"""DuckDB side of the sync (warehouse/raw.py): DDL from raw_tables.py, staged full swap, incremental upsert, state."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.stripe_api import objects
from segflow_pipeline.warehouse import raw

T0 = dt.datetime(2026, 1, 1)


@pytest.fixture
def con():
    c = duckdb.connect()
    raw.ensure_tables(c)
    yield c
    c.close()


def state(integration: str, event_id: str = "evt_1") -> raw.SyncState:
    return raw.SyncState(integration, event_id, T0, T0, T0, "full")


def customers(*ids: str, deleted: bool = False) -> list[dict]:
    return [{"id": i, "object": "customer", "created": 1_700_000_000, "email": f"{i}@x", "deleted": deleted}
            for i in ids]


def sub(sid: str, *items: str) -> dict:
    return {"id": sid, "object": "subscription", "status": "active", "customer": "cus_1", "created": 1,
            "items": {"object": "list", "has_more": False,
                      "data": [{"id": i, "object": "subscription_item", "subscription": sid, "quantity": 1,
                                "price": "price_1", "current_period_start": 10, "current_period_end": 20}
                               for i in items]}}


def stage_full(con, integration: str, rows: list[objects.Rows], event_id: str = "evt_1") -> None:
    raw.begin_staging(con)
    for r in rows:
        for table, data in r.tables.items():
            raw.append_staging(con, table, data)
    raw.swap_full(con, integration, state(integration, event_id))


def ids(con, table: str, integration: str, column: str = "id") -> list:
    return [r[0] for r in con.execute(f"select {column} from stripe.{table} where integration = ? order by all",
                                      [integration]).fetchall()]


def test_ensure_tables_is_idempotent_and_types_follow_tables_py(con):
    raw.ensure_tables(con)
    for table, schema in TABLES.items():
        described = con.execute(
            "select column_name, data_type from information_schema.columns where table_schema = 'stripe' "
            "and table_name = ? order by ordinal_position", [table]).fetchall()
        assert [name for name, _ in described] == schema.names
        assert [kind for _, kind in described] == [raw.duckdb_type(f.type) for f in schema]
    assert raw.read_state(con, "default") is None


def test_ensure_tables_adds_columns_missing_from_an_older_table():
    c = duckdb.connect()
    c.execute("create schema stripe")
    c.execute("create table stripe.products (integration varchar, id varchar)")
    raw.ensure_tables(c)
    cols = [r[0] for r in c.execute("select column_name from information_schema.columns where table_schema = "
                                    "'stripe' and table_name = 'products'").fetchall()]
    assert set(cols) == set(TABLES["products"].names)


def test_full_swap_replaces_one_integration_and_leaves_others(con):
    stage_full(con, "other", [objects.customer_rows(customers("cus_o1", "cus_o2"), "other")])
    stage_full(con, "acme", [objects.customer_rows(customers("cus_1", "cus_2"), "acme"),
                             objects.subscription_rows([sub("sub_1", "si_1", "si_2")], "acme")])
    stage_full(con, "acme", [objects.customer_rows(customers("cus_2", "cus_3"), "acme"),
                             objects.subscription_rows([sub("sub_1", "si_1")], "acme")], event_id="evt_2")
    assert ids(con, "customers", "other") == ["cus_o1", "cus_o2"]
    assert ids(con, "customers", "acme") == ["cus_1", "cus_2", "cus_3"]
    # Stripe stopped listing cus_1: it stays, flagged deleted.
    assert con.execute("select id from stripe.customers where integration = 'acme' and deleted").fetchall() == [
        ("cus_1",)]
    assert ids(con, "subscription_items", "acme") == ["si_1"]
    assert raw.read_state(con, "acme").last_event_id == "evt_2"
    staging = con.execute("select count(*) from duckdb_tables() where starts_with(table_name, '_staged_')").fetchone()
    assert staging == (0,)  # swap_full renamed every staging table into place


def test_full_swap_keeps_events_older_than_stripe_keeps(con):
    ev = {"id": "evt_old", "object": "event", "type": "invoice.paid", "created": 1,
          "data": {"object": {"id": "in_1", "object": "invoice"}}}
    stage_full(con, "acme", [objects.event_rows([ev], "acme")])
    stage_full(con, "acme", [objects.event_rows([{**ev, "id": "evt_new"}], "acme")])
    assert ids(con, "events", "acme") == ["evt_new", "evt_old"]


def test_staged_duplicates_are_published_once(con):
    rows = objects.subscription_rows([sub("sub_1", "si_1")], "acme")
    stage_full(con, "acme", [rows, objects.subscription_item_rows(
        [sub("sub_1", "si_1")["items"]["data"][0]], "acme", "sub_1")])
    assert ids(con, "subscription_items", "acme") == ["si_1"]


def test_incremental_upsert_replaces_children_and_flags_deleted(con):
    stage_full(con, "other", [objects.subscription_rows([sub("sub_1", "si_1")], "other")])
    stage_full(con, "acme", [objects.customer_rows(customers("cus_1", "cus_2"), "acme"),
                             objects.subscription_rows([sub("sub_1", "si_1", "si_2"), sub("sub_2", "si_3")],
                                                       "acme")])
    reread = objects.subscription_rows([sub("sub_1", "si_4")], "acme")
    written = raw.apply_changes(con, "acme", raw.Changes(
        rows={t: [d] for t, d in reread.tables.items()},
        reread={"subscriptions": ["sub_1"]},
        deleted={"customers": ["cus_2"]},
    ), state("acme", "evt_9"))
    assert written == {"subscriptions": 1, "subscription_items": 1}
    assert ids(con, "subscription_items", "acme") == ["si_3", "si_4"]
    assert ids(con, "customers", "acme") == ["cus_1", "cus_2"]
    assert con.execute("select deleted from stripe.customers where id = 'cus_2'").fetchone() == (True,)
    assert ids(con, "subscription_items", "other") == ["si_1"]
    assert raw.read_state(con, "acme").last_event_id == "evt_9"


def test_incremental_removes_deleted_draft_invoices_with_their_lines(con):
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_1", "status": "draft", "currency": "usd",
               "lines": {"object": "list", "has_more": False, "data": [
                   {"id": "il_1", "object": "line_item", "amount": 1, "currency": "usd"}]}}
    stage_full(con, "acme", [objects.invoice_rows([invoice], "acme")])
    raw.apply_changes(con, "acme", raw.Changes(rows={}, reread={}, deleted={"invoices": ["in_1"]}), state("acme"))
    assert ids(con, "invoices", "acme") == [] and ids(con, "invoice_lines", "acme") == []


def test_a_failed_upsert_changes_nothing(con):
    stage_full(con, "acme", [objects.customer_rows(customers("cus_1"), "acme")])
    bad = pa.table({"integration": ["acme"], "id": ["cus_x"], "created": ["not a time"]})
    with pytest.raises(duckdb.Error):
        raw.apply_changes(con, "acme", raw.Changes(rows={"customers": [bad]}, reread={"customers": ["cus_1"]},
                                                   deleted={}), state("acme", "evt_2"))
    assert ids(con, "customers", "acme") == ["cus_1"]
    assert raw.read_state(con, "acme").last_event_id == "evt_1"


def test_subscription_period_from_paged_items(con):
    basil = sub("sub_1", "si_1")
    raw.begin_staging(con)
    for r in (objects.subscription_rows([basil], "acme"),
              objects.subscription_item_rows([{"id": "si_2", "object": "subscription_item", "quantity": 1,
                                               "current_period_start": 5, "current_period_end": 30}],
                                             "acme", "sub_1")):
        for table, data in r.tables.items():
            raw.append_staging(con, table, data)
    raw.fill_subscription_periods(con, "acme", ["sub_1"], in_staging=True)
    raw.swap_full(con, "acme", state("acme"))
    start, end = con.execute("select epoch(current_period_start), epoch(current_period_end) "
                             "from stripe.subscriptions").fetchone()
    assert (start, end) == (5, 30)
