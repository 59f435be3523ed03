"""The marts assets and the MRR report, materialized in process on a seeded working file: tables written, every
declared test reported as a check, charts beside the DuckDB file; a broken property stops the write."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segflow_pipeline.defs.integrations import INTEGRATIONS
from segflow_pipeline.defs.marts.assets import MART_ASSETS, MART_KEYS, MODELS, UPSTREAM
from segflow_pipeline.defs.keys import MRR_BRIDGE_MONTHLY
from segflow_pipeline.defs.marts.report import MRR_REPORT, mrr_report
from segflow_pipeline.defs.marts.reporting_currency import kpis_monthly_reporting
from segflow_pipeline.defs.metrics.reporting_currency import mrr_daily_reporting
from segflow_pipeline.runner import failure_messages
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.warehouse import files
from segflow_pipeline_tests.unit.warehouse.test_sql_models import seed

NAME = INTEGRATIONS[0].name


@pytest.fixture
def published(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "segflow.duckdb"
    working = files.working_path(path, NAME)
    working.parent.mkdir(parents=True)
    con = duckdb.connect(str(working))
    seed(con, NAME)
    con.execute("drop schema marts cascade")  # the assets create what they write
    con.close()
    return path


REPORT_FILES = {"mrr.png", "bridge.png", "kpis.png", "cohorts.png", "mrr.html"}


def materialize(published: Path) -> dg.ExecuteInProcessResult:
    partition = NAME if MART_ASSETS[0].partitions_def else None
    return dg.materialize([*MART_ASSETS, mrr_report], partition_key=partition, raise_on_error=False,
                          resources={"duckdb": WarehouseResource(database=str(published))})


def test_definitions_hold_one_asset_per_model_with_deps_from_the_sql() -> None:
    defs = dg.Definitions(assets=[*MART_ASSETS, mrr_report], resources={"duckdb": WarehouseResource(database="x")})
    graph = defs.resolve_asset_graph()
    assert {k.path[1] for k in MART_KEYS} >= {"mrr_monthly", "mrr_bridge_monthly", "mrr_by_product",
                                              "kpis_monthly", "cohort_retention", "movement_customers",
                                              "trials_monthly"}
    assert MRR_BRIDGE_MONTHLY in MART_KEYS and MRR_REPORT not in MART_KEYS
    bridge = graph.get(MRR_BRIDGE_MONTHLY)
    assert bridge.parent_keys == {dg.AssetKey(["metrics", "mrr_daily"]), dg.AssetKey(["marts", "mrr_monthly"])}
    assert bridge.group_name == "marts" and bridge.kinds >= {"sql", "duckdb"}
    assert bridge.description.startswith("Monthly MRR bridge")
    specs = [s for a in MART_ASSETS for s in a.check_specs]
    assert "movements_reconcile" in {s.name for s in specs if s.asset_key == MRR_BRIDGE_MONTHLY}
    assert len(specs) == sum(len(m.tests) for m in MODELS) and all(s.blocking for s in specs)
    assert set(UPSTREAM.values()) >= {p for k in MART_KEYS for p in graph.get(k).parent_keys if p.path[0] != "marts"}


def test_materialize_writes_marts_checks_and_report(published: Path) -> None:
    result = materialize(published)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == sum(len(m.tests) for m in MODELS) and all(e.passed for e in evaluations)
    with duckdb.connect(str(files.working_path(published, NAME)), read_only=True) as con:
        ending = con.execute("select ending_mrr from marts.mrr_bridge_monthly where currency = 'usd' "
                             "order by month").fetchall()
        integrations = con.execute("select distinct integration from marts.mrr_monthly").fetchall()
    assert [float(v) for (v,) in ending] == [150.0, 200.0, 230.0]
    assert integrations == [(NAME,)]
    report = published.parent / "reports" / NAME
    # Written aside, then moved into place by the report itself, all at once: nothing is left pending.
    pending = files.pending_reports_dir(published, NAME, result.run_id)
    assert {p.name for p in report.iterdir()} == REPORT_FILES and not pending.exists()
    assert not list(files.state_dir(published).glob("reports/*"))
    metadata = result.asset_materializations_for_node("marts__mrr_report")[0].metadata
    assert metadata["mrr_chart"].value.startswith("![MRR per currency](data:image/png;base64,")
    assert metadata["kpis_chart"].value.startswith("![Headline KPIs, last 12 months](data:image/png;base64,")
    assert "total_chart" not in metadata  # no reporting currency
    assert metadata["report"].value == str((report / "mrr.html").resolve())


def test_a_failing_test_blocks_the_write(published: Path) -> None:
    assert materialize(published).success
    with duckdb.connect(str(files.working_path(published, NAME))) as con:
        con.execute("update metrics.mrr_daily set new_mrr = 0 where date = '2025-02-25' and currency = 'usd'")
    result = materialize(published)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [(e.asset_key, e.check_name) for e in failed] == [(MRR_BRIDGE_MONTHLY, "movements_reconcile")]
    assert failed[0].metadata["failing_rows"].value == 1
    with duckdb.connect(str(files.working_path(published, NAME)), read_only=True) as con:
        new = con.execute("select new_mrr from marts.mrr_bridge_monthly where currency = 'usd' "
                          "and month = '2025-02-01'").fetchone()[0]
    assert float(new) == 70.0  # the table from the good run is still there


# --- reporting currency ------------------------------------------------------------------------------------------

REPORTING = [mrr_daily_reporting, kpis_monthly_reporting]


def materialize_all(published: Path) -> dg.ExecuteInProcessResult:
    partition = NAME if MART_ASSETS[0].partitions_def else None
    return dg.materialize([*MART_ASSETS, *REPORTING, mrr_report], partition_key=partition, raise_on_error=False,
                          resources={"duckdb": WarehouseResource(database=str(published))})


def tables(published: Path) -> set[str]:
    with duckdb.connect(str(files.working_path(published, NAME)), read_only=True) as con:
        return {f"{s}.{t}" for s, t in con.execute("select table_schema, table_name from information_schema.tables"
                                                   " where table_schema in ('metrics', 'marts')").fetchall()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_without_rates_the_reporting_tables_are_absent_and_nothing_fails(published: Path, monkeypatch) -> None:
    monkeypatch.delenv("SEGFLOW_FX_RATES", raising=False)
    result = materialize_all(published)
    assert result.success
    assert not {"metrics.mrr_daily_reporting", "marts.kpis_monthly_reporting"} & tables(published)
    evaluations = checks(result)
    not_run = evaluations["metrics/mrr_daily_reporting:rates_cover_every_day"]
    assert not_run.passed and not_run.metadata["evaluated"].value is False
    materialization = result.asset_materializations_for_node("metrics__mrr_daily_reporting")[0]
    assert materialization.metadata["computed"].value is False


def test_with_rates_every_currency_is_converted(published: Path, tmp_path: Path, monkeypatch) -> None:
    # the hand-made usd and eur story of test_sql_models: eur 40.00 from Mar 1; eur is 1.10 usd, 1.20 from Mar 3
    rates = tmp_path / "fx.csv"
    rates.write_text("date,currency,rate\n2025-01-01,eur,1.10\n2025-03-03,eur,1.20\n")
    monkeypatch.setenv("SEGFLOW_FX_RATES", str(rates))
    monkeypatch.delenv("SEGFLOW_REPORTING_CURRENCY", raising=False)
    result = materialize_all(published)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    with duckdb.connect(str(files.working_path(published, NAME)), read_only=True) as con:
        daily = con.execute("select date, mrr, new_mrr, reactivation_mrr, fx_adjustment_mrr from "
                            "metrics.mrr_daily_reporting where date >= '2025-02-28' order by date").fetchall()
        march = con.execute("select starting_mrr, ending_mrr, new_mrr, reactivation_mrr, fx_adjustment_mrr, "
                            "paying_customers, net_revenue_retention from marts.kpis_monthly_reporting "
                            "where month = '2025-03-01'").fetchone()
    assert [(d.isoformat(), str(m), str(n), str(r), str(f)) for d, m, n, r, f in daily] == [
        ("2025-02-28", "200.00", "0.00", "0.00", "0.00"),
        ("2025-03-01", "244.00", "44.00", "0.00", "0.00"),  # eur 40 x 1.10 arrives as new
        ("2025-03-02", "244.00", "0.00", "0.00", "0.00"),
        ("2025-03-03", "278.00", "0.00", "30.00", "4.00"),  # B back at 30 usd; eur 40 now 48: +4 from the rate
        ("2025-03-04", "278.00", "0.00", "0.00", "0.00"),
        ("2025-03-05", "278.00", "0.00", "0.00", "0.00"),
    ]
    assert [str(v) for v in march] == ["200.00", "278.00", "44.00", "30.00", "4.00", "4", "1.0000"]
    metadata = result.asset_materializations_for_node("marts__mrr_report")[0].metadata
    assert metadata["reporting_currency"].value == "usd" and "total_chart" in metadata
    # the report moves its own files into place, beside the published file
    assert (files.reports_dir(published, NAME) / "total.png").exists()

    monkeypatch.delenv("SEGFLOW_FX_RATES")  # rates removed: the tables and the total chart go
    again = materialize_all(published)
    assert again.success
    assert not {"metrics.mrr_daily_reporting", "marts.kpis_monthly_reporting"} & tables(published)
    report = files.reports_dir(published, NAME)
    assert (report / "mrr.html").exists() and not (report / "total.png").exists()


def test_a_day_without_a_rate_fails_naming_currency_and_day(published: Path, tmp_path: Path, monkeypatch) -> None:
    rates = tmp_path / "fx.csv"
    rates.write_text("date,currency,rate\n2025-03-03,eur,1.20\n")
    monkeypatch.setenv("SEGFLOW_FX_RATES", str(rates))
    result = materialize_all(published)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [(e.asset_key.to_user_string(), e.check_name) for e in failed] == [
        ("metrics/mrr_daily_reporting", "rates_cover_every_day")]
    assert "eur" in failed[0].metadata["first_failures"].value and "2025-03-01" in failed[0].metadata[
        "first_failures"].value
    message = " ".join(failure_messages(result))
    assert "no rate into usd for eur on 2025-03-01 (and 1 later days)" in message
    assert "metrics.mrr_daily_reporting" not in tables(published)


@pytest.mark.parametrize(("content", "message"), [
    ("date,currency,rate\n2025-01-01,eur,1.1\n2025-01-32,eur,1.2\n", "line 3 (2025-01-32,eur,1.2): date must be"),
    ("day,rate\n2025-01-01,1.1\n", "header must be date,currency,rate"),
], ids=["bad-date", "bad-header"])
def test_an_unusable_rates_file_fails_with_the_line(published: Path, tmp_path: Path, monkeypatch, content,
                                                    message) -> None:
    rates = tmp_path / "fx.csv"
    rates.write_text(content)
    monkeypatch.setenv("SEGFLOW_FX_RATES", str(rates))
    result = materialize_all(published)
    assert not result.success and message in " ".join(failure_messages(result))


def test_a_rates_setting_that_points_nowhere_says_so(published: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEGFLOW_FX_RATES", str(tmp_path / "nowhere.csv"))
    result = materialize_all(published)
    assert not result.success and "no such file" in " ".join(failure_messages(result))


def test_a_table_no_model_builds_any_more_is_dropped_and_not_published(published: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    # a working file written by an earlier version: its customer_metrics_monthly would be published for ever
    rates = tmp_path / "fx.csv"
    rates.write_text("date,currency,rate\n2025-01-01,eur,1.10\n")
    monkeypatch.setenv("SEGFLOW_FX_RATES", str(rates))
    with duckdb.connect(str(files.working_path(published, NAME))) as con:
        con.execute("create schema if not exists marts")
        con.execute("create table marts.customer_metrics_monthly as select 'acme' as integration, -6.2 as nrr")
    assert materialize_all(published).success
    assert "marts.customer_metrics_monthly" not in tables(published)
    assert {"marts.kpis_monthly", "marts.kpis_monthly_reporting", "metrics.mrr_daily_reporting"} <= tables(published)
    files.publish(published, [NAME])
    with duckdb.connect(str(published), read_only=True) as con:
        marts = {t for (t,) in con.execute("select table_name from information_schema.tables "
                                           "where table_schema = 'marts'").fetchall()}
    assert "customer_metrics_monthly" not in marts and "kpis_monthly_reporting" in marts
