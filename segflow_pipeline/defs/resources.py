"""Binds the resources in one place. Keys are never resource config: `StripeResource` names the variables."""

import dagster as dg

from segflow_pipeline.config import duckdb_path
from segflow_pipeline.resources.stripe import StripeResource
from segflow_pipeline.resources.warehouse import WarehouseResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        "stripe": StripeResource(),
        "duckdb": WarehouseResource(database=str(duckdb_path())),
    })
