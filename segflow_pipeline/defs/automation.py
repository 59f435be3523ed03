"""The one refresh job and its daily schedule (UTC 06:00 unless SEGFLOW_REFRESH_CRON / SEGFLOW_REFRESH_TIMEZONE)."""

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.config import Integration
from segflow_pipeline.defs import integrations


def run_tags(integration: Integration) -> dict[str, str]:
    """Tags of an account's run: the run queue allows one run per `segflow/integration` at a time (deploy/
    dagster.yaml); `segflow/workspace` names the file the run publishes to ("none" for a refused workspace)."""
    return {"segflow/integration": integration.name, "segflow/workspace": integration.workspace or "none"}


def automation(settings: config.Settings) -> dg.Definitions:
    """`daily_refresh_job` over every asset and its daily schedule, for the accounts and the cron of `settings`
    (built with the Definitions, `definitions.py`)."""
    accounts = integrations.load(settings)
    daily_refresh_job = dg.define_asset_job(
        "daily_refresh_job",
        selection=dg.AssetSelection.all(),
        partitions_def=accounts.partitions,
        description="Stripe → DuckDB → daily MRR → published file, for every configured account.",
    )

    @dg.schedule(
        job=daily_refresh_job,
        cron_schedule=settings.refresh_cron,
        execution_timezone=settings.refresh_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def daily_refresh_job_schedule(context: dg.ScheduleEvaluationContext):
        """One run per integration per day; a failing account fails only its own run."""
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        if accounts.partitions is None:
            yield dg.RunRequest(run_key=day, tags=run_tags(accounts.integrations[0]))
            return
        for integration in accounts.integrations:
            yield dg.RunRequest(run_key=f"{day}:{integration.name}", partition_key=integration.name,
                                tags=run_tags(integration))

    return dg.Definitions(jobs=[daily_refresh_job], schedules=[daily_refresh_job_schedule])
