"""Where the DuckDB files live, who may write them, and how a refresh becomes visible to BI readers.

Layout beside each workspace's published file (SEGFLOW_DUCKDB_PATH for the default workspace, the file
`config.workspace_path` names for the others; called `home` below):
- `<home dir>/.segflow/<integration>.duckdb`: one working file per integration of that workspace (raw Stripe tables,
  snapshots, metrics, marts of that account). Only the pipeline writes it, while holding `<integration>.lock` (an
  flock: released by the kernel even on kill -9), so two refreshes of one account never interleave and refreshes
  of two accounts never block each other. Everything of a workspace (working files, ready copies, its published
  file and reports) lies under its own directory, so a volume per workspace holds all of it.
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
- Workspaces: each workspace publishes its own file, the union of its own accounts' ready copies only, under a
  lock of its own (`<home dir>/.segflow/publish.lock`): a workspace's publish never reads another workspace's
  accounts and never waits for another workspace's publish.
- An account whose working file is not beside its workspace's file yet, but beside the default workspace's (where
  every working file lived before workspaces had their own directories, and where an account moved out of the
  default workspace left it), has it moved over, with its ready copy, under both locks (`integration_connection`,
  `earlier`): an upgrade or a move keeps the account's history instead of syncing it anew.
- Reports (charts, HTML) follow the data: once a run has published its data, it writes them to
  `<home dir>/.segflow/reports/<integration>.<run id>/` and, complete, moves them to `reports/<integration>/` beside
  its workspace's file (`publish_reports`). A run that fails before publishing, or whose report fails, leaves the
  published reports as they were: never newer than the published file.
- One account's damaged files stay that account's problem. A copy replaces the last good ready copy only once it
  opens, is as long as DuckDB says it should be, and holds the working file's tables with the same row counts.
  An account whose working file cannot be used (damaged, or held open by another process) keeps its last good
  copy; one without any usable copy is left out; the others are published either way, and `publish` says which
  account is in what state (`AccountCopy`).
- A working file that cannot be read is moved aside (`<integration>.duckdb.damaged-<UTC time>`, kept for
  inspection) by the sync, which then rebuilds it with a full sync (`integration_connection(heal=...)`).
No Dagster here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from segflow_pipeline.warehouse import comments as table_comments
from segflow_pipeline.warehouse.layout import (  # noqa: F401 - the layout's names, as the pipeline uses them
    CannotWrite,
    WarehouseBusy,
    WarehouseError,
    adopt,
    adopt_if_free,
    cannot_write,
    file_lock,
    fsync,
    fsync_dir,
    pending_reports_dir,
    publish_lock,
    publish_reports,
    ready_path,
    reports_dir,
    state_dir,
    working_path,
)
from segflow_pipeline.warehouse import raw
from segflow_pipeline.warehouse.comments import TableComment
from segflow_pipeline.warehouse.transactions import transaction

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


class FileHeld(WarehouseError):
    """Another process has a DuckDB file open (DuckDB's own lock): not a refresh of ours."""


class DamagedFile(WarehouseError):
    """A DuckDB file that cannot be read: cut short, overwritten, its header zeroed."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"the DuckDB file {path} cannot be read ({detail})")
        self.path = path
        self.detail = detail


def connect(path: Path, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write connection to a working file with the pipeline's memory settings (see the module doc):
    `memory_limit` (e.g. `1GB`, SEGFLOW_DUCKDB_MEMORY_LIMIT) or `DEFAULT_MEMORY_LIMIT`.

    Spilling goes to DuckDB's default temporary directory for a file, `<path>.tmp` beside it.
    """
    con = duckdb.connect(str(path))
    limit = (memory_limit or "").strip() or DEFAULT_MEMORY_LIMIT
    try:
        con.execute("set memory_limit = ?", [limit])
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


def open_checked(path: Path, *, read_only: bool = False, memory_limit: str | None = None
                 ) -> duckdb.DuckDBPyConnection:
    """A connection to an existing or new DuckDB file (the pipeline's settings when writable), once it is known
    to be readable: `FileHeld`, `DamagedFile` or `CannotWrite` otherwise."""
    try:
        con = duckdb.connect(str(path), read_only=True) if read_only else connect(path, memory_limit)
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


def set_aside(path: Path) -> Path:
    """Move a damaged file (and its write-ahead log) out of the way, kept for inspection; returns where to."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, aside)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        os.replace(wal, aside.with_name(aside.name + ".wal"))
    return aside


@contextlib.contextmanager
def integration_connection(home: Path, integration: str, *, timeout_s: float = 600.0,
                           heal: Callable[[str], None] | None = None, memory_limit: str | None = None,
                           earlier: Collection[Path] = (), moved: Callable[[str], None] | None = None
                           ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to one integration's working file beside `home` (its workspace's file), held under
    its lock (`connect`: `memory_limit`).

    A working file that is not there yet but beside one of `earlier` (other workspaces' files) is moved over first;
    `moved` gets a message saying so.
    A working file that cannot be read (`DamagedFile`) is moved aside and replaced by a new, empty one when
    `heal` is given (the sync, which then rebuilds it with a full sync): `heal` gets the message saying so.
    Without `heal` the error says how to get there.
    """
    path = working_path(home, integration)
    with file_lock(path.with_suffix(".lock"), timeout_s=timeout_s, what=f"integration {integration!r}"):
        if not path.exists():
            try:
                source = adopt(home, integration, earlier, timeout_s)
            except OSError as exc:
                raise cannot_write(path.parent, exc) from None
            if source is not None and moved is not None:
                moved(f"moved the working file of {integration!r} from {source} to {path} (its workspace's "
                      "directory)")
        try:
            con = open_checked(path, memory_limit=memory_limit)
        except DamagedFile as exc:
            if heal is None:
                raise DamagedFile(path, f"{exc.detail}; `segflow refresh --integration {integration}` moves it "
                                        "aside and rebuilds it with a full sync") from None
            aside = set_aside(path)
            heal(f"The working file {path} of {integration!r} could not be read ({exc.detail}): moved it to "
                 f"{aside} (kept for inspection); this run rebuilds it with a full sync from Stripe.")
            con = open_checked(path, memory_limit=memory_limit)
        try:
            yield con
        finally:
            con.close()


@dataclass(frozen=True)
class AccountCopy:
    """What a publish did with one account's data.

    `state`: `current` (its working file as it is now), `busy` (another run is writing it: its last ready copy),
    `kept` (its working file cannot be used: its last good ready copy), `skipped` (no usable copy: left out),
    `never` (never refreshed: nothing to publish). `reason` says why it is not current; `copy_time` is when the
    published copy was made.
    """

    integration: str
    state: Literal["current", "busy", "kept", "skipped", "never"]
    reason: str = ""
    copy_time: dt.datetime | None = None

    @property
    def published(self) -> bool:
        return self.state in ("current", "busy", "kept")


@dataclass(frozen=True)
class Publication:
    counts: dict[str, int]                 # rows per published table
    accounts: dict[str, AccountCopy]       # every account asked for, in the order asked


def publish(published: Path, integrations: list[str], *, timeout_s: float = 600.0,
            required: Collection[str] = (),
            comments: Mapping[tuple[str, str], TableComment] | None = None,
            target: Path | None = None, memory_limit: str | None = None,
            earlier: Collection[Path] = ()) -> Publication:
    """Refresh the ready copies of `integrations` that are free, union every usable one into a new file and rename
    it over `target` (a workspace's file; default `published`). `published` locates the working files and ready
    copies (`state_dir`; the resource passes the workspace's file for both); only the copies of `integrations` are
    read, so a workspace's file holds its own accounts
    and nobody else's. An account whose copy cannot be made or read is left with its last good copy, or out; the
    others are published all the same. `required`: tables (`schema.table`) a working file must hold to be copied.
    `comments` (`comments.published_comments`) are written on the new file's tables and columns before it replaces
    the old one. `memory_limit`: of a working file opened to fold its write-ahead log in (`connect`). `earlier`: as
    for `integration_connection`, so that an account whose own run has not moved its working file yet is published
    all the same (a file some run is writing stays where it is until that run's account moves it)."""
    target = published if target is None else target
    for name in integrations:
        adopt_if_free(published, name, earlier)
    accounts = {name: refresh_ready_copy(published, name, required=required, memory_limit=memory_limit)
                for name in integrations}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(target.parent, exc) from None
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with file_lock(publish_lock(target), timeout_s=timeout_s, what=f"publishing {target}"):
        # Only the holder of this lock writes a temporary file: any other one is what a publish killed half way
        # (kill -9, a lost machine) left behind, and nothing else would ever remove it.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        # Each pass leaves out at least one more account or ends: at most one pass per account, plus one.
        for _ in range(len(integrations) + 1):
            sources = {name: ready_path(published, name) for name, copy in accounts.items() if copy.published}
            con = duckdb.connect(str(tmp))
            try:
                raw.apply_text_storage(con)  # the published copy is written as compactly and fast as working files
                counts = _union_into(con, sources)
                table_comments.apply(con, comments or table_comments.PYTHON_TABLES)
                con.execute("checkpoint")
            except _SourceFailed as exc:
                con.close()
                tmp.unlink(missing_ok=True)
                aside = set_aside(sources[exc.integration])
                accounts[exc.integration] = AccountCopy(
                    exc.integration, "skipped", f"{exc.reason}; moved that copy to {aside}")
                continue
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.close()
            break
        fsync(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    return Publication(counts, accounts)


def inventory(path: Path, *, writable: bool = False, memory_limit: str | None = None) -> dict[str, int]:
    """Rows per table (`schema.table`) of the published schemas in a DuckDB file, once it is known to be readable.
    `writable` folds a pending write-ahead log into the file first."""
    con = open_checked(path, read_only=not writable, memory_limit=memory_limit)
    try:
        if writable:
            con.execute("checkpoint")
            check_length(con, path)
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = current_database() and "
            "schema_name in (select unnest(?::varchar[])) order by all", [list(PUBLISHED_SCHEMAS)]).fetchall()
        return {f"{schema}.{table}": con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
                for schema, table in tables}
    except duckdb.Error as exc:
        raise unusable(path, exc) from None
    finally:
        con.close()


def refresh_ready_copy(published: Path, integration: str, *, required: Collection[str] = (),
                       memory_limit: str | None = None) -> AccountCopy:
    """Copy the integration's working file to its ready copy if nobody is writing it now and it changed since the
    last copy, once the copy is known to be good. A busy account keeps its previous ready copy; so does one whose
    working file cannot be used, if that copy is usable."""
    work, ready = working_path(published, integration), ready_path(published, integration)
    if not work.exists():
        if ready.exists():
            return _last_copy(integration, ready, f"its working file {work} is missing")
        return AccountCopy(integration, "never", "not refreshed yet")
    try:
        with file_lock(work.with_suffix(".lock"), timeout_s=0, what=f"integration {integration!r}"):
            try:
                # `writable`: fold the write-ahead log into the file so that the copy is complete on its own.
                expected = inventory(work, writable=work.with_name(work.name + ".wal").exists(),
                                     memory_limit=memory_limit)
            except WarehouseError as exc:
                return _last_copy(integration, ready, str(exc))
            missing = sorted(set(required) - set(expected))
            if missing:
                return _last_copy(integration, ready, f"its working file {work} lacks {', '.join(missing)}")
            for stale in ready.parent.glob(f".{ready.name}.tmp-*"):  # left by a copy killed half way
                stale.unlink(missing_ok=True)
            if ready.exists() and ready.stat().st_mtime_ns >= work.stat().st_mtime_ns and _readable(ready):
                return AccountCopy(integration, "current", copy_time=_mtime(ready))
            tmp = ready.with_name(f".{ready.name}.tmp-{os.getpid()}")
            shutil.copyfile(work, tmp)
            fsync(tmp)
            try:
                copied = inventory(tmp)
            except WarehouseError as exc:
                tmp.unlink(missing_ok=True)
                return _last_copy(integration, ready, f"its new copy could not be read back ({exc})")
            if copied != expected:
                tmp.unlink(missing_ok=True)
                differ = sorted(t for t in {*copied, *expected} if copied.get(t) != expected.get(t))
                return _last_copy(integration, ready, f"its new copy of {work} differs from it in "
                                                      f"{', '.join(differ[:5])}")
            os.replace(tmp, ready)
            return AccountCopy(integration, "current", copy_time=_mtime(ready))
    except WarehouseBusy:
        if ready.exists() and _readable(ready):
            return AccountCopy(integration, "busy", "another run is writing its working file; its last ready "
                                                    "copy is published", _mtime(ready))
        return AccountCopy(integration, "never", "its first refresh is still running")


def _last_copy(integration: str, ready: Path, reason: str) -> AccountCopy:
    if ready.exists() and _readable(ready):
        return AccountCopy(integration, "kept", reason, _mtime(ready))
    why = "it has no earlier copy" if not ready.exists() else f"its last copy {ready} cannot be read either"
    return AccountCopy(integration, "skipped", f"{reason}, and {why}")


def _readable(path: Path) -> bool:
    try:
        inventory(path)
    except WarehouseError:
        return False
    return True


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)


