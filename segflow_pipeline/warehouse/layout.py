"""Where an account's files live, the locks that keep writers apart, and how files move without being torn.

Paths are relative to `home`, the published file of the account's workspace (SEGFLOW_DUCKDB_PATH for the default
workspace, `config.workspace_path` for the others): working files, ready copies, the publish lock and pending
reports are in `.segflow/` beside it, published reports in `reports/` beside it. `warehouse.files` says what
each file is for. No Dagster, no DuckDB here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Collection, Iterator
from pathlib import Path


class WarehouseError(RuntimeError):
    """A DuckDB file the pipeline cannot use; the message names it and says what to do. No retry fixes it."""


class WarehouseBusy(WarehouseError):
    """Another refresh holds the integration's working file."""


class CannotWrite(WarehouseError):
    """The directory of the DuckDB files cannot be written."""


def state_dir(home: Path) -> Path:
    return home.parent / ".segflow"


def working_path(home: Path, integration: str) -> Path:
    return state_dir(home) / f"{integration}.duckdb"


def ready_path(home: Path, integration: str) -> Path:
    return state_dir(home) / f"{integration}.ready.duckdb"


def reports_dir(home: Path, integration: str) -> Path:
    """Where the published reports of an integration are (beside its workspace's published file)."""
    return home.parent / "reports" / integration


def pending_reports_dir(home: Path, integration: str, run_id: str) -> Path:
    """Where a run writes its reports (beside `home`, its workspace's file) until the report, once complete, moves
    them to `reports_dir`."""
    return state_dir(home) / "reports" / f"{integration}.{run_id}"


def publish_reports(published: Path, run_id: str, target: Path | None = None) -> list[str]:
    """Move the reports the run `run_id` wrote (`pending_reports_dir` of `target`) into place beside `target` (its
    workspace's file, default `published`, the default workspace's), replacing each integration's previous ones;
    drop what older runs left pending (they never published). Returns the integrations whose reports were
    published."""
    pending = state_dir(target or published) / "reports"
    done: list[str] = []
    for folder in sorted(pending.glob(f"*.{run_id}")) if pending.exists() else []:
        integration = folder.name[: -len(run_id) - 1]
        target_dir = reports_dir(target or published, integration)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        # an account that moved to another workspace leaves its reports in the old one no more
        if target is not None and target != published:
            shutil.rmtree(reports_dir(published, integration), ignore_errors=True)
        old = target_dir.with_name(f".{target_dir.name}.old-{run_id}")
        if target_dir.exists():
            os.replace(target_dir, old)
        os.replace(folder, target_dir)
        shutil.rmtree(old, ignore_errors=True)
        for stale in pending.glob(f"{integration}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        done.append(integration)
    return done


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


def move_file(source: Path, target: Path) -> None:
    """Move a file by rename, or, across file systems (a volume per workspace), by a copy written beside `target`,
    flushed and renamed into place before `source` is removed."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(source, tmp)
        fsync(tmp)
        os.replace(tmp, target)
        source.unlink()
    fsync_dir(target.parent)


def adopt(home: Path, integration: str, earlier: Collection[Path], timeout_s: float) -> Path | None:
    """Move `integration`'s working file (with its write-ahead log and ready copy) from beside the first of `earlier`
    that has one to beside `home`, under the earlier place's lock (the caller holds the new one). Returns where it
    was, or None if no earlier place has one."""
    for before in earlier:
        old = working_path(before, integration)
        if before == home or not old.exists():
            continue
        with file_lock(old.with_suffix(".lock"), timeout_s=timeout_s, what=f"integration {integration!r}"):
            if not old.exists():  # moved by a run that held the lock before us
                continue
            new = working_path(home, integration)
            for source, target in ((old.with_name(old.name + ".wal"), new.with_name(new.name + ".wal")),
                                   (ready_path(before, integration), ready_path(home, integration)),
                                   (old, new)):  # the working file last: while it is there, the move is not done
                if source.exists():
                    move_file(source, target)
        return old
    return None


def adopt_if_free(home: Path, integration: str, earlier: Collection[Path]) -> None:
    """`_adopt` without waiting: skipped while a run holds either lock (that run moves the file itself)."""
    path = working_path(home, integration)
    if path.exists() or not any(working_path(before, integration).exists() for before in earlier):
        return
    with contextlib.suppress(WarehouseBusy):
        with file_lock(path.with_suffix(".lock"), timeout_s=0, what=f"integration {integration!r}"):
            if not path.exists():
                adopt(home, integration, earlier, timeout_s=0)


def publish_lock(target: Path) -> Path:
    """The lock a publish to `target` holds: one per published file, so one per workspace."""
    return state_dir(target) / "publish.lock"


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fsync(path)
