"""`WarehouseResource`: DuckDB for the pipeline, over `warehouse.files` (per-integration working files, atomic publish).

A `DuckDBResource` whose `database` is the published file (SEGFLOW_DUCKDB_PATH) of the default workspace; every
other workspace publishes to its own file (`workspace_path`). An account's working file and ready copy live beside
its workspace's file (`files`). The pipeline itself writes the working file of one integration at a time and
publishes one workspace at a time by atomic rename.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Optional

import duckdb
from dagster_duckdb import DuckDBResource

from segflow_pipeline import config
from segflow_pipeline.config import Integration
from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.warehouse import files, raw
from segflow_pipeline.warehouse.comments import TableComment


class WarehouseResource(DuckDBResource):
    """The DuckDB file BI reads (`database`), and the per-integration working files the pipeline writes."""

    lock_timeout_s: float = 600.0
    # DuckDB memory of a working-file connection, e.g. `1GB` (SEGFLOW_DUCKDB_MEMORY_LIMIT, bound as `dg.EnvVar` in
    # defs/resources.py). None: the variable as `config` reads it (run config that sets other fields of this
    # resource drops the binding), else `files.DEFAULT_MEMORY_LIMIT`.
    memory_limit: Optional[str] = None

    @property
    def memory(self) -> str | None:
        return self.memory_limit or config.duckdb_memory_limit()

    @property
    def published_path(self) -> Path:
        return Path(self.database)

    def workspace_path(self, workspace: str = config.DEFAULT_WORKSPACE) -> Path:
        """The file a workspace publishes to (`config.workspace_path`, relative to this resource's file)."""
        return config.workspace_path(workspace, published=self.published_path)

    def home(self, integration: Integration) -> Path:
        """The file of the account's workspace: its working file and ready copy are in `.segflow/` beside it."""
        if not integration.workspace:
            raise files.WarehouseError(f"{integration.name}: {integration.problem or 'no usable workspace'}")
        return self.workspace_path(integration.workspace)

    @contextlib.contextmanager
    def integration_connection(self, integration: Integration, heal: Callable[[str], None] | None = None,
                               moved: Callable[[str], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """The working file of one account, under its lock; `heal`, `moved`: see `files.integration_connection`
        (a working file still beside the default workspace's file is moved beside its own workspace's)."""
        with files.integration_connection(self.home(integration), integration.name, timeout_s=self.lock_timeout_s,
                                          heal=heal, memory_limit=self.memory, earlier=[self.published_path],
                                          moved=moved) as con:
            yield con

    @contextlib.contextmanager
    def get_connection(self, workspace: str = config.DEFAULT_WORKSPACE) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to a workspace's published file (what its BI tools see)."""
        con = duckdb.connect(str(self.workspace_path(workspace)), read_only=True)
        try:
            yield con
        finally:
            con.close()

    def publish(self, integrations: list[str],
                comments: Mapping[tuple[str, str], TableComment] | None = None,
                workspace: str = config.DEFAULT_WORKSPACE) -> files.Publication:
        """Publish `integrations` (the accounts of `workspace`, and only those) to the workspace's file."""
        # A working file holds every raw table from its first sync on (`raw.ensure_tables`).
        home = self.workspace_path(workspace)
        return files.publish(home, integrations, timeout_s=self.lock_timeout_s,
                             required=[f"{raw.SCHEMA}.{table}" for table in TABLES], comments=comments,
                             target=home, memory_limit=self.memory, earlier=[self.published_path])

    def publish_reports(self, run_id: str, workspace: str = config.DEFAULT_WORKSPACE) -> list[str]:
        return files.publish_reports(self.published_path, run_id, self.workspace_path(workspace))
