"""The configured Stripe accounts as Dagster sees them.

With no integrations file there is one account, `default` (STRIPE_API_KEY), and the assets are not partitioned, so
`dagster asset materialize -m segflow_pipeline.definitions --select '*'` refreshes everything. With a file
(SEGFLOW_INTEGRATIONS_FILE, default `integrations.yaml`), each account is a partition of the Stripe and MRR assets:
`--partition NAME` refreshes one, `segflow refresh` refreshes them all, and one failing account fails only its run.

The file is read by `load`, which the code location calls when it builds its Definitions (`definitions.py`), before
the asset modules that declare their partitions with `PARTITIONS` are loaded; nothing is read when this module is
imported. It is read once per process, like the asset definitions that take their partitions from it (Dagster
loads its code location anew for each run, so a changed file counts from the next run on). The names below
(`INTEGRATIONS`, `UNUSABLE_ENTRIES`, `BY_NAME`, `PARTITIONS`) are those `load` read, read on first use if no
Definitions were built yet (a module of `defs/` imported on its own, e.g. by a test).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from segflow_pipeline import config
from segflow_pipeline.config import Integration


@dataclass(frozen=True)
class Accounts:
    """The accounts of the integrations file (or the environment key's `default`), as the assets partition them."""

    integrations: list[Integration]
    # Entries naming no usable account, reported by `segflow refresh`; an entry that names one but cannot be used
    # fails its own account (`Integration.problem`, raised by the sync).
    unusable_entries: list[str]
    partitions: dg.StaticPartitionsDefinition | None

    @property
    def by_name(self) -> dict[str, Integration]:
        return {i.name: i for i in self.integrations}


_loaded: Accounts | None = None


def load(settings: config.Settings | None = None) -> Accounts:
    """The accounts of this process: read from `settings` (default: resolved now) the first time, then kept."""
    global _loaded
    if _loaded is not None:
        return _loaded
    resolved = settings if settings is not None else config.settings()
    _loaded = Accounts(
        integrations=list(resolved.integrations), unusable_entries=list(resolved.unusable_entries),
        partitions=(dg.StaticPartitionsDefinition([i.name for i in resolved.integrations])
                    if resolved.partitioned else None))
    return _loaded


def accounts() -> Accounts:
    """The accounts `load` read (read now if it has not run yet)."""
    return load()


def __getattr__(name: str):
    # `from segflow_pipeline.defs.integrations import PARTITIONS` and the like: the values of the last `load`.
    if name == "INTEGRATIONS":
        return accounts().integrations
    if name == "UNUSABLE_ENTRIES":
        return accounts().unusable_entries
    if name == "BY_NAME":
        return accounts().by_name
    if name == "PARTITIONS":
        return accounts().partitions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def integration_of(context: dg.AssetExecutionContext) -> Integration:
    """The account this run refreshes: the partition's, or the only one."""
    current = accounts()
    if context.has_partition_key:
        return current.by_name[context.partition_key]
    return current.integrations[0]
