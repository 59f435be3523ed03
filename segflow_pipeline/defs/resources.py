"""Binds the resources in one place, the only place `dg.EnvVar` appears. Keys are never resource config:
`StripeResource` names the variables that hold them."""

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.resources.stripe import StripeResource
from segflow_pipeline.resources.warehouse import WarehouseResource


def resources(settings: config.Settings) -> dg.Definitions:
    """The resources, each setting given as the variable it comes from when that is set (Dagster resolves it for
    each run and shows it in the UI), else the default of `settings` (built with the Definitions, `definitions.py`)."""
    def env_or(variable: str, default):
        return dg.EnvVar(variable) if config.is_set(variable) else default

    return dg.Definitions(resources={
        "stripe": StripeResource(api_base=env_or(config.API_BASE_ENV, None)),
        "duckdb": WarehouseResource(database=env_or(config.DUCKDB_PATH_ENV, str(settings.duckdb_path)),
                                    memory_limit=env_or(config.MEMORY_LIMIT_ENV, None)),
    })
