"""The configured Stripe accounts as Dagster sees them.

With no integrations file there is one account, `default` (STRIPE_API_KEY), and the assets are not partitioned, so
`dagster asset materialize -m segflow_pipeline.definitions --select '*'` refreshes everything. With a file
(SEGFLOW_INTEGRATIONS_FILE, default `integrations.yaml`), each account is a partition of the Stripe and MRR assets:
`--partition NAME` refreshes one, `segflow refresh` refreshes them all, and one failing account fails only its run.
"""


import dagster as dg

from segflow_pipeline.config import Integration, integrations_file, read_integrations

# An entry of the file that cannot be used fails its own account (`Integration.problem`, raised by the sync);
# entries naming no usable account are reported by `segflow refresh` (UNUSABLE_ENTRIES).
INTEGRATIONS, UNUSABLE_ENTRIES = read_integrations()
BY_NAME: dict[str, Integration] = {i.name: i for i in INTEGRATIONS}
PARTITIONS: dg.StaticPartitionsDefinition | None = (
    dg.StaticPartitionsDefinition([i.name for i in INTEGRATIONS]) if integrations_file().exists() else None
)


def integration_of(context: dg.AssetExecutionContext) -> Integration:
    """The account this run refreshes: the partition's, or the only one."""
    if context.has_partition_key:
        return BY_NAME[context.partition_key]
    return INTEGRATIONS[0]
