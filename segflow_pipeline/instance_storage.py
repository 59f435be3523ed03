"""Dagster's PostgreSQL storages, keeping their connections open for the life of a process.

deploy/dagster.yaml names these classes for the run, event-log and schedule storage of a production instance.
They are `dagster_postgres`'s own storages with one change: the connection pool. Dagster's classes open a new
PostgreSQL connection for every statement they run, so each of the ~400 events of a run pays for a TCP connection,
a server process forked for it and authentication, and spends more time connecting than writing. Here every
process (the daemon, each run, the code server) keeps `POOL_SIZE` connection per storage open and reuses it:

- a connection is tested before each use (`pool_pre_ping`) and replaced if the server restarted or dropped it, so
  a database restart does not fail the next event write;
- connections older than `POOL_RECYCLE_S` are replaced, so a long-lived daemon does not hold one forever;
- threads that need a connection while the pooled one is busy get a short-lived one (`MAX_OVERFLOW`);
- connection settings of the config (`params`, e.g. `synchronous_commit`) apply to every pooled connection.

Dagster builds the same kind of engine for its own web server (`optimize_for_webserver`: a pool of one, plus a
statement timeout), and the classes swap the engine the way that method does; here connections are also tested
before use. Table creation, migrations and every query are Dagster's.
"""

from __future__ import annotations

from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

POOL_SIZE = 1
MAX_OVERFLOW = 4
POOL_RECYCLE_S = 3600


def pooled_engine(postgres_url: str, token_provider: Any = None):
    """A SQLAlchemy engine for Dagster's storages that keeps its connection open between statements."""
    return create_pg_engine(postgres_url, token_provider, isolation_level="AUTOCOMMIT", pool_size=POOL_SIZE,
                            max_overflow=MAX_OVERFLOW, pool_recycle=POOL_RECYCLE_S, pool_pre_ping=True)


def _pool(storage: Any) -> None:
    """Replace `storage`'s engine (built with no pool by its `__init__`, which also created the tables) by a pooled
    one; the old engine holds no connection."""
    storage._engine.dispose()
    storage._engine = pooled_engine(storage.postgres_url, storage._token_provider)


def _arguments(inst_data, config_value) -> dict[str, Any]:
    return {"inst_data": inst_data, "postgres_url": pg_url_from_config(config_value),
            "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
            "token_provider": get_token_provider_from_config(config_value)}


class _Pooled:
    """Mixed in before a dagster-postgres storage class: the same class, with a pooled engine (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pool(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
        return cls(**_arguments(inst_data, config_value))


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """`PostgresRunStorage` with a pooled connection."""


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """`PostgresEventLogStorage` with a pooled connection."""


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """`PostgresScheduleStorage` with a pooled connection."""
