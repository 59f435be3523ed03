"""DuckDB storage of the raw Stripe tables (schema `stripe`) and of the sync state. No Dagster, no HTTP.

What belongs here: DDL derived from the Arrow schemas in `raw_tables.py`, Arrow appends into staging tables, and
the two ways a sync lands its data, each in ONE transaction together with the event cursor:
- `swap_full`: the integration's rows in `stripe.*` are replaced by what the full sync staged;
- `apply_changes`: an incremental sync's re-read objects are upserted by primary key.
A sync killed at any point therefore leaves either the previous state or the new one, never a mix. Rows of other
integrations are never read or written. What does not belong here: talking to Stripe, turning objects into rows,
feeding a running sync's rows in (`raw_sink.py`).

A full sync stages its rows in tables `stripe._staged_<table>` (same columns, created by `begin_staging`; the
appends are committed in groups while they load, `raw_sink.py`), and `swap_full` puts them in place of
`stripe.<table>` by renaming them, in one transaction: the rows are written once, never copied. Staging tables a
failed or killed sync left behind are never published (`files.publish` skips them) and are dropped by the next
`ensure_tables` or `begin_staging`.

One object listed twice (a page repeated, an object on two pages) leaves one row per key, by one rule
(`resolve_duplicates`): identical copies are dropped; of two different versions the one with the later `created`
wins, else the one whose request started after the other's answer arrived (the sync tags each row with when it was
fetched, column `_fetched`, dropped before the rows land); when neither tells, the sync fails
(`ConflictingVersions`) rather than pick one by chance. The rows an object brought along (its items, lines, tiers,
discounts) go with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from segflow_pipeline.raw_tables import DELETABLE, FETCH_BITS, FETCHED, PRIMARY_KEYS, TABLES, SyncState
from segflow_pipeline.warehouse.transactions import transaction

SCHEMA = "stripe"
STAGED_PREFIX = "_staged_"
# Where older versions staged full syncs; dropped by `ensure_tables`.
OLD_STAGING_SCHEMA = "stripe_staging"
STATE_TABLE = f"{SCHEMA}.sync_state"

# Tables whose rows belong to a parent object: when the parent is re-read, its children are replaced as a set
# (an item removed from a subscription, a line removed from a draft invoice must disappear).
CHILD_OF: dict[str, tuple[str, str]] = {
    "subscription_items": ("subscriptions", "subscription"),
    "invoice_lines": ("invoices", "invoice"),
    "price_tiers": ("prices", "price"),
}


class ConflictingVersions(ValueError):
    """One object came back twice with different contents, and neither its `created` nor the order of the two
    requests says which is newer (they ran at the same time). The account changed while it was read: a later sync
    reads it again, so this heals on retry."""

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us"): "TIMESTAMP",
}


def duckdb_type(kind: pa.DataType) -> str:
    """The DuckDB column type for an Arrow type used in `raw_tables.py`."""
    if pa.types.is_decimal(kind):
        return f"DECIMAL({kind.precision},{kind.scale})"
    try:
        return _DUCKDB_TYPES[kind]
    except KeyError:
        raise TypeError(f"no DuckDB type for Arrow {kind}") from None


def create_table_sql(schema_name: str, table: str, name: str | None = None, *, fetched: bool = False) -> str:
    """DDL of `table` (from `raw_tables.py`) as `schema_name.name` (default: its own name); `fetched` adds the
    `_fetched` column of this sync's own rows (see the module doc)."""
    columns = ", ".join([f'"{f.name}" {duckdb_type(f.type)}' for f in TABLES[table]]
                        + ([f'"{FETCHED}" BIGINT'] if fetched else []))
    return f'create table if not exists {schema_name}."{name or table}" ({columns})'


# Rows an object brings along, by the column naming it (and which of them, for discounts): when two versions of
# the object were listed, the losing version's rows of these tables go with it.
CARRIED_BY: dict[str, tuple[tuple[str, str, str], ...]] = {
    "subscription_items": (("subscriptions", "subscription", "true"),),
    "invoice_lines": (("invoices", "invoice", "true"),),
    "price_tiers": (("prices", "price", "true"),),
    "discounts": (("subscriptions", "subscription", "scope <> 'customer'"),
                  ("customers", "target", "scope = 'customer'")),
}


@dataclass
class Duplicates:
    """What `resolve_duplicates` did, per table: identical copies dropped, keys whose versions differed."""

    dropped: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)    # "subscriptions sub_123" of resolved keys, a few


