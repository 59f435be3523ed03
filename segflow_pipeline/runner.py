"""Runs the refresh job in this process, exactly as the schedule and the UI do, and reports failures readably.

Used by `segflow refresh` and `segflow demo`. Runs are recorded in DAGSTER_HOME when it is set (so they show in
the UI), else in a temporary instance.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import dagster as dg

from segflow_pipeline.stripe_api.keys import redact


def load_definitions() -> dg.Definitions:
    from segflow_pipeline.definitions import defs

    return defs() if callable(defs) else defs


def _instance() -> contextlib.AbstractContextManager[dg.DagsterInstance]:
    if os.environ.get("DAGSTER_HOME"):
        return contextlib.nullcontext(dg.DagsterInstance.get())
    return dg.DagsterInstance.ephemeral()


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
    failed: list[str] = []
    with _instance() as instance:
        for name in targets:
            result = job.execute_in_process(
                instance=instance, run_config=run_config, raise_on_error=False,
                partition_key=name if PARTITIONS is not None else None,
                tags={"segflow/integration": name, "segflow/trigger": "cli"},
            )
            if result.success:
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
        print(f"segflow: refresh failed for {', '.join(failed)}; the published file keeps its previous data",
              file=sys.stderr)
        return 1
    return 0


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