class _SourceFailed(Exception):
    def __init__(self, integration: str, reason: str) -> None:
        super().__init__(reason)
        self.integration = integration
        self.reason = reason


def _union_into(con: duckdb.DuckDBPyConnection, sources: Mapping[str, Path]) -> dict[str, int]:
    """Every account's published schemas into `con`'s database: table layouts first (the union of the columns of
    every copy, no rows read), then each account's rows in a transaction of its own, so a copy that cannot be read
    is known by name (`_SourceFailed`) and nothing of it stays."""
    aliases: dict[str, str] = {}
    tables: dict[tuple[str, str], list[str]] = {}
    for i, (name, path) in enumerate(sources.items()):
        alias = f"src{i}"
        try:
            con.execute(f"attach '{_sql_path(path)}' as {alias} (read_only)")
            rows = con.execute(
                "select schema_name, table_name from duckdb_tables() where database_name = ? and schema_name in "
                "(select unnest(?::varchar[])) order by all", [alias, list(PUBLISHED_SCHEMAS)]).fetchall()
        except duckdb.Error as exc:
            raise _SourceFailed(name, f"its copy {path} cannot be opened ({str(exc).strip()})") from None
        aliases[name] = alias
        for schema, table in rows:
            if schema == raw.SCHEMA and table.startswith(raw.STAGED_PREFIX):
                continue  # what a failed or killed full sync staged
            tables.setdefault((schema, table), []).append(alias)
    for (schema, table), having in sorted(tables.items()):
        con.execute(f'create schema if not exists "{schema}"')
        layout = " union all by name ".join(f'(select * from {a}."{schema}"."{table}" limit 0)' for a in having)
        con.execute(f'create table "{schema}"."{table}" as {layout}')
    for name, alias in aliases.items():
        try:
            with transaction(con):
                for (schema, table), having in sorted(tables.items()):
                    if alias in having:
                        con.execute(f'insert into "{schema}"."{table}" by name '
                                    f'select * from {alias}."{schema}"."{table}"')
        except duckdb.Error as exc:
            raise _SourceFailed(name, f"its copy {sources[name]} cannot be read ({str(exc).strip()})") from None
    counts = {f"{schema}.{table}": con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
              for schema, table in sorted(tables)}
    for alias in aliases.values():
        con.execute(f"detach {alias}")
    return counts


def _sql_path(path: Path) -> str:
    # ATTACH takes no bound parameters; the path is ours (state_dir + a validated integration name).
    return str(path).replace("'", "''")


