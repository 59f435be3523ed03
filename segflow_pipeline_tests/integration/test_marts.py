"""The marts assets and the MRR report, materialized in process on a seeded working file: tables written, every
declared test reported as a check, charts beside the DuckDB file; a broken property stops the write."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segflow_pipeline.defs.integrations import INTEGRATIONS
from segflow_pipeline.defs.marts.assets import MART_ASSETS, MART_KEYS, MODELS, UPSTREAM
from segflow_pipeline.defs.marts.report import MRR_BRIDGE_MONTHLY, MRR_REPORT, mrr_report
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


def materialize(published: Path) -> dg.ExecuteInProcessResult:
    partition = NAME if MART_ASSETS[0].partitions_def else None
    return dg.materialize([*MART_ASSETS, mrr_report], partition_key=partition, raise_on_error=False,
                          resources={"duckdb": WarehouseResource(database=str(published))})


def test_definitions_hold_one_asset_per_model_with_deps_from_the_sql() -> None:
    defs = dg.Definitions(assets=[*MART_ASSETS, mrr_report], resources={"duckdb": WarehouseResource(database="x")})
    graph = defs.resolve_asset_graph()
    assert {k.path[1] for k in MART_KEYS} >= {"mrr_monthly", "mrr_bridge_monthly", "mrr_by_product",
                                              "customer_metrics_monthly", "trials_monthly"}
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
    # Written aside until the same run's publish step moves them into place (none here: publish did not run).
    assert not report.exists()
    pending = files.pending_reports_dir(published, NAME, result.run_id)
    assert {p.name for p in pending.iterdir()} == {"mrr.png", "bridge.png", "mrr.html"}
    assert files.publish_reports(published, result.run_id) == [NAME]
    assert {p.name for p in report.iterdir()} == {"mrr.png", "bridge.png", "mrr.html"} and not pending.exists()
    metadata = result.asset_materializations_for_node("marts__mrr_report")[0].metadata
    assert metadata["mrr_chart"].value.startswith("![MRR per currency](data:image/png;base64,")
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
