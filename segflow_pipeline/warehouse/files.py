"""Where the DuckDB files live, who may write them, and how a refresh becomes visible to BI readers.

Layout beside SEGFLOW_DUCKDB_PATH (the published file BI tools open):
- `<dir>/.segflow/<integration>.duckdb`: one working file per integration (raw Stripe tables, snapshots, metrics,
  marts of that account). Only the pipeline writes it, while holding `<integration>.lock` (an flock: released by
  the kernel even on kill -9), so two refreshes of one account never interleave and refreshes of two accounts never
  block each other.
- Each connection to a working file runs under a DuckDB memory limit (`SEGFLOW_DUCKDB_MEMORY_LIMIT`, default
  `DEFAULT_MEMORY_LIMIT`); what does not fit spills to `<integration>.duckdb.tmp/` beside it, so a large account
  needs disk rather than RAM.
- Publishing first refreshes `<integration>.ready.duckdb`, a copy of each working file that nobody is writing at
  that moment (taken under the working file's lock, written beside it and renamed into place), then writes the
  union of every ready copy into a new file beside the published one and renames it over the published path
  (atomic on POSIX). Ready copies are only ever replaced by rename, so publishing never waits for another
  account's sync and never reads a file another run is writing; an account that is being refreshed keeps its last
  ready copy until its own run publishes. Readers that hold the old published file open keep their snapshot until
  they reconnect; nobody ever opens the published file for writing, so readers never block the pipeline and never
  see half a refresh.
No Dagster here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from segflow_pipeline.warehouse import raw

PUBLISHED_SCHEMAS = ("stripe", "metrics", "marts")
# DuckDB's own default is 80 % of RAM, whatever else runs on the machine: a full sync then keeps every block it
# wrote cached. Under this limit it evicts or spills them instead (benchmarks/bench_sync.py --rss-lines).
DEFAULT_MEMORY_LIMIT = "512MB"
MEMORY_LIMIT_ENV = "SEGFLOW_DUCKDB_MEMORY_LIMIT"


# DuckDB's file layout: three 4 KiB headers, then `total_blocks` blocks (`pragma database_size`). A file shorter
# than that was cut short (a full disk, a copy killed half way): DuckDB opens it, and fails only when it reads a
# block that is not there.
DUCKDB_HEADER_BYTES = 3 * 4096
# What DuckDB says about a file it cannot read as a database (as opposed to one it may not open).
_DAMAGE = re.compile(r"not a valid DuckDB database file|Could not read enough bytes|checksum|[Cc]orrupt")
_HELD = re.compile(r"Conflicting lock is held in (?P<holder>.*?) \(PID (?P<pid>\d+)\)")


class WarehouseError(RuntimeError):
    """A DuckDB file the pipeline cannot use; the message names it and says what to do. No retry fixes it."""


class WarehouseBusy(WarehouseError):
    """Another refresh holds the integration's working file."""


class FileHeld(WarehouseError):
    """Another process has a DuckDB file open (DuckDB's own lock): not a refresh of ours."""


class DamagedFile(WarehouseError):
    """A DuckDB file that cannot be read: cut short, overwritten, its header zeroed."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"the DuckDB file {path} cannot be read ({detail})")
        self.path = path
        self.detail = detail


class CannotWrite(WarehouseError):
    """The directory of the DuckDB files cannot be written."""


def state_dir(published: Path) -> Path:
    return published.parent / ".segflow"


def working_path(published: Path, integration: str) -> Path:
    return state_dir(published) / f"{integration}.duckdb"


def ready_path(published: Path, integration: str) -> Path:
    return state_dir(published) / f"{integration}.ready.duckdb"


def cannot_write(path: Path, exc: OSError) -> CannotWrite:
    return CannotWrite(
        f"cannot write {path} ({exc.strerror or exc}): make that directory writable by the user running the "
        "pipeline, or point SEGFLOW_DUCKDB_PATH at a file in a directory that is")


@contextlib.contextmanager
def file_lock(path: Path, *, timeout_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting up to `timeout_s` (0: try once), else raise `WarehouseBusy`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as exc:
        raise cannot_write(path.parent, exc) from None
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"{what} is busy: another refresh is writing it. Wait for that run to finish "
                        "(Dagster UI → Runs), then retry."
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def memory_limit(env: Mapping[str, str] | None = None) -> str:
    """The DuckDB memory limit of working-file connections: SEGFLOW_DUCKDB_MEMORY_LIMIT (e.g. `1GB`) or the default."""
    value = (os.environ if env is None else env).get(MEMORY_LIMIT_ENV, "").strip()
    return value or DEFAULT_MEMORY_LIMIT


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-write connection to a working file with the pipeline's memory settings (see the module doc).

    Spilling goes to DuckDB's default temporary directory for a file, `<path>.tmp` beside it.
    """
    con = duckdb.connect(str(path))
    limit = memory_limit()
    try:
        con.execute(f"set memory_limit = '{limit.replace(chr(39), '')}'")
    except duckdb.Error as exc:
        con.close()
        raise ValueError(f"{MEMORY_LIMIT_ENV}={limit!r} is not a DuckDB memory limit (e.g. 512MB, 2GB): {exc}"
                         ) from None
    raw.apply_text_storage(con)
    return con


