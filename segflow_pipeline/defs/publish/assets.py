"""publish/segflow_duckdb: the file BI tools read, replaced atomically once every upstream check passed.

A run publishes the workspace of the account it refreshed, and only it: that workspace's file holds its own accounts'
data, is written under its own lock, and reports on its own accounts (`includes_<account>`)."""

import re

import dagster as dg

from segflow_pipeline.config import Integration, workspaces
from segflow_pipeline.defs.integrations import BY_NAME, INTEGRATIONS, PARTITIONS
from segflow_pipeline.defs.keys import BET_IMPACT, CUSTOMER_MOVEMENTS, MRR_DAILY, MRR_DAILY_REPORTING
from segflow_pipeline.defs.marts import bets
from segflow_pipeline.defs.marts.assets import MART_KEYS, MODELS
from segflow_pipeline.defs.marts.reporting_currency import KPIS_MONTHLY_REPORTING
from segflow_pipeline.defs.metrics import forecast
from segflow_pipeline.defs.metrics.forecast import FORECAST_KEYS
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.stripe_api.keys import redact
from segflow_pipeline.transform import reporting_currency as rc
from segflow_pipeline.warehouse.comments import TableComment, published_comments
from segflow_pipeline.warehouse.files import AccountCopy

PUBLISHED = dg.AssetKey(["publish", "segflow_duckdb"])
# Tables built in Python outside stripe.* and metrics.mrr_*: each stage describes them beside its code.
OTHER_TABLE_COMMENTS: dict[tuple[str, str], TableComment] = {
    **{("metrics", table): TableComment(forecast.DESCRIPTIONS[table], forecast.COLUMNS[table])
       for table in forecast.DESCRIPTIONS},
    ("marts", "bet_impact"): TableComment(bets.DESCRIPTION, bets.COLUMNS),
    ("metrics", "mrr_daily_reporting"): TableComment(rc.DAILY_REPORTING_DESCRIPTION, rc.DAILY_REPORTING_COLUMNS),
    ("marts", "kpis_monthly_reporting"): TableComment(rc.KPIS_REPORTING_DESCRIPTION, rc.KPIS_REPORTING_COLUMNS),
}


def _includes_checks(names: list[str]) -> dict[str, str]:
    """`includes_<account>` per account: a check name holds letters, digits and '_' only, so '-' becomes '_' (and
    a name that two accounts would share gets a number)."""
    checks: dict[str, str] = {}
    for name in names:
        check = base = "includes_" + re.sub(r"[^a-z0-9_]", "_", name)
        n = 1
        while check in checks.values():
            n += 1
            check = f"{base}_{n}"
        checks[name] = check
    return checks


INCLUDES = _includes_checks([i.name for i in INTEGRATIONS])
WORKSPACES: dict[str, list[Integration]] = workspaces(INTEGRATIONS)


def run_account(context: dg.AssetExecutionContext) -> Integration | None:
    """The account this run refreshed: the run's partition, or the only one; None for a run of every account."""
    if PARTITIONS is None:
        return INTEGRATIONS[0]
    return BY_NAME.get(context.run.tags.get("dagster/partition", ""))


def account_summary(copy: AccountCopy) -> str:
    """One line for an account whose data in the published file is not its latest (empty if it is)."""
    if copy.state == "kept":
        return (f"{copy.integration}: {copy.reason}; published its last good copy, from "
                f"{copy.copy_time:%Y-%m-%d %H:%M:%S} UTC")
    if copy.state == "skipped":
        return f"{copy.integration}: not published: {copy.reason}"
    return ""


DESCRIPTION = ("The DuckDB file of the run's workspace (SEGFLOW_DUCKDB_PATH for `default`): its integrations' stripe, "
               "metrics and marts tables, each table and column with its COMMENT (docs/tables.md), swapped in "
               "atomically so open readers keep a consistent snapshot and never block a refresh.")


