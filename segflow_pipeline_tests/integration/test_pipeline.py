"""The whole code location, run in process against the emulator over HTTP: Stripe → DuckDB → MRR → published file."""

import datetime as dt
import re

import dagster as dg
import duckdb
import pytest
import stripe

from segflow_pipeline.runner import load_definitions
from segflow_pipeline_tests.support.accounts import ACME_KEY, NOSUBS_KEY
from segflow_pipeline_tests.support.contract import contract_failures
from segflow_pipeline_tests.support.paths import PROJECT
from segflow_pipeline_tests.integration.mrr_oracle import mrr_today


def run_job(full: bool = True) -> dg.ExecuteInProcessResult:
    job = load_definitions().resolve_job_def("daily_refresh_job")
    return job.execute_in_process(
        run_config={"ops": {"stripe_sync": {"config": {"mode": "full" if full else "auto"}}}},
        raise_on_error=False)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:{e.asset_check_evaluation_data.check_name}":
            e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


@pytest.fixture(scope="module")
def first_run(emulator, tmp_path_factory):
    """One full refresh of the acme account, shared by the read-only assertions below."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("first")
    published = root / "segflow.duckdb"
    for k, v in {"STRIPE_API_KEY": ACME_KEY, "STRIPE_API_BASE": emulator.url, "SEGFLOW_DUCKDB_PATH": str(published),
                 "SEGFLOW_INTEGRATIONS_FILE": str(root / "none.yaml")}.items():
        mp.setenv(k, v)
    mp.delenv("DAGSTER_HOME", raising=False)
    result = run_job()
    yield result, published
    mp.undo()


def test_full_refresh_succeeds_and_every_check_passes(first_run):
    result, published = first_run
    assert result.success
    checks = check_results(result)
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}
    for name in ("metrics/mrr_daily:movements_reconcile", "metrics/mrr_daily:matches_live_subscriptions",
                 "metrics/mrr_daily:matches_schema", "metrics/mrr_daily:one_row_per_day",
                 "stripe/subscriptions:unique_ids", "publish/segflow_duckdb:readable_with_contract_tables"):
        assert name in checks


def test_published_file_satisfies_the_contract(first_run, tmp_path):
    _, published = first_run
    assert contract_failures(published) == []
    # the same check on a copy missing one day of a series and with a movement off by a cent: both are named
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(published.read_bytes())
    with duckdb.connect(str(broken)) as con:
        last, currency = con.execute("select max(date), min(currency) from metrics.mrr_daily").fetchone()
        gone, off = last - dt.timedelta(days=10), last - dt.timedelta(days=20)
        con.execute("delete from metrics.mrr_daily where date = ? and currency = ?", [gone, currency])
        con.execute("update metrics.mrr_daily set new_mrr = new_mrr + 0.01 where date = ? and currency = ?",
                    [off, currency])
    failures = contract_failures(broken)
    assert f"default/{currency}: 1 missing days between" in " ".join(failures)
    breaks = [f for f in failures if f.startswith("movements do not explain the change of MRR")]
    assert len(breaks) == 1 and f"datetime.date({off.year}, {off.month}, {off.day})" in breaks[0]


def test_raw_tables_hold_every_object_once(first_run, emulator):
    _, published = first_run
    counts = emulator.accounts[ACME_KEY].counts()
    con = duckdb.connect(str(published), read_only=True)
    try:
        for table, resource in (("subscriptions", "subscriptions"), ("customers", "customers"),
                                ("invoices", "invoices"), ("prices", "prices"), ("coupons", "coupons")):
            n, distinct = con.execute(f"select count(*), count(distinct id) from stripe.{table}").fetchone()
            assert n == distinct == counts[resource], table
    finally:
        con.close()


def test_todays_mrr_matches_an_independent_computation_from_live_subscriptions(first_run, emulator):
    _, published = first_run
    client = stripe.StripeClient(ACME_KEY, base_addresses={"api": emulator.url})
    expected = mrr_today(client, emulator.accounts[ACME_KEY].now)
    con = duckdb.connect(str(published), read_only=True)
    try:
        rows = dict(con.execute("select currency, mrr from metrics.mrr_daily where date = ?",
                                [dt.datetime.now(dt.timezone.utc).date()]).fetchall())
    finally:
        con.close()
    assert set(expected) == {"usd", "eur", "jpy"}
    assert rows == expected


def test_bad_key_fails_clearly_and_leaves_published_data_alone(first_run, monkeypatch):
    _, published = first_run
    before = published.read_bytes()
    monkeypatch.setenv("STRIPE_API_KEY", NOSUBS_KEY)
    monkeypatch.setenv("SEGFLOW_DUCKDB_PATH", str(published))
    from segflow_pipeline.runner import failure_messages

    result = run_job(full=True)
    assert not result.success
    message = " ".join(failure_messages(result))
    assert "rak_subscription_read" in message and "Read access" in message
    assert NOSUBS_KEY not in message
    assert published.read_bytes() == before


def test_schedule_asks_for_one_run_a_day():
    defs = load_definitions()
    schedule = defs.resolve_schedule_def("daily_refresh_job_schedule")
    assert schedule.cron_schedule == "0 6 * * *" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 26, 6, tzinfo=dt.timezone.utc))
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.run_key for r in requests] == ["2026-11-26"]
    assert requests[0].tags["segflow/integration"] == "default"


def test_customer_movements_explain_the_daily_series(first_run):
    _, published = first_run
    con = duckdb.connect(str(published), read_only=True)
    try:
        off = con.execute("""
            with per_day as (
                select integration, currency, date,
                       sum(amount) filter (where movement = 'new') as new_mrr,
                       sum(amount) filter (where movement = 'churned') as churned_mrr,
                       sum(amount) filter (where movement = 'expansion') as expansion_mrr,
                       count(*) filter (where movement in ('new', 'reactivation'))
                       - count(*) filter (where movement = 'churned') as paying_change
                from metrics.mrr_customer_movements group by all)
            , daily as (
                select *, paying_customers - coalesce(lag(paying_customers) over (
                    partition by integration, currency order by date), 0) as paying_delta
                from metrics.mrr_daily)
            select count(*) from daily d left join per_day p using (integration, currency, date)
            where coalesce(p.new_mrr, 0) <> d.new_mrr or coalesce(p.churned_mrr, 0) <> d.churned_mrr
               or coalesce(p.expansion_mrr, 0) <> d.expansion_mrr or d.paying_delta <> coalesce(p.paying_change, 0)
            """).fetchone()[0]
        logo = con.execute("""
            select count(*) from (
                select starting_customers, lag(paying_customers) over (partition by integration, currency
                                                                        order by month) as paying_before
                from marts.kpis_monthly)
            where coalesce(paying_before, 0) <> starting_customers""").fetchone()[0]
    finally:
        con.close()
    assert off == 0
    assert logo == 0


def _uncommented(published, schemas: tuple[str, ...]) -> tuple[list[str], list[str]]:
    con = duckdb.connect(str(published), read_only=True)
    try:
        where = "where schema_name in (select unnest(?::varchar[])) and coalesce(trim(comment), '') = ''"
        tables = [f"{s}.{t}" for s, t in con.execute(
            f"select schema_name, table_name from duckdb_tables() {where} order by all", [list(schemas)]).fetchall()]
        columns = [f"{s}.{t}.{c}" for s, t, c in con.execute(
            f"select schema_name, table_name, column_name from duckdb_columns() {where} order by all",
            [list(schemas)]).fetchall()]
        count = con.execute("select count(*) from duckdb_columns() where schema_name in (select unnest(?::varchar[]))",
                            [list(schemas)]).fetchone()[0]
    finally:
        con.close()
    assert count > 0
    return tables, columns


def test_every_published_table_and_every_stripe_and_metrics_column_has_a_comment(first_run):
    _, published = first_run
    tables, columns = _uncommented(published, ("stripe", "metrics", "marts"))
    assert tables == []
    assert [c for c in columns if not c.startswith("marts.")] == []


def test_every_marts_column_has_a_comment(first_run):
    """Each model's `-- @col <column>: <meaning>` lines (dbt_like_sql/marts/<table>.sql) are its columns' comments."""
    _, published = first_run
    _, columns = _uncommented(published, ("marts",))
    assert columns == [], "add `-- @col` lines for: " + ", ".join(columns)


def test_docs_tables_md_lists_every_stripe_and_metrics_column_with_its_type(first_run):
    """docs/tables.md is the contract people read: it must name every column the file has, with its real type."""
    _, published = first_run
    documented: dict[str, dict[str, str]] = {}
    table = None
    for line in (PROJECT / "docs" / "tables.md").read_text().splitlines():
        heading = re.match(r"^### `?(\w+\.\w+)`?$", line)
        if heading:
            table = documented.setdefault(heading.group(1), {})
        row = re.match(r"^\| `(\w+)` \| ([A-Z0-9(), ]+) \| .+ \|$", line)
        if row and table is not None:
            table[row.group(1)] = row.group(2).strip()
    con = duckdb.connect(str(published), read_only=True)
    try:
        actual: dict[str, dict[str, str]] = {}
        for schema, name, column, kind in con.execute(
                "select schema_name, table_name, column_name, data_type from duckdb_columns() "
                "where schema_name in ('stripe', 'metrics') order by all").fetchall():
            actual.setdefault(f"{schema}.{name}", {})[column] = kind
    finally:
        con.close()
    # every table of the file, with every column and its real type (optional tables, like the reporting
    # currency's, are documented too but absent from a run without rates)
    assert {k: documented.get(k) for k in actual} == actual


def test_a_chart_that_cannot_be_drawn_fails_the_report_only_and_the_data_is_published(first_run, tmp_path,
                                                                                        monkeypatch):
    import shutil

    from segflow_pipeline import runner
    from segflow_pipeline.reporting import charts

    _, first = first_run
    shutil.copytree(first.parent, tmp_path / "data")  # the first run's files: working copy, published file, report
    published = tmp_path / "data" / first.name
    report = tmp_path / "data" / "reports" / "default" / "mrr.html"
    before_report, before_file = report.read_bytes(), published.stat().st_ino
    monkeypatch.setenv("SEGFLOW_DUCKDB_PATH", str(published))

    def broken(*args, **kwargs):
        raise RuntimeError("the chart library cannot draw today")

    monkeypatch.setattr(charts, "write_report", broken)
    result = run_job(full=False)
    assert not result.success
    steps = {e.step_key: e.event_type_value for e in result.all_events
             if e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}
    assert steps["segflow_duckdb"] == "STEP_SUCCESS" and steps["marts__mrr_report"] == "STEP_FAILURE"
    assert [k for k, v in steps.items() if v == "STEP_FAILURE"] == ["marts__mrr_report"]
    # the data went out: a new file renamed over the old one, holding today's MRR
    assert published.stat().st_ino != before_file
    with duckdb.connect(str(published), read_only=True) as con:
        assert con.execute("select count(*) from metrics.mrr_daily where date = "
                           "(select max(date) from metrics.mrr_daily)").fetchone()[0] > 0
    # the report failed with what happened and what it means, and the previous one stayed in place, whole
    failure = runner.run_failure(result, "default", load_definitions())
    assert failure.published and [step for step, _, _ in failure.errors] == ["marts__mrr_report"]
    message = failure.errors[0][1]
    assert "the MRR report of 'default' could not be drawn (RuntimeError: the chart library cannot draw today)" \
        in message and "The data was published all the same" in message
    assert report.read_bytes() == before_report
    assert not list((tmp_path / "data" / ".segflow" / "reports").glob("default.*"))  # nothing half-written left
    summary = " ".join(runner.failure_summary(failure, published, dagster_home=None).split())
    assert f"This run published its data: {published} holds it" in summary and "published nothing" not in summary