def resolve_duplicates(con: duckdb.DuckDBPyConnection, relations: Mapping[str, str], integration: str,
                       found: Duplicates | None = None) -> Duplicates:
    """Leave one row per primary key in each relation (raw table → the table holding this sync's rows, with
    `_fetched`), by the rule of the module doc. Objects first, then what they carry. Raises `ConflictingVersions`
    when two versions cannot be ordered. Quarantine rows are all kept."""
    found = found if found is not None else Duplicates()
    losers: dict[str, dict[str, set[int | None]]] = {}
    order = [t for t in TABLES if t not in CARRIED_BY] + [t for t in TABLES if t in CARRIED_BY]
    for table in order:
        relation = relations.get(table)
        if relation is None or table == "quarantine":
            continue
        for parent, column, which in CARRIED_BY.get(table, ()):
            gone = [(object_id, tag) for object_id, tags in losers.get(parent, {}).items() for tag in tags]
            if gone:
                con.execute(
                    f"""delete from {relation} where integration = ? and ({which}) and exists (
                            select 1 from (select unnest(?::varchar[]) as id, unnest(?::bigint[]) as tag) g
                            where g.id = {relation}."{column}" and g.tag is not distinct from {relation}.{FETCHED})""",
                    [integration, [g[0] for g in gone], [g[1] for g in gone]])
        keys = PRIMARY_KEYS[table]
        key_list = ", ".join(f'"{c}"' for c in keys)
        created = 'r."created"' if "created" in TABLES[table].names else "null::timestamp"
        content = ", ".join(f'r."{f.name}"' for f in TABLES[table])
        rows = con.execute(
            f"""with d as (select {key_list} from {relation} where integration = ? group by all having count(*) > 1)
                select r.rowid, [{", ".join(f'r."{c}"::varchar' for c in keys)}], {created}, r.{FETCHED},
                       hash({content})
                from {relation} r join d using ({key_list}) order by r.rowid""", [integration]).fetchall()
        groups: dict[tuple, list[tuple]] = {}
        for rowid, key, when, fetched, digest in rows:
            groups.setdefault(tuple(key), []).append((rowid, when, fetched, digest))
        delete: list[int] = []
        for key, copies in groups.items():
            versions: dict[int, list[tuple]] = {}
            for copy in copies:
                versions.setdefault(copy[3], []).append(copy)
            if len(versions) == 1:
                delete += [c[0] for c in copies[1:]]
                found.dropped[table] = found.dropped.get(table, 0) + len(copies) - 1
                continue
            winner = _newest(list(versions.values()))
            name = f"{table} {' '.join(k for k in key[1:] if k)}"
            if winner is None:
                raise ConflictingVersions(
                    f"Stripe sent {name} twice with different contents, with the same created and in requests that "
                    "ran at the same time, so which is newer cannot be told (the account changed while it was "
                    "read). Nothing of this sync was written; the next one reads it again.")
            keep = versions[winner][0][0]
            delete += [c[0] for c in copies if c[0] != keep]
            found.resolved[table] = found.resolved.get(table, 0) + 1
            if len(found.examples) < 5:
                found.examples.append(name)
            losers.setdefault(table, {}).setdefault(key[1], set()).update(
                c[2] for d, cs in versions.items() if d != winner for c in cs)
        if delete:
            con.execute(f"delete from {relation} where rowid in (select unnest(?::bigint[]))", [delete])
    return found


def _newest(versions: list[list[tuple]]) -> int | None:
    """The content digest of the newest version (copies: (rowid, created, fetched, digest)), or None.

    The latest `created` wins; among versions sharing it, the one whose latest fetch started after every other's
    latest answer arrived."""
    created = [max((c[1] for c in v if c[1] is not None), default=None) for v in versions]
    if all(c is not None for c in created):
        latest = max(created)
        versions = [v for v, c in zip(versions, created) if c == latest]
        if len(versions) == 1:
            return versions[0][0][3]
    if any(c[2] is None for v in versions for c in v):
        return None
    last = [max(c[2] for c in v) for v in versions]  # the latest fetch of each version: (started, arrived)
    mask = (1 << FETCH_BITS) - 1
    for i, tag in enumerate(last):
        started = tag >> FETCH_BITS
        if all(started > (other & mask) for j, other in enumerate(last) if j != i):
            return versions[i][0][3]
    return None


