"""Runs the refresh job in this process, exactly as the schedule and the UI do, and tells a person what happened.

Used by `segflow refresh` and `segflow demo`. Runs are recorded in DAGSTER_HOME when it is set (the CLI sets it, so
they show in the UI), else in a temporary instance. While a run goes, one line per log message (no stack traces);
at the end either a headline (MRR today per currency, its change over 30 days, where everything is) or one failure
summary: each failed check with a few of its offending rows and what to do, and any other error with its stack
trace once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.stripe_api.keys import redact

ROWS_SHOWN = 3
PUBLISHED = dg.AssetKey(["publish", "segflow_duckdb"])
DOCS = "docs/mrr.md (what MRR and each movement mean), docs/tables.md (every table and column)"


def load_definitions() -> dg.Definitions:
    from segflow_pipeline.definitions import defs

    return defs() if callable(defs) else defs


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@contextlib.contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The instance in DAGSTER_HOME when it is set, else a temporary one.

    Dagster creates DAGSTER_HOME's sqlite tables the first time a process opens it; two refreshes starting at once
    in a new DAGSTER_HOME raced on that ("table ... already exists"). The instance is opened under a lock in
    DAGSTER_HOME, so one process creates the tables and the other finds them.
    """
    home = config.dagster_home()
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


# --- while the run goes: one line per message -------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """`HH:MM:SS step  message`, the message's first line only: a failure's details and its stack trace come once,
    in the summary at the end."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        message = str(meta.get("orig_message") or record.getMessage())
        event = meta.get("dagster_event")
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        if event is not None and event.is_step_failure:
            message = "failed (details at the end)"
        elif (event is not None and event.is_step_skipped) or message.startswith("Dependencies for step "):
            message, level = "skipped: a step it depends on failed", ""
        first = message.strip().splitlines()[0] if message.strip() else ""
        stamp = dt.datetime.fromtimestamp(record.created, dt.timezone.utc).strftime("%H:%M:%S")
        step = meta.get("step_key") or ""
        return redact(f"{stamp} {step:<34} {level}{first}")


class _SkipRunEvents(logging.Filter):
    """The run's own failure event repeats a step's error; the summary at the end says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        return event is None or not event.is_run_failure


@dg.logger(config_schema={"log_level": dg.Field(str, default_value="INFO")},
           description="One line per message on stderr; failures in full once, in the summary at the end.")
def one_line_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("segflow", level=init_context.logger_config["log_level"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(_SkipRunEvents())
    logger.addHandler(handler)
    return logger


# --- the run ------------------------------------------------------------------------------------------------------


def refresh(integration: str | None = None, *, full: bool = False, out: TextIO | None = None) -> int:
    """Run `daily_refresh_job` for one integration or each in turn; non-zero exit if any failed. Failures are
    summarized at the end, on stderr (or `out`). Ctrl-C or SIGTERM stop the run where it is (nothing after it runs,
    nothing is retried or published) and the command exits 128 + the signal's number."""
    from segflow_pipeline.defs import integrations

    err = out or sys.stderr
    defs = load_definitions()
    accounts = integrations.accounts()  # those the Definitions were built with
    job = defs.resolve_job_def("daily_refresh_job").with_logger_defs({"segflow": one_line_logger})
    names = [i.name for i in accounts.integrations]
    workspace_of = {i.name: i.workspace for i in accounts.integrations}
    if integration is not None and integration not in names:
        print(f"segflow: no integration named {integration!r}; configured: {', '.join(names)}", file=err)
        return 2
    targets = [integration] if integration else names
    run_config = {"ops": {"stripe_sync": {"config": {"mode": "full" if full else "auto"}}},
                  "loggers": {"segflow": {"config": {"log_level": "INFO"}}}}
    published = config.duckdb_path()
    failures: list[RunFailure] = []
    with _Signals().watching() as signals, dagster_instance() as instance:
        for name in targets:
            try:
                result = job.execute_in_process(
                    instance=instance, run_config=run_config, raise_on_error=False,
                    partition_key=name if accounts.partitions is not None else None,
                    tags={"segflow/integration": name, "segflow/workspace": workspace_of[name] or "none",
                          "segflow/trigger": "cli"},
                )
            except KeyboardInterrupt:
                return _interrupted(name, None, signals.last())
            if _was_interrupted(result):
                return _interrupted(name, result, signals.last())
            for warning in publish_warnings(result):
                print(f"segflow: warning: {warning}", file=err)
            if result.success:
                print(f"{name}: refreshed (run {result.run_id})", file=out or sys.stdout)
            else:
                failures.append(run_failure(result, name, defs))
        home = instance.root_directory if config.dagster_home() else None
    problems = list(accounts.unusable_entries) if integration is None else []
    for problem in problems:  # entries of the integrations file that name no account
        print(f"segflow: {problem}", file=err)
    if failures:
        for failure in failures:
            workspace = workspace_of.get(failure.integration)  # each account's own workspace's file
            print(failure_summary(failure, config.workspace_path(workspace, published=published) if workspace
                                  else published, home), file=err)
    return 1 if failures or problems else 0


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
    published = result is not None and _published(result)
    where = (f"after publishing {name!r}" if published
             else f"while refreshing {name!r}; nothing was published and nothing is retried")
    print(f"segflow: interrupted by {signal.Signals(signum).name} {where}. Run `segflow refresh` again to "
          "finish.", file=sys.stderr)
    return 128 + signum


