"""The code location: resolves the settings once (`config.settings`), then assembles everything under `defs/`;
nothing is defined here."""

from pathlib import Path

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.defs import integrations
from segflow_pipeline.defs.automation import automation
from segflow_pipeline.defs.resources import resources


@dg.definitions
def defs() -> dg.Definitions:
    settings = config.settings()
    integrations.load(settings)  # before the asset modules, which take their partitions from it
    return dg.Definitions.merge(
        dg.load_from_defs_folder(project_root=Path(__file__).parent.parent),
        resources(settings),
        automation(settings),
        dg.Definitions(executor=dg.in_process_executor),
    )
