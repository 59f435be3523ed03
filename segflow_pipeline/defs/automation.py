"""The one refresh job and its daily schedule (UTC 06:00 unless SEGFLOW_REFRESH_CRON / SEGFLOW_REFRESH_TIMEZONE)."""


import os

import dagster as dg

from segflow_pipeline.config import Integration
from segflow_pipeline.defs.integrations import INTEGRATIONS, PARTITIONS

daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.all(),
    partitions_def=PARTITIONS,
    description="Stripe → DuckDB → daily MRR → published file, for every configured account.",
)


def run_tags(integration: Integration) -> dict[str, str]:
    """Tags of an account's run: the run queue allows one run per `segflow/integration` at a time (deploy/
    dagster.yaml); `segflow/workspace` names the file the run publishes to ("none" for a refused workspace)."""
    return {"segflow/integration": integration.name, "segflow/workspace": integration.workspace or "none"}


@dg.schedule(
    job=daily_refresh_job,
    cron_schedule=os.environ.get("SEGFLOW_REFRESH_CRON", "0 6 * * *"),
    execution_timezone=os.environ.get("SEGFLOW_REFRESH_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_refresh_job_schedule(context: dg.ScheduleEvaluationContext):
    """One run per integration per day; a failing account fails only its own run."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    if PARTITIONS is None:
        yield dg.RunRequest(run_key=day, tags=run_tags(INTEGRATIONS[0]))
        return
    for integration in INTEGRATIONS:
        yield dg.RunRequest(run_key=f"{day}:{integration.name}", partition_key=integration.name,
                            tags=run_tags(integration))