def _published(result: dg.ExecuteInProcessResult) -> bool:
    """Whether the run's publish step succeeded (its data is in the published file): the step that materialized
    the published file, whatever Dagster names it, ended well."""
    steps = {e.step_key for e in result.all_events
             if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == PUBLISHED}
    return any(e.event_type_value == "STEP_SUCCESS" and e.step_key in steps for e in result.all_events)


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


# --- what failed -------------------------------------------------------------------------------------------------


@dataclass
class FailedCheck:
    asset: str  # "marts/customer_metrics_monthly"
    name: str
    description: str
    inputs: list[str]  # the tables the asset reads, "metrics.mrr_daily"
    failing_rows: int | None
    rows: list[dict[str, str]]


@dataclass
class RunFailure:
    integration: str
    run_id: str
    checks: list[FailedCheck] = field(default_factory=list)
    errors: list[tuple[str, str, str | None]] = field(default_factory=list)  # step, message, stack (None if none)
    published: bool = False  # the run's data was published before what failed (e.g. the report)


def run_failure(result: dg.ExecuteInProcessResult, integration: str, defs: dg.Definitions) -> RunFailure:
    """The failed checks (with their rows) and the step errors no failed check explains, from a run's events."""
    graph = defs.resolve_asset_graph()
    failure = RunFailure(integration=integration, run_id=result.run_id, published=_published(result))
    explained: set[str] = set()
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        data = event.asset_check_evaluation_data
        if data.passed or data.severity != dg.AssetCheckSeverity.ERROR:
            continue
        spec = graph.get_check_spec(dg.AssetCheckKey(data.asset_key, data.check_name))
        metadata = {k: getattr(v, "value", v) for k, v in data.metadata.items()}
        count = metadata.get("failing_rows")
        failure.checks.append(FailedCheck(
            asset=data.asset_key.to_user_string(), name=data.check_name, description=spec.description or "",
            inputs=sorted(".".join(k.path) for k in graph.get(data.asset_key).parent_keys),
            failing_rows=int(count) if isinstance(count, (int, float)) else None,
            rows=markdown_rows(str(metadata.get("first_failures", "")))))
        if event.step_key:
            explained.add(event.step_key)
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data and event.step_failure_data.error):
            continue
        if event.step_key in explained:
            continue
        user = event.step_failure_data.user_failure_data
        error = event.step_failure_data.error
        if user is not None and user.description:
            # A dg.Failure raised on purpose: its description says what to do; its stack trace says nothing.
            failure.errors.append((event.step_key or "", redact(user.description.strip()), None))
            continue
        # The user-facing cause is the innermost error (e.g. StripeSetupError), not Dagster's wrapper.
        inner = error
        while inner.cause is not None:
            inner = inner.cause
        expected = inner.cls_name in ("StripeSetupError", "StripeAPIFailure", "WarehouseBusy", "ConfigError")
        # The stack of the error itself (our code's frames), not of Dagster's wrapper around it.
        failure.errors.append((event.step_key or "", redact(inner.message.strip()),
                               None if expected else redact("".join(inner.stack) or error.to_string())))
    return failure


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed step: `<step>: <what went wrong>`."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            user = event.step_failure_data.user_failure_data
            if user is not None and user.description:
                messages.append(f"{event.step_key}: {redact(user.description.strip())}")
                continue
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            messages.append(f"{event.step_key}: {redact(error.message.strip())}")
    return messages or ["the run failed; see the Dagster run logs"]


