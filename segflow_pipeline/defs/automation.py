"""The one refresh job and its daily schedule (UTC 06:00 unless SEGFLOW_REFRESH_CRON / SEGFLOW_REFRESH_TIMEZONE)."""


import os

import dagster as dg

from segflow_pipeline.defs.integrations import INTEGRATIONS, PARTITIONS

daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.all(),
    partitions_def=PARTITIONS,
    description="Stripe → DuckDB → daily MRR → published file, for every configured account.",
)


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
        yield dg.RunRequest(run_key=day, tags={"segflow/integration": INTEGRATIONS[0].name})
        return
    for integration in INTEGRATIONS:
        yield dg.RunRequest(run_key=f"{day}:{integration.name}", partition_key=integration.name,
                            tags={"segflow/integration": integration.name})