# A multi-asset only so that it may leave out checks (`can_subset`): a run evaluates the `includes_<account>` checks
# of its own workspace's accounts, not those of accounts it did not publish.
@dg.multi_asset(
    specs=[dg.AssetSpec(PUBLISHED, group_name="publish", kinds={"duckdb"}, description=DESCRIPTION,
                        deps=[MRR_DAILY, CUSTOMER_MOVEMENTS, *MART_KEYS, MRR_DAILY_REPORTING,
                              KPIS_MONTHLY_REPORTING, *FORECAST_KEYS, BET_IMPACT])],
    can_subset=True,
    check_specs=[dg.AssetCheckSpec("readable_with_contract_tables", asset=PUBLISHED, blocking=True,
                                   description="The published file opens read-only and holds "
                                               "metrics.mrr_daily and stripe.subscriptions, invoices, "
                                               "customers, prices and coupons.")]
    + [dg.AssetCheckSpec(check, asset=PUBLISHED,
                         description=f"The published file of {name!r}'s workspace holds its data from its "
                                     "working file as it is now (or from a run writing it now), not an older "
                                     "copy or none. Evaluated by the runs of that workspace.")
       for name, check in INCLUDES.items()],
)
def segflow_duckdb(context: dg.AssetExecutionContext, duckdb: WarehouseResource):
    """`DESCRIPTION`; evaluates the checks of the accounts it published that the run selected."""
    own_account = run_account(context)
    if own_account is not None and not own_account.workspace:
        raise dg.Failure(description=redact(f"{own_account.name}: {own_account.problem}"), allow_retries=False)
    # A run of one account publishes its workspace; a run without one (e.g. the asset materialized on its own from
    # the UI) publishes each workspace in turn.
    chosen = [own_account.workspace] if own_account is not None else list(WORKSPACES)
    comments = published_comments(MODELS, OTHER_TABLE_COMMENTS)
    accounts: dict[str, AccountCopy] = {}
    counts: dict[str, int] = {}
    missing: list[str] = []
    paths: list[str] = []
    for workspace in chosen:
        publication = duckdb.publish([i.name for i in WORKSPACES.get(workspace, [])], comments=comments,
                                     workspace=workspace)
        accounts.update(publication.accounts)
        for table, n in publication.counts.items():
            counts[table] = counts.get(table, 0) + n
        with duckdb.get_connection(workspace) as con:
            present = {f"{s}.{t}" for s, t in con.execute(
                "select table_schema, table_name from information_schema.tables").fetchall()}
        missing += [f"{workspace}: {t}" if len(chosen) > 1 else t for t in sorted(
            {"metrics.mrr_daily", "stripe.subscriptions", "stripe.invoices", "stripe.customers", "stripe.prices",
             "stripe.coupons"} - present)]
        path = duckdb.workspace_path(workspace)
        paths.append(str(path.resolve()))
        context.log.info(f"published workspace {workspace!r} to {path} ({len(publication.counts)} tables)")
    checks = [dg.AssetCheckResult(check_name="readable_with_contract_tables", passed=not missing,
                                  metadata={"missing": ", ".join(missing) or "none"})]
    for name, copy in accounts.items():
        summary = redact(account_summary(copy))
        if summary:
            context.log.warning(summary)
        checks.append(dg.AssetCheckResult(
            check_name=INCLUDES[name], passed=copy.state in ("current", "busy"),
            severity=dg.AssetCheckSeverity.ERROR if copy.state == "skipped" else dg.AssetCheckSeverity.WARN,
            metadata={"state": copy.state, "reason": redact(copy.reason) or "none", "summary": summary or "none",
                      "copy_time": copy.copy_time.isoformat() if copy.copy_time else "none"}))
    selected = {key.name for key in context.selected_asset_check_keys}
    checks = [c for c in checks if c.check_name in selected]
    yield dg.MaterializeResult(
        metadata={"path": ", ".join(paths), "workspace": ", ".join(chosen), "tables": len(counts),
                  "accounts_published": sum(c.published for c in accounts.values()),
                  **{f"rows.{name}": n for name, n in counts.items() if not name.startswith("stripe.")}},
        check_results=checks,
    )
    # The account this run refreshed (the run's partition, or the only one): its new data must have gone out.
    own = accounts.get(own_account.name) if own_account is not None else None
    if own is not None and own.state in ("kept", "skipped"):
        raise dg.Failure(description=redact(
            f"{own.integration}'s refresh was not published: {own.reason}. The other accounts were published."),
            allow_retries=False)