STATE_COLUMNS = (("integration", "VARCHAR"), ("last_event_id", "VARCHAR"), ("last_event_created", "TIMESTAMP"),
                 ("last_full_sync_at", "TIMESTAMP"), ("last_sync_at", "TIMESTAMP"), ("last_mode", "VARCHAR"),
                 ("source", "VARCHAR"))


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Schema `stripe` with every table of `raw_tables.TABLES` and `stripe.sync_state`.

    Idempotent; columns added to `raw_tables.py` later are added to existing tables.
    """
    with transaction(con):
        con.execute(f"drop schema if exists {OLD_STAGING_SCHEMA} cascade")
        con.execute(f"create schema if not exists {SCHEMA}")
        drop_staging(con)
        for table, schema in TABLES.items():
            con.execute(create_table_sql(SCHEMA, table))
            existing = {row[0] for row in con.execute(
                "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                [SCHEMA, table]).fetchall()}
            for f in schema:
                if f.name not in existing:
                    con.execute(f'alter table {SCHEMA}.{table} add column "{f.name}" {duckdb_type(f.type)}')
        con.execute(f"create table if not exists {STATE_TABLE} ("
                    + ", ".join(f"{name} {kind}" for name, kind in STATE_COLUMNS) + ")")
        existing = {row[0] for row in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
            [SCHEMA, "sync_state"]).fetchall()}
        for name, kind in STATE_COLUMNS:
            if name not in existing:
                con.execute(f"alter table {STATE_TABLE} add column {name} {kind}")


def read_state(con: duckdb.DuckDBPyConnection, integration: str) -> SyncState | None:
    columns = ", ".join(name for name, _ in STATE_COLUMNS)
    row = con.execute(f"select {columns} from {STATE_TABLE} where integration = ?", [integration]).fetchone()
    return SyncState(*row) if row else None


def event_ids_since(con: duckdb.DuckDBPyConnection, integration: str, since: dt.datetime) -> set[str]:
    """Ids of the stored events created at or after `since`."""
    return {row[0] for row in con.execute(
        f"select id from {SCHEMA}.events where integration = ? and created >= ?", [integration, since]).fetchall()}


def staged(table: str) -> str:
    """The staging table of `table` (from `begin_staging` until `swap_full` renames it into place)."""
    return f'{SCHEMA}."{STAGED_PREFIX}{table}"'


def begin_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Create a full sync's empty staging tables (dropping any a killed sync left); `swap_full` ends them."""
    with transaction(con):
        drop_staging(con)
        for table in TABLES:
            con.execute(create_table_sql(SCHEMA, table, STAGED_PREFIX + table, fetched=True))


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Drop every staging table in this file (what a failed or killed full sync left)."""
    for (name,) in con.execute("select table_name from duckdb_tables() where schema_name = ? and "
                               "starts_with(table_name, ?)", [SCHEMA, STAGED_PREFIX]).fetchall():
        con.execute(f'drop table {SCHEMA}."{name}"')


def append_staging(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | Sequence[pa.Table]) -> int:
    """Append Arrow rows (one table or several with the table's schema) to the staging table of `table`."""
    batch = data if isinstance(data, pa.Table) else pa.concat_tables(list(data), memory_pool=pa.system_memory_pool())
    if batch.num_rows:
        _insert(con, staged(table), batch)
    return batch.num_rows


def _insert(con: duckdb.DuckDBPyConnection, target: str, batch: pa.Table) -> None:
    name = "_segflow_arrow_batch"
    con.register(name, batch)
    try:
        con.execute(f"insert into {target} by name select * from {name}")
    finally:
        con.unregister(name)


def fill_subscription_periods(con: duckdb.DuckDBPyConnection, integration: str, subscriptions: Iterable[str], *,
                              in_staging: bool = False) -> None:
    """For subscriptions whose items were paged beyond the embedded ones: period = earliest item start, latest end.

    basil+ keeps periods on items only (https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-subscription-
    current-period-start-and-end); `least`/`greatest` ignore nulls, so older shapes keep their own period.
    """
    ids = sorted(set(subscriptions))
    if not ids:
        return
    subscriptions_table, items_table = (
        (staged("subscriptions"), staged("subscription_items")) if in_staging
        else (f"{SCHEMA}.subscriptions", f"{SCHEMA}.subscription_items"))
    con.execute(
        f"""update {subscriptions_table} s
            set current_period_start = least(s.current_period_start, m.period_start),
                current_period_end = greatest(s.current_period_end, m.period_end)
            from (select subscription, min(current_period_start) as period_start,
                         max(current_period_end) as period_end
                  from {items_table}
                  where integration = ? and subscription in (select unnest(?::varchar[]))
                  group by subscription) m
            where s.integration = ? and s.id = m.subscription""",
        [integration, ids, integration],
    )


def _pk_match(table: str, alias_a: str, alias_b: str) -> str:
    # `=` never matches null: quarantine rows of objects without an id are all kept.
    return " and ".join(f'{alias_a}."{c}" = {alias_b}."{c}"' for c in PRIMARY_KEYS[table])


def _once_per_key(table: str) -> str:
    """QUALIFY clause keeping one row per primary key (quarantine rows without an object id are all kept)."""
    keys = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
    if table == "quarantine":
        return f"qualify object_id is null or row_number() over (partition by {keys}) = 1"
    return f"qualify row_number() over (partition by {keys}) = 1"


def _write_state(con: duckdb.DuckDBPyConnection, state: SyncState) -> None:
    con.execute(f"delete from {STATE_TABLE} where integration = ?", [state.integration])
    columns = ", ".join(name for name, _ in STATE_COLUMNS)
    con.execute(f"insert into {STATE_TABLE} ({columns}) values (?, ?, ?, ?, ?, ?, ?)",
                [state.integration, state.last_event_id, state.last_event_created, state.last_full_sync_at,
                 state.last_sync_at, state.last_mode, state.source])


# How DuckDB stores text. Its default for text, DICT_FSST, is slow on long strings, and Stripe's JSON (`raw`) is
# kilobytes per object; ZSTD for text of 256 bytes and more writes faster and takes less space (README). Set on
# every pipeline connection (`warehouse.files.connect`) and, for other connections, while a full sync loads
# (`raw_sink.bulk_loading`).
TEXT_STORAGE = {"disabled_compression_methods": "dict_fsst", "zstd_min_string_length": "256"}


def apply_text_storage(con: duckdb.DuckDBPyConnection) -> None:
    for name, value in TEXT_STORAGE.items():
        con.execute(f"set {name} = ?", [value])


@contextlib.contextmanager
def text_storage(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """`TEXT_STORAGE` meanwhile (database-wide settings), the previous settings restored after."""
    names = list(TEXT_STORAGE)
    previous = con.execute("select " + ", ".join(f"current_setting('{n}')" for n in names)).fetchone()
    apply_text_storage(con)
    try:
        yield
    finally:
        for name, value in zip(names, previous):
            con.execute(f"set {name} = ?", [str(value)])


def swap_full(con: duckdb.DuckDBPyConnection, integration: str, state: SyncState,
              duplicates: Duplicates | None = None) -> Duplicates:
    """Publish a full sync staged since `begin_staging`: in one transaction, the integration's rows in `stripe`
    become the staged ones and the state advances; on any error nothing changes.

    Objects Stripe no longer lists (deleted customers, products, prices, coupons) stay, flagged deleted; events
    older than Stripe's 30-day window stay too. Each key appears once even if the account changed while paging
    (a line list that moved between two pages of one draft invoice): `resolve_duplicates`, whose counts are
    returned (and added to `duplicates` if given). Rows of other integrations are copied into the staging tables;
    then each staging table is renamed in place of its table, so the sync's own rows, written once, are never
    copied.
    """
    params = [integration, integration]
    with transaction(con):
        duplicates = resolve_duplicates(con, {table: staged(table) for table in TABLES}, integration, duplicates)
        for table in DELETABLE:
            con.execute(
                f"""insert into {staged(table)} by name
                    select * replace (true as deleted) from {SCHEMA}.{table} o
                    where o.integration = ? and not exists (
                        select 1 from {staged(table)} s where s.integration = ? and s.id = o.id)""", params)
        con.execute(
            f"""insert into {staged("events")} by name select * from {SCHEMA}.events o
                where o.integration = ? and not exists (
                    select 1 from {staged("events")} s where s.integration = ? and s.id = o.id)""", params)
        for table in TABLES:
            con.execute(f"insert into {staged(table)} by name select * from {SCHEMA}.{table} "
                        f"where integration <> ?", [integration])
            con.execute(f'alter table {staged(table)} drop column "{FETCHED}"')  # metadata only: no rows copied
            con.execute(f"drop table {SCHEMA}.{table}")
            con.execute(f'alter table {staged(table)} rename to "{table}"')
        _write_state(con, state)
    return duplicates


@dataclass
class Changes:
    """What an incremental sync re-read, to upsert in one transaction.

    `rows`: new rows per table. `period_from_items`: subscriptions whose items were paged (see
    `fill_subscription_periods`). `reread`: ids per top-level table of every object re-read (their old rows, child
    rows and quarantine rows are replaced by `rows`, even if the object now fails to parse). `deleted`: ids per
    table Stripe reports deleted: flagged `deleted = true` where the table has that column, removed elsewhere
    (a deleted draft invoice is gone from Stripe for good, with its lines).
    """

    rows: Mapping[str, Sequence[pa.Table]]
    reread: Mapping[str, Sequence[str]]
    deleted: Mapping[str, Sequence[str]]
    period_from_items: Sequence[str] = ()


_QUARANTINE_TYPE = {"customers": "customer", "products": "product", "prices": "price", "coupons": "coupon",
                    "subscriptions": "subscription", "invoices": "invoice", "events": "event",
                    "invoice_items": "invoiceitem"}


def stored_ids(con: duckdb.DuckDBPyConnection, table: str, integration: str) -> set[str]:
    """Ids of one integration's rows of a raw table."""
    return {id_ for (id_,) in con.execute(f"select id from {SCHEMA}.{table} where integration = ?",
                                          [integration]).fetchall()}


def apply_changes(con: duckdb.DuckDBPyConnection, integration: str, changes: Changes, state: SyncState,
                  duplicates: Duplicates | None = None) -> dict[str, int]:
    """Upsert an incremental sync's rows by primary key and advance the state, all in one transaction. Objects read
    twice are resolved first (`resolve_duplicates`, counted in `duplicates` if given)."""
    written: dict[str, int] = {}
    incoming: dict[str, str] = {}
    with transaction(con):
        for table, parts in changes.rows.items():
            parts = [p for p in parts if p.num_rows]
            if not parts:
                continue
            batch = pa.concat_tables(parts, promote_options="default")
            name = f"_segflow_new_{table}"
            con.register("_segflow_changes", batch)
            try:
                tag = "" if FETCHED in batch.schema.names else f", null::bigint as {FETCHED}"
                con.execute(f"create or replace temp table {name} as select *{tag} from _segflow_changes")
            finally:
                con.unregister("_segflow_changes")
            incoming[table] = name
            written[table] = batch.num_rows
        resolve_duplicates(con, incoming, integration, duplicates)
        for table, ids in changes.reread.items():
            ids = list(ids)
            if not ids:
                continue
            con.execute(f"delete from {SCHEMA}.{table} where integration = ? and id in (select unnest(?::varchar[]))",
                        [integration, ids])
            for child, (parent, column) in CHILD_OF.items():
                if parent == table:
                    con.execute(f'delete from {SCHEMA}.{child} where integration = ? and "{column}" in '
                                f"(select unnest(?::varchar[]))", [integration, ids])
            if table == "subscriptions":
                con.execute(f"delete from {SCHEMA}.discounts where integration = ? and scope <> 'customer' "
                            f"and subscription in (select unnest(?::varchar[]))", [integration, ids])
            if table == "customers":
                con.execute(f"delete from {SCHEMA}.discounts where integration = ? and scope = 'customer' "
                            f"and target in (select unnest(?::varchar[]))", [integration, ids])
            if table in _QUARANTINE_TYPE:
                con.execute(f"delete from {SCHEMA}.quarantine where integration = ? and object_type = ? "
                            f"and object_id in (select unnest(?::varchar[]))",
                            [integration, _QUARANTINE_TYPE[table], ids])
        for table, name in incoming.items():
            # Rows keyed like ones already stored (an event listed twice, a child re-read) replace them.
            con.execute(f"delete from {SCHEMA}.{table} t where t.integration = ? and exists "
                        f"(select 1 from {name} n where {_pk_match(table, 'n', 't')})", [integration])
            con.execute(f'insert into {SCHEMA}.{table} by name select * exclude ("{FETCHED}") from {name} '
                        f"{_once_per_key(table)}")
            con.execute(f"drop table {name}")
        for table, ids in changes.deleted.items():
            ids = list(ids)
            if not ids:
                continue
            if table in DELETABLE:
                con.execute(f"update {SCHEMA}.{table} set deleted = true where integration = ? "
                            f"and id in (select unnest(?::varchar[]))", [integration, ids])
            else:
                con.execute(f"delete from {SCHEMA}.{table} where integration = ? "
                            f"and id in (select unnest(?::varchar[]))", [integration, ids])
                for child, (parent, column) in CHILD_OF.items():
                    if parent == table:
                        con.execute(f'delete from {SCHEMA}.{child} where integration = ? and "{column}" in '
                                    f"(select unnest(?::varchar[]))", [integration, ids])
        fill_subscription_periods(con, integration, changes.period_from_items)
        _write_state(con, state)
    return written


def table_counts(con: duckdb.DuckDBPyConnection, integration: str) -> dict[str, int]:
    """Rows per raw table for one integration."""
    return {table: con.execute(f"select count(*) from {SCHEMA}.{table} where integration = ?",
                               [integration]).fetchone()[0] for table in TABLES}
