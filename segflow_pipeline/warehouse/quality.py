"""Invariants of the raw Stripe tables, as queries: duplicate primary keys and row counts per integration."""

from __future__ import annotations

import duckdb

from segflow_pipeline.raw_tables import PRIMARY_KEYS, TABLES


def raw_table_health(con: duckdb.DuckDBPyConnection, integration: str) -> dict[str, dict[str, int]]:
    """{table: {"rows": n, "duplicate_keys": n}} for every raw table of one integration."""
    health: dict[str, dict[str, int]] = {}
    for table in TABLES:
        keys = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
        rows, dups = con.execute(
            f'select (select count(*) from stripe."{table}" where integration = $1), '
            f'(select count(*) from (select {keys} from stripe."{table}" where integration = $1 '
            f'group by all having count(*) > 1))',
            [integration],
        ).fetchone()
        health[table] = {"rows": int(rows), "duplicate_keys": int(dups)}
    return health