def markdown_rows(table: str) -> list[dict[str, str]]:
    """The rows of a markdown table as written by `defs/reporting.preview`."""
    lines = [line.strip() for line in table.strip().splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line))) for line in lines[2:]]


def what_to_do(check: FailedCheck, integration: str, working: Path) -> str:
    """The next step for a person, by the kind of check."""
    group, _, table = check.asset.partition("/")
    rerun = "then run `segflow refresh` again"
    if group == "marts":
        return (f"The rows above break a property declared in dbt_like_sql/marts/{table}.sql (its `-- test:` lines). "
                f"If the rows are right, the model or its test is wrong: fix that file. If they are wrong, follow "
                f"them back to the tables it reads ({', '.join(check.inputs)}) in this run's working file "
                f"{working} (open it read-only: duckdb -readonly {working}); {rerun}.")
    if group == "metrics":
        return (f"Look the rows' subscriptions, customers and days up in the stripe.* tables of {working} or in "
                f"Stripe's dashboard. If Stripe's data is wrong, correct it in Stripe; if it is right, the MRR rules "
                f"(docs/mrr.md) disagree with it: report the rows with the run id. {rerun[0].upper() + rerun[1:]}.")
    if group == "stripe":
        return "The stored copy of Stripe is inconsistent: run `segflow refresh --full` to read the account anew."
    return "Run `segflow refresh --full`; if it fails the same way, report the run id."


def failure_summary(failure: RunFailure, published: Path, dagster_home: str | None) -> str:
    """What a person reads after a failed refresh: what failed, a few offending rows, what to do, where to look."""
    from segflow_pipeline.warehouse import files

    working = files.working_path(published, failure.integration)
    lines = ["", f"segflow: the refresh of '{failure.integration}' FAILED (run {failure.run_id})."]
    for check in failure.checks:
        shown = check.rows[:ROWS_SHOWN]
        lines.append(f"\n  Failed check: {check.asset} · {check.name}")
        if check.description:
            lines += _wrap(check.description, "    ")
        count = f"{check.failing_rows} row(s) break it" if check.failing_rows is not None else "rows break it"
        lines.append(f"    {count}" + (f"; the first {len(shown)}:" if shown else "."))
        for row in shown:
            lines += _wrap(", ".join(f"{k}={v}" for k, v in row.items()), "      - ", "        ")
        lines += _wrap("What to do: " + what_to_do(check, failure.integration, working), "    ")
    for step, message, stack in failure.errors:
        # One line, unwrapped: a message is copied and searched for.
        lines.append(f"\nsegflow: {failure.integration}: {step}: {' '.join(message.split())}")
        if stack:
            lines.append("    Stack trace:")
            lines += ["      " + line for line in stack.rstrip().splitlines()]
    lines.append("")
    if failure.published:
        lines += _wrap(f"This run published its data: {published} holds it ({_published_at(published)}). What failed "
                       "came after; the charts in reports/ beside it are those of the last run whose report "
                       "succeeded.", "  ")
    elif published.exists():
        lines += _wrap(f"This run published nothing; the published file keeps its previous data: {published} and the "
                       f"charts in reports/ beside it are the last successful refresh's ({_published_at(published)}).",
                       "  ")
    else:
        lines += _wrap(f"This run published nothing, and nothing has been published yet ({published} does not "
                       "exist).", "  ")
    if dagster_home:
        lines += _wrap(f"Every check result with up to 20 rows is in the Dagster UI: `make ui` (runs are kept in "
                       f"{dagster_home}) → Runs → {failure.run_id[:8]}.", "  ")
    return "\n".join(lines)


