"""The code location loads and holds exactly the documented assets, groups, checks, job and schedule."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from segflow_pipeline.runner import load_definitions

PROJECT = Path(__file__).resolve().parents[1]
RAW = ["coupons", "customers", "discounts", "events", "invoice_items", "invoice_lines", "invoices", "price_tiers", "prices", "products",
       "quarantine", "subscription_items", "subscriptions"]
MARTS = sorted(p.stem for p in (PROJECT / "dbt_like_sql" / "marts").glob("*.sql"))
FORECAST = ["metrics/mrr_forecast", "metrics/mrr_forecast_accuracy", "metrics/mrr_forecast_status"]


def test_assets_groups_and_keys():
    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    expected = {**{f"stripe/{t}": "extract" for t in RAW}, "metrics/mrr_daily": "metrics",
                "metrics/mrr_customer_movements": "metrics", "metrics/mrr_daily_reporting": "metrics",
                **{f"marts/{m}": "marts" for m in MARTS}, "marts/mrr_report": "marts",
                "marts/kpis_monthly_reporting": "marts", "publish/segflow_duckdb": "publish",
                **{key: "metrics" for key in FORECAST}, "marts/bet_impact": "marts"}
    assert groups == expected
    assert {"kpis_monthly", "cohort_retention", "movement_customers", "mrr_bridge_monthly"} <= set(MARTS)
    assert "customer_metrics_monthly" not in MARTS  # replaced by kpis_monthly


def test_checks_state_properties_and_block():
    graph = load_definitions().resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for name in ("matches_schema", "movements_reconcile", "one_row_per_day", "matches_live_subscriptions"):
        assert ("metrics/mrr_daily", name) in checks
    for table in RAW:
        assert (f"stripe/{table}", "unique_ids") in checks
    assert ("publish/segflow_duckdb", "readable_with_contract_tables") in checks
    for asset, name in (("marts/kpis_monthly", "agrees_with_mrr_daily"), ("marts/kpis_monthly", "movements_reconcile"),
                        ("marts/kpis_monthly", "gross_revenue_retention_is_a_share"),
                        ("marts/kpis_monthly", "net_revenue_retention_not_negative"),
                        ("marts/cohort_retention", "cohorts_add_up_to_mrr_daily"),
                        ("marts/movement_customers", "sums_to_the_bridge"),
                        ("metrics/mrr_daily_reporting", "rates_cover_every_day"),
                        ("metrics/mrr_daily_reporting", "one_row_per_day"),
                        ("marts/kpis_monthly_reporting", "agrees_with_kpis_monthly"),
                        ("marts/kpis_monthly_reporting", "rates_in_range")):
        assert (asset, name) in checks
    assert not [key for key in checks if key[0] == "marts/customer_metrics_monthly"]
    for name in ("intervals_ordered", "ninety_days_per_series", "short_history_stated"):
        assert ("metrics/mrr_forecast", name) in checks
    assert ("marts/mrr_drivers_monthly", "sums_to_bridge") in checks
    from segflow_pipeline.defs.marts.drivers import sums_to_bridge
    from segflow_pipeline.defs.metrics.forecast import mrr_forecast
    assert all(spec.blocking for spec in sums_to_bridge.check_specs)
    assert {s.name for s in mrr_forecast.check_specs if s.blocking} == {
        "intervals_ordered", "ninety_days_per_series", "short_history_stated"}
    assert not [name for _, name in checks if "check" in name]


def test_publish_depends_on_every_metric_and_mart_and_the_report_comes_after_it():
    graph = load_definitions().resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey(["publish", "segflow_duckdb"])).parent_keys}
    assert {"metrics/mrr_daily", "metrics/mrr_daily_reporting", "marts/kpis_monthly_reporting",
            *(f"marts/{m}" for m in MARTS)} <= parents
    assert {"metrics/mrr_daily", *(f"marts/{m}" for m in MARTS), *FORECAST, "marts/bet_impact"} <= parents
    # the report is off the publish path: a chart that cannot be drawn never holds back the data
    assert "marts/mrr_report" not in parents
    assert "publish/segflow_duckdb" in {k.to_user_string()
                                        for k in graph.get(dg.AssetKey(["marts", "mrr_report"])).parent_keys}


def test_job_schedule_and_freshness():
    defs = load_definitions()
    job = defs.resolve_job_def("daily_refresh_job")
    assert job.name == "daily_refresh_job"
    schedule = defs.resolve_schedule_def("daily_refresh_job_schedule")
    assert schedule.job_name == "daily_refresh_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    spec = load_definitions().resolve_asset_graph().get(dg.AssetKey(["metrics", "mrr_daily"]))
    assert spec.freshness_policy is not None


def test_no_private_dagster_imports():
    for path in (PROJECT / "segflow_pipeline").rglob("*.py"):
        assert "dagster._" not in path.read_text(), path


def test_dagster_cli_validates_the_code_location():
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m",
                          "segflow_pipeline.definitions"], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stderr + out.stdout


def test_every_check_says_what_it_checks():
    graph = load_definitions().resolve_asset_graph()
    missing = sorted(k.to_user_string() for k in graph.asset_check_keys
                     if not (graph.get_check_spec(k).description or "").strip())
    assert missing == []


def test_every_asset_says_what_it_holds():
    graph = load_definitions().resolve_asset_graph()
    missing = sorted(k.to_user_string() for k in graph.get_all_asset_keys()
                     if not (graph.get(k).description or "").strip())
    assert missing == []


def test_resources_take_their_settings_from_the_variables(tmp_path, monkeypatch):
    from segflow_pipeline import config
    from segflow_pipeline.config import Integration
    from segflow_pipeline.defs.resources import resources
    from segflow_pipeline.resources.stripe import StripeResource
    from segflow_pipeline.resources.warehouse import WarehouseResource

    monkeypatch.setenv("SEGFLOW_DUCKDB_PATH", str(tmp_path / "bi.duckdb"))
    monkeypatch.setenv("SEGFLOW_DUCKDB_MEMORY_LIMIT", "2GB")
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:9")
    bound = resources(config.settings()).resources
    # bound as the variables (Dagster resolves them per run and shows them in the UI), never as their values
    assert bound["duckdb"].database == dg.EnvVar("SEGFLOW_DUCKDB_PATH")
    assert bound["duckdb"].memory_limit == dg.EnvVar("SEGFLOW_DUCKDB_MEMORY_LIMIT")
    assert bound["stripe"].api_base == dg.EnvVar("STRIPE_API_BASE")
    seen = {}

    @dg.asset
    def probe(duckdb: WarehouseResource, stripe: StripeResource):
        seen["published"] = duckdb.published_path
        seen["api_base"] = stripe.api_base_of(Integration(name="default"))
        seen["own_api_base"] = stripe.api_base_of(Integration(name="acme", api_base="http://127.0.0.1:8"))
        with duckdb.integration_connection(Integration(name="default")) as con:
            seen["memory_limit"] = con.execute("select current_setting('memory_limit')").fetchone()[0]

    assert dg.materialize([probe], resources=bound).success
    assert seen == {"published": tmp_path / "bi.duckdb", "api_base": "http://127.0.0.1:9",
                    "own_api_base": "http://127.0.0.1:8", "memory_limit": "1.8 GiB"}
    # run config for the resource (as the reliability suite raises its rate limit) keeps what the variables say
    seen.clear()
    assert dg.materialize([probe], resources=bound, run_config={
        "resources": {"stripe": {"config": {"max_requests_per_second": 500.0}}}}).success
    assert seen["api_base"] == "http://127.0.0.1:9"


def test_resources_without_the_variables_take_the_defaults(monkeypatch):
    from segflow_pipeline import config
    from segflow_pipeline.defs.resources import resources

    for variable in ("SEGFLOW_DUCKDB_PATH", "SEGFLOW_DUCKDB_MEMORY_LIMIT", "STRIPE_API_BASE"):
        monkeypatch.delenv(variable, raising=False)
    bound = resources(config.settings()).resources
    assert (bound["duckdb"].database, bound["duckdb"].memory_limit) == ("data/segflow.duckdb", None)
    assert bound["stripe"].api_base is None


def test_the_schedule_takes_its_cron_from_the_settings(monkeypatch):
    from segflow_pipeline import config
    from segflow_pipeline.defs.automation import automation

    monkeypatch.setenv("SEGFLOW_REFRESH_CRON", "30 2 * * 1")
    monkeypatch.setenv("SEGFLOW_REFRESH_TIMEZONE", "Europe/Paris")
    schedule = automation(config.settings()).resolve_schedule_def("daily_refresh_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * 1", "Europe/Paris")
    monkeypatch.delenv("SEGFLOW_REFRESH_CRON")
    monkeypatch.delenv("SEGFLOW_REFRESH_TIMEZONE")
    schedule = automation(config.settings()).resolve_schedule_def("daily_refresh_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")


def test_nothing_is_read_at_import_the_integrations_file_is_read_when_definitions_are_built(tmp_path):
    import os

    broken = tmp_path / "integrations.yaml"
    broken.write_text("integrations: [name: acme\n")  # not YAML: reading it raises ConfigError
    env = {**os.environ, "SEGFLOW_INTEGRATIONS_FILE": str(broken), "PYTHONPATH": str(PROJECT),
           "SEGFLOW_REFRESH_CRON": "not a cron"}
    imports = ("import segflow_pipeline.config, segflow_pipeline.definitions, segflow_pipeline.defs.integrations, "
               "segflow_pipeline.defs.automation, segflow_pipeline.defs.resources, segflow_pipeline.cli")
    out = subprocess.run([sys.executable, "-c", imports], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    build = subprocess.run([sys.executable, "-c", "from segflow_pipeline.runner import load_definitions\n"
                            "load_definitions()"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert build.returncode != 0 and "ConfigError" in build.stderr and "not valid YAML" in build.stderr


def test_mrr_daily_shows_its_published_columns_before_any_run():
    """The Columns tab of metrics/mrr_daily comes from the Pandera model its run validates against
    (dagster-pandera), in the published order with each column's rules."""
    graph = load_definitions().resolve_asset_graph()
    schema = graph.get(dg.AssetKey(["metrics", "mrr_daily"])).metadata["dagster/column_schema"].schema
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == ["integration", "date", "currency", "mrr", "arr", "active_subscriptions",
                             "paying_customers", "new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr",
                             "churned_mrr"]
    assert columns["mrr"].type == "Decimal(precision=18, scale=2)" and not columns["mrr"].constraints.nullable
    assert any("arr_is_12_times_mrr" in c for c in schema.constraints.other)
