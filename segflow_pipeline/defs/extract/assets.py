"""Stripe → DuckDB: one multi-asset syncs every raw table of one account under one shared rate limit."""


import time

import dagster as dg

from segflow_pipeline.config import Integration
from segflow_pipeline.defs.clock import epoch_seconds, run_as_of
from segflow_pipeline.defs.integrations import PARTITIONS, integration_of
from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.resources.raw_sync import heals_on_retry, sync_account
from segflow_pipeline.resources.stripe import StripeResource
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.stripe_api.client import StripeAPIFailure
from segflow_pipeline.stripe_api.keys import StripeSetupError, empty_account_warning, redact
from segflow_pipeline.warehouse import quality, raw
from segflow_pipeline.warehouse.comments import PYTHON_TABLES
from segflow_pipeline.warehouse.files import WarehouseError

# The asset descriptions are the tables' own comments (warehouse/comments.py), so the UI and BI tools agree.
DESCRIPTIONS = {table: PYTHON_TABLES[("stripe", table)].description for table in TABLES}
RAW_KEYS = {table: dg.AssetKey(["stripe", table]) for table in TABLES}


class SyncConfig(dg.Config):
    mode: str = "auto"  # auto: incremental from the event cursor, full on first run or after 30 days; or full


# A sync that failed on something that heals (Stripe kept answering 429/5xx, the network dropped) runs again after
# 30 s, then 60 s. Anything else fails at once: it would fail the same way again (`heals_on_retry`). There is no
# RetryPolicy: Dagster applies one to every error, interrupts included (Ctrl-C was retried, then published).
SYNC_RETRIES = 2
RETRY_DELAY_S = 30


@dg.multi_asset(
    specs=[dg.AssetSpec(key, group_name="extract", kinds={"stripe", "duckdb"}, description=DESCRIPTIONS[table])
           for table, key in RAW_KEYS.items()],
    check_specs=[dg.AssetCheckSpec("unique_ids", asset=key, blocking=True,
                                   description="No Stripe object is stored twice for one integration (one row per "
                                               "primary key).")
                 for key in RAW_KEYS.values()]
    + [dg.AssetCheckSpec("has_subscriptions", asset=RAW_KEYS["subscriptions"],
                         description="The account has at least one subscription (a warning: an empty account, or a "
                                     "key of the other mode, test or live).")],
    partitions_def=PARTITIONS,
)
def stripe_sync(context: dg.AssetExecutionContext, config: SyncConfig, stripe: StripeResource,
                duckdb: WarehouseResource):
    """Sync one Stripe account (read-only) into its working DuckDB file."""
    integration = integration_of(context)
    if integration.problem:
        raise dg.Failure(description=integration.problem, allow_retries=False)
    try:
        yield from _sync(context, config, stripe, duckdb, integration)
    except StripeSetupError as exc:
        # A bad key or a missing permission does not heal by retrying: fail at once with the fix.
        raise dg.Failure(description=redact(str(exc)), allow_retries=False) from None
    except Exception as exc:  # noqa: BLE001 - classified below; interrupts (BaseException) stop the run as they are
        raise _retry_or_fail(context, exc) from None


def _retry_or_fail(context: dg.AssetExecutionContext, exc: Exception) -> Exception:
    """A retry later for what heals (`heals_on_retry`), else a failure now; both with the error's own message."""
    message = redact(str(exc) if isinstance(exc, (StripeAPIFailure, WarehouseError)) else
                     f"{type(exc).__name__}: {exc}")
    if heals_on_retry(exc) and context.retry_number < SYNC_RETRIES:
        wait = RETRY_DELAY_S * 2 ** context.retry_number
        context.log.warning(f"{message} The sync runs again in {wait} s (attempt {context.retry_number + 2} of "
                            f"{SYNC_RETRIES + 1}).")
        return dg.RetryRequested(max_retries=SYNC_RETRIES, seconds_to_wait=wait)
    return dg.Failure(description=message, allow_retries=False)


def _sync(context: dg.AssetExecutionContext, config: SyncConfig, stripe: StripeResource,
          duckdb: WarehouseResource, integration: Integration):
    reader = stripe.reader(integration)
    info = reader.key_info
    context.log.info(f"Stripe account '{integration.name}': {info.mode} mode, {info.kind} key {info.masked}")

    def progress(table: str, rows: int, pages: int, rate: float, eta: float | None) -> None:
        eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
        context.log.info(f"{integration.name}/{table}: {rows} rows, {pages} pages, {rate:.0f} rows/s{eta_text}")

    started = time.monotonic()
    # A working file that cannot be read is moved aside and rebuilt: this sync is then a full one (no cursor).
    with duckdb.integration_connection(integration, heal=context.log.warning, moved=context.log.info) as con:
        raw.ensure_tables(con)
        report = sync_account(reader, con, integration=integration.name, mode=config.mode, progress=progress,
                              now=epoch_seconds(run_as_of(context)))
        health = quality.raw_table_health(con, integration.name)
    for warning in report.warnings:
        context.log.warning(redact(warning))
    if health["subscriptions"]["rows"] == 0:
        context.log.warning(empty_account_warning(info))

    shared = {"integration": integration.name, "sync_mode": report.mode, "requests": report.requests,
              "retried_429": report.retried_429, "retried_5xx": report.retried_5xx,
              "sync_seconds": round(time.monotonic() - started, 2)}
    for table, key in RAW_KEYS.items():
        stats = report.tables.get(table, {})
        yield dg.MaterializeResult(asset_key=key, metadata={
            **shared, "dagster/row_count": health[table]["rows"],
            "rows_synced": int(stats.get("rows", 0)), "quarantined": int(stats.get("quarantined", 0)),
            # One object listed twice: identical copies dropped, differing versions resolved (`raw.resolve_duplicates`).
            "duplicates_dropped": int(stats.get("duplicates_dropped", 0)),
            "duplicates_resolved": int(stats.get("duplicates_resolved", 0)),
        })
    for table, key in RAW_KEYS.items():
        dups = health[table]["duplicate_keys"]
        yield dg.AssetCheckResult(asset_key=key, check_name="unique_ids", passed=dups == 0,
                                  metadata={"duplicate_keys": dups})
    subs = health["subscriptions"]["rows"]
    yield dg.AssetCheckResult(asset_key=RAW_KEYS["subscriptions"], check_name="has_subscriptions", passed=subs > 0,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"rows": subs, **({} if subs else {"hint": empty_account_warning(info)})})