def _published_at(published: Path) -> str:
    moment = dt.datetime.fromtimestamp(published.stat().st_mtime, dt.timezone.utc)
    return f"written {moment:%Y-%m-%d %H:%M} UTC"


def _wrap(text: str, indent: str, subsequent: str | None = None, width: int = 110) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent,
                         subsequent_indent=subsequent if subsequent is not None else indent,
                         break_long_words=False, break_on_hyphens=False) or [indent]


# --- after a successful run: the headline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrencyLine:
    integration: str
    currency: str
    day: dt.date
    mrr: Decimal
    mrr_30_days_ago: Decimal
    paying_customers: int

    @property
    def change(self) -> Decimal:
        return self.mrr - self.mrr_30_days_ago

    @property
    def change_pct(self) -> Decimal | None:
        if self.mrr_30_days_ago == 0:
            return None
        return (self.change * 100 / self.mrr_30_days_ago).quantize(Decimal("0.1"))


def headline_rows(published: Path) -> list[CurrencyLine]:
    """Per integration and currency: MRR on the series' last day (the run's today), 30 days before, paying
    customers. A currency whose series starts later than 30 days ago had 0 then."""
    import duckdb

    con = duckdb.connect(str(published), read_only=True)
    try:
        rows = con.execute(
            """with last as (select integration, max(date) as day from metrics.mrr_daily group by integration)
               select t.integration, t.currency, t.date, t.mrr, coalesce(b.mrr, 0), t.paying_customers
               from metrics.mrr_daily t
               join last l on l.integration = t.integration and l.day = t.date
               left join metrics.mrr_daily b on b.integration = t.integration and b.currency = t.currency
                   and b.date = t.date - interval 30 day
               order by t.integration, t.currency""").fetchall()
    finally:
        con.close()
    return [CurrencyLine(i, c, d, Decimal(m), Decimal(b), int(p)) for i, c, d, m, b, p in rows]


def print_headline(published: Path, *, dagster_home: Path | None, out: TextIO | None = None) -> None:
    """The lines a person reads first after a demo or refresh: MRR today, its 30-day change, paying customers,
    and where the file, the charts and the UI are."""
    out = out or sys.stdout
    rows = headline_rows(published)
    rule = "─" * 92
    print(f"\n{rule}", file=out)
    for integration in sorted({r.integration for r in rows}):
        mine = [r for r in rows if r.integration == integration]
        day = mine[0].day
        print(f"MRR today ({day:%Y-%m-%d}, end of day UTC), integration '{integration}'", file=out)
        print(f"  {'currency':<9}{'MRR':>16}   {'vs 30 days ago (' + f'{day - dt.timedelta(days=30):%Y-%m-%d}' + ')':<34}"
              f"{'paying customers':>17}", file=out)
        for r in mine:
            pct = "new" if r.change_pct is None else f"{r.change_pct:+,.1f} %"
            change = f"{r.change:+,.2f} ({pct})"
            print(f"  {r.currency.upper():<9}{r.mrr:>16,.2f}   {change:<34}{r.paying_customers:>17,}", file=out)
        if not mine:
            print("  no MRR yet", file=out)
    if not rows:
        print("No MRR yet: the account has no counting subscriptions.", file=out)
    print("", file=out)
    print(f"  DuckDB file  {published.resolve()}   (duckdb -readonly {published.resolve()})", file=out)
    for report in sorted((published.parent / "reports").glob("*/mrr.html")):
        print(f"  Charts       {report.resolve()}   (mrr.png, bridge.png beside it)", file=out)
    ui = "make ui   (or: .venv/bin/segflow ui) → http://127.0.0.1:3000"
    print(f"  Dagster UI   {ui}" + (f"; this run is in {dagster_home}" if dagster_home else ""), file=out)
    print(f"  Definitions  {DOCS}", file=out)
    print(rule, file=out)

