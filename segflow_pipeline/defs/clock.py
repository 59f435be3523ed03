"""The run's "now": one moment per run that every asset uses for "today" (sync windows, MRR, marts, report).

SEGFLOW_AS_OF (config.as_of) when set, so a run can be repeated as of any instant (the demo sets it to the moment
its sandbox account was built at); otherwise the moment the run started, so a run that crosses UTC midnight still
computes every table for the same day.
"""

import datetime as dt

import dagster as dg

from segflow_pipeline import config


def run_as_of(context: dg.AssetExecutionContext) -> dt.datetime:
    """The run's moment as naive UTC (the raw tables hold naive UTC timestamps)."""
    fixed = config.as_of()
    if fixed is not None:
        return fixed
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.start_time if record is not None else None
    if started is None:
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return dt.datetime.fromtimestamp(started, dt.timezone.utc).replace(tzinfo=None)


def epoch_seconds(moment: dt.datetime) -> float:
    """A naive UTC moment as epoch seconds."""
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()