def unusable(path: Path, exc: BaseException) -> WarehouseError:
    """What it means that DuckDB could not open or read `path`, as an error that says what to do."""
    text = str(exc)
    held = _HELD.search(text)
    if held or "Could not set lock" in text:
        holder = f"{held['holder']} (PID {held['pid']})" if held else "another process"
        return FileHeld(
            f"the DuckDB file {path} is open in another process, {holder}: DuckDB lets one process write a file, "
            "and none while another holds it. Close that connection (BI tools read the published file, never the "
            "files under .segflow/), then run the refresh again")
    if isinstance(exc, OSError):
        return cannot_write(path.parent, exc)
    if "Permission denied" in text or "Read-only file system" in text:
        return CannotWrite(f"cannot write {path} ({text.strip()}): make its directory writable by the user "
                           "running the pipeline, or point SEGFLOW_DUCKDB_PATH at a directory that is")
    if _DAMAGE.search(text):
        return DamagedFile(path, text.strip().splitlines()[0])
    return WarehouseError(f"DuckDB cannot use {path}: {text.strip()}")


def check_length(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise `DamagedFile` if the file is shorter than its own header says (cut short)."""
    _, _, block_size, total_blocks, *_ = con.execute("pragma database_size").fetchone()
    expected = DUCKDB_HEADER_BYTES + int(total_blocks) * int(block_size)
    size = path.stat().st_size
    if size < expected:
        raise DamagedFile(path, f"cut short: {size:,} bytes where its header counts {expected:,}")


def open_checked(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to an existing or new DuckDB file (the pipeline's settings when writable), once it is known
    to be readable: `FileHeld`, `DamagedFile` or `CannotWrite` otherwise."""
    try:
        con = duckdb.connect(str(path), read_only=True) if read_only else connect(path)
    except duckdb.Error as exc:
        raise unusable(path, exc) from None
    except OSError as exc:
        raise cannot_write(path.parent, exc) from None
    try:
        if path.exists():
            check_length(con, path)
    except BaseException:
        con.close()
        raise
    return con


@contextlib.contextmanager
def integration_connection(published: Path, integration: str, *, timeout_s: float = 600.0
                           ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to one integration's working file, held under its lock, once it is known to be
    readable (`open_checked`: `FileHeld`, `DamagedFile` or `CannotWrite` otherwise, each saying what to do)."""
    path = working_path(published, integration)
    with file_lock(path.with_suffix(".lock"), timeout_s=timeout_s, what=f"integration {integration!r}"):
        con = open_checked(path)
        try:
            yield con
        finally:
            con.close()


def publish(published: Path, integrations: list[str], *, timeout_s: float = 600.0) -> dict[str, int]:
    """Refresh the ready copies that are free, union every ready copy into a new file and rename it over
    `published`. Returns rows per table."""
    for name in integrations:
        refresh_ready_copy(published, name)
    published.parent.mkdir(parents=True, exist_ok=True)
    tmp = published.with_name(f".{published.name}.tmp-{os.getpid()}")
    counts: dict[str, int] = {}
    with file_lock(state_dir(published) / "publish.lock", timeout_s=timeout_s, what="publishing"):
        # Only the holder of this lock writes a temporary file: any other one is what a publish killed half way
        # (kill -9, a lost machine) left behind, and nothing else would ever remove it.
        for stale in published.parent.glob(f".{published.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            raw.apply_text_storage(con)  # the published copy is written as compactly and as fast as the working files
            counts = _union_into(con, [ready_path(published, name) for name in integrations])
            con.execute("checkpoint")
        finally:
            con.close()
        _fsync(tmp)
        os.replace(tmp, published)
        _fsync_dir(published.parent)
    return counts


def refresh_ready_copy(published: Path, integration: str) -> bool:
    """Copy the integration's working file to its ready copy if nobody is writing it now and it changed since the
    last copy. Returns whether a new copy was made; a busy account keeps its previous ready copy."""
    work, ready = working_path(published, integration), ready_path(published, integration)
    if not work.exists():
        return False
    try:
        with file_lock(work.with_suffix(".lock"), timeout_s=0, what=f"integration {integration!r}"):
            wal = work.with_name(work.name + ".wal")
            if wal.exists():  # fold the write-ahead log into the file so the copy is complete on its own
                con = connect(work)
                con.execute("checkpoint")
                con.close()
            for stale in ready.parent.glob(f".{ready.name}.tmp-*"):  # left by a copy killed half way
                stale.unlink(missing_ok=True)
            if ready.exists() and ready.stat().st_mtime_ns >= work.stat().st_mtime_ns:
                return False
            tmp = ready.with_name(f".{ready.name}.tmp-{os.getpid()}")
            shutil.copyfile(work, tmp)
            _fsync(tmp)
            os.replace(tmp, ready)
            return True
    except WarehouseBusy:
        return False


def _union_into(con: duckdb.DuckDBPyConnection, sources: list[Path]) -> dict[str, int]:
    aliases: list[str] = []
    for i, path in enumerate(sources):
        if not path.exists():
            continue
        alias = f"src{i}"
        con.execute(f"attach '{_sql_path(path)}' as {alias} (read_only)")
        aliases.append(alias)
    tables: dict[tuple[str, str], list[str]] = {}
    for alias in aliases:
        rows = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = ? and schema_name in "
            "(select unnest(?::varchar[])) order by all", [alias, list(PUBLISHED_SCHEMAS)]).fetchall()
        for schema, table in rows:
            if schema == raw.SCHEMA and table.startswith(raw.STAGED_PREFIX):
                continue  # what a failed or killed full sync staged
            tables.setdefault((schema, table), []).append(alias)
    counts: dict[str, int] = {}
    for (schema, table), sources in sorted(tables.items()):
        con.execute(f'create schema if not exists "{schema}"')
        union = " union all by name ".join(f'select * from {a}."{schema}"."{table}"' for a in sources)
        con.execute(f'create table "{schema}"."{table}" as {union}')
        counts[f"{schema}.{table}"] = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
    for alias in aliases:
        con.execute(f"detach {alias}")
    return counts


def _sql_path(path: Path) -> str:
    # ATTACH takes no bound parameters; the path is ours (state_dir + a validated integration name).
    return str(path).replace("'", "''")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync(path)
