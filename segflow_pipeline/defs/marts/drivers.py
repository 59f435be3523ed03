"""The check that marts/mrr_drivers_monthly (the bridge split by product and billing interval) adds up to
marts/mrr_bridge_monthly to the cent, in every month and column.

The two are computed from different inputs (the drivers from metrics.mrr_customer_movements shared out over
subscription items, the bridge from metrics.mrr_daily), so the check is a real reconciliation. It is blocking:
when it fails, the publish step does not run and readers keep the last good file.
"""


import dagster as dg

from segflow_pipeline.defs.checks import check_result
from segflow_pipeline.defs.integrations import BY_NAME, INTEGRATIONS, PARTITIONS
from segflow_pipeline.defs.keys import MRR_BRIDGE_MONTHLY
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.transform import drivers
from segflow_pipeline.warehouse import tables as wh

MRR_DRIVERS_MONTHLY = dg.AssetKey(["marts", "mrr_drivers_monthly"])


@dg.asset_check(asset=MRR_DRIVERS_MONTHLY, blocking=True, additional_deps=[MRR_BRIDGE_MONTHLY],
                partitions_def=PARTITIONS,
                description="Summed over products and billing intervals, every month's starting MRR, movements and "
                            "ending MRR equal marts.mrr_bridge_monthly's to the cent.")
def sums_to_bridge(context: dg.AssetCheckExecutionContext, duckdb: WarehouseResource) -> dg.AssetCheckResult:
    integration = BY_NAME[context.partition_key] if context.has_partition_key else INTEGRATIONS[0]
    with duckdb.integration_connection(integration) as con:
        split = wh.read_table(con, "marts", "mrr_drivers_monthly", integration.name)
        bridge = wh.read_table(con, "marts", "mrr_bridge_monthly", integration.name)
    bad = drivers.bridge_breaks(split, bridge)
    return check_result(bad, metadata={"months": bridge.height})
