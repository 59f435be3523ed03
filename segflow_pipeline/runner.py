"""Runs the refresh job in this process, exactly as the schedule and the UI do, and reports failures readably.

Used by `segflow refresh` and `segflow demo`. Runs are recorded in DAGSTER_HOME when it is set (so they show in
the UI), else in a temporary instance. Ctrl-C or SIGTERM stop the run where it is (nothing after it runs, nothing
is retried or published) and the command exits 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.stripe_api.keys import redact

PUBLISH_STEP = "publish__segflow_duckdb"


def load_definitions() -> dg.Definitions:
    from segflow_pipeline.definitions import defs

    return defs() if callable(defs) else defs


@contextlib.contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The instance in DAGSTER_HOME when it is set, else a temporary one.

    Dagster creates DAGSTER_HOME's sqlite tables the first time a process opens it; two refreshes starting at once
    in a new DAGSTER_HOME raced on that ("table ... already exists"). The instance is opened under a lock in
    DAGSTER_HOME, so one process creates the tables and the other finds them.
    """
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance
        return
    from segflow_pipeline.warehouse.files import file_lock

    with file_lock(Path(home) / ".segflow-instance.lock", timeout_s=300, what=f"DAGSTER_HOME ({home})"):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # every storage opened, its tables created
    with instance:
        yield instance


class _Signals:
    """The numbers of the signals that reach a Python handler while active, whichever the handler (Dagster installs
    its own for SIGINT and SIGTERM while a run executes): `signal.set_wakeup_fd` writes each one to a socket."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._reader: socket.socket | None = None

    def last(self) -> int:
        """The last SIGINT or SIGTERM received so far (SIGINT if none was seen)."""
        if self._reader is not None:
            with contextlib.suppress(BlockingIOError):
                self.seen.extend(self._reader.recv(256))
        return next((s for s in reversed(self.seen) if s in (signal.SIGINT, signal.SIGTERM)), signal.SIGINT)

    @contextlib.contextmanager
    def watching(self) -> Iterator["_Signals"]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._reader = reader
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        # Outside Dagster's execution SIGTERM would end the process without a word: make it an interrupt too.
        term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, term)
            signal.set_wakeup_fd(previous)
            self._reader = None
            reader.close()
            writer.close()


def refresh(integration: str | None = None, *, full: bool = False) -> int:
    """Run `daily_refresh_job` for one integration or each in turn; non-zero exit if any failed."""
    from segflow_pipeline.defs.integrations import INTEGRATIONS, PARTITIONS, UNUSABLE_ENTRIES

    defs = load_definitions()
    job = defs.resolve_job_def("daily_refresh_job")
    names = [i.name for i in INTEGRATIONS]
    if integration is not None and integration not in names:
        print(f"segflow: no integration named {integration!r}; configured: {', '.join(names)}", file=sys.stderr)
        return 2
    targets = [integration] if integration else names
    run_config = {"ops": {"stripe_sync": {"config": {"mode": "full" if full else "auto"}}},
                  "loggers": {"console": {"config": {"log_level": "INFO"}}}}
    published = config.duckdb_path()
    failed: list[str] = []
    refreshed: list[str] = []
    with _Signals().watching() as signals, dagster_instance() as instance:
        for name in targets:
            try:
                result = job.execute_in_process(
                    instance=instance, run_config=run_config, raise_on_error=False,
                    partition_key=name if PARTITIONS is not None else None,
                    tags={"segflow/integration": name, "segflow/trigger": "cli"},
                )
            except KeyboardInterrupt:
                return _interrupted(name, None, signals.last())
            if _was_interrupted(result):
                return _interrupted(name, result, signals.last())
            for warning in publish_warnings(result):
                print(f"segflow: warning: {warning}", file=sys.stderr)
            if result.success:
                refreshed.append(name)
                print(f"{name}: refreshed (run {result.run_id})")
            else:
                failed.append(name)
                for message in failure_messages(result):
                    print(f"segflow: {name}: {message}", file=sys.stderr)
    if integration is None:
        for problem in UNUSABLE_ENTRIES:  # entries of the integrations file that name no account
            failed.append(f"the entry at {problem.split(': ', 1)[0]}")
            print(f"segflow: {problem}", file=sys.stderr)
    if failed:
        print(f"segflow: refresh failed for {', '.join(failed)}; {_published_state(published, refreshed)}",
              file=sys.stderr)
        return 1
    return 0


def _published_state(published: Path, refreshed: list[str]) -> str:
    if not published.exists():
        return f"nothing has been published yet ({published} does not exist)"
    if refreshed:
        return "the published file holds their last good data"
    return "the published file keeps its previous data"


def _was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    for event in result.all_events:
        if event.event_type_value == "RUN_CANCELED":
            return True
        if event.is_step_failure and event.step_failure_data:
            source = getattr(event.step_failure_data.error_source, "name", None)
            error = event.step_failure_data.error
            if source == "INTERRUPT" or (error is not None and error.cls_name in (
                    "KeyboardInterrupt", "DagsterExecutionInterruptedError")):
                return True
    return False


def _interrupted(name: str, result: dg.ExecuteInProcessResult | None, signum: int) -> int:
    published = result is not None and any(
        e.event_type_value == "STEP_SUCCESS" and e.step_key == PUBLISH_STEP for e in result.all_events)
    where = (f"after publishing {name!r}" if published
             else f"while refreshing {name!r}; nothing was published and nothing is retried")
    print(f"segflow: interrupted by {signal.Signals(signum).name} {where}. Run `segflow refresh` again to "
          "finish.", file=sys.stderr)
    return 128 + signum


def publish_warnings(result: dg.ExecuteInProcessResult) -> list[str]:
    """The lines of accounts the run's publish left at an older copy, or out (the failed `includes_*` checks)."""
    lines = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.check_name.startswith("includes_") and not evaluation.passed:
            summary = evaluation.metadata.get("summary")
            text = getattr(summary, "value", summary)
            if text and text != "none":
                lines.append(redact(str(text)))
    return lines


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            user = event.step_failure_data.user_failure_data
            if user is not None and user.description:
                messages.append(f"{event.step_key}: {redact(user.description.strip())}")
                continue
            error = event.step_failure_data.error
            # The user-facing cause is the innermost error (e.g. StripeSetupError), not Dagster's wrapper.
            while error.cause is not None:
                error = error.cause
            messages.append(f"{event.step_key}: {redact(error.message.strip())}")
    return messages or ["the run failed; see the Dagster run logs"]


def print_summary(published: Path, months: int = 12) -> None:
    import duckdb

    con = duckdb.connect(str(published), read_only=True)
    try:
        rows = con.execute(
            """select currency, strftime(date, '%Y-%m') as month, mrr, arr, paying_customers
               from metrics.mrr_daily
               where date = least(last_day(date), current_date)
                 and date > current_date - interval (? || ' months')
               order by currency, month""", [str(months)]).fetchall()
    finally:
        con.close()
    print(f"\nMRR, end of month, last {months} months:")
    print(f"{'currency':<9}{'month':<9}{'mrr':>16}{'arr':>18}{'customers':>11}")
    for currency, month, mrr, arr, customers in rows:
        print(f"{currency:<9}{month:<9}{mrr:>16,.2f}{arr:>18,.2f}{customers:>11}")
    print(f"\nDuckDB file: {published.resolve()}")
    reports = sorted((published.parent / "reports").glob("*/mrr.html"))
    for report in reports:
        print(f"MRR chart ({report.parent.name}): {report.resolve()} (PNG beside it)")
