"""Forecast, accuracy, drivers and bets on the sandbox, the whole job run in process against the emulator over HTTP:
the published tables hold what the issue promises, recomputed here from other tables; a broken bets file stops the
run before publishing; a drivers split that does not add up fails `sums_to_bridge`."""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from segflow_pipeline.defs.integrations import INTEGRATIONS
from segflow_pipeline.defs.marts.assets import MART_ASSETS
from segflow_pipeline.defs.marts.drivers import MRR_DRIVERS_MONTHLY, sums_to_bridge
from segflow_pipeline.defs.metrics.forecast import MRR_FORECAST, mrr_forecast
from segflow_pipeline.resources.warehouse import WarehouseResource
from segflow_pipeline.runner import load_definitions
from segflow_pipeline.transform import forecast
from segflow_pipeline.warehouse import files
from segflow_pipeline.warehouse import tables as wh
from segflow_pipeline_tests.support.accounts import ACME_KEY
from segflow_pipeline_tests.integration.test_pipeline import check_results, run_job
from segflow_pipeline_tests.unit.transform.test_forecast import daily
from segflow_pipeline_tests.unit.warehouse.test_sql_models import seed

DAY = 86400


def bets_yaml(account) -> str:
    now = dt.datetime.fromtimestamp(account.now, dt.timezone.utc).date()
    product = next(p.id for p in account.products if p.name == "Business")
    return (f"bets:\n  - name: spring-push\n    start: {now - dt.timedelta(days=120)}\n"
            f"    end: {now - dt.timedelta(days=60)}\n    note: all MRR\n"
            f"  - name: business-plan\n    start: {now - dt.timedelta(days=90)}\n    product: {product}\n"
            f"  - name: next-quarter\n    start: {now + dt.timedelta(days=10)}\n")


@pytest.fixture(scope="module")
def refreshed(emulator, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("forecast")
    published = root / "segflow.duckdb"
    (root / "bets.yaml").write_text(bets_yaml(emulator.accounts[ACME_KEY]))
    for k, v in {"STRIPE_API_KEY": ACME_KEY, "STRIPE_API_BASE": emulator.url, "SEGFLOW_DUCKDB_PATH": str(published),
                 "SEGFLOW_INTEGRATIONS_FILE": str(root / "none.yaml"),
                 "SEGFLOW_BETS_FILE": str(root / "bets.yaml")}.items():
        mp.setenv(k, v)
    mp.delenv("DAGSTER_HOME", raising=False)
    result = run_job()
    con = duckdb.connect(str(published), read_only=True)
    yield result, published, con, root, mp
    con.close()
    mp.undo()


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def test_the_run_succeeds_with_every_forecast_and_drivers_check(refreshed):
    result, *_ = refreshed
    assert result.success
    checks = check_results(result)
    for name in ("metrics/mrr_forecast:intervals_ordered", "metrics/mrr_forecast:ninety_days_per_series",
                 "metrics/mrr_forecast:short_history_stated", "marts/mrr_drivers_monthly:sums_to_bridge",
                 "marts/mrr_drivers_monthly:movements_reconcile", "marts/mrr_drivers_daily:net_is_the_movements"):
        assert checks[name] is True, name


def test_each_currency_has_90_ordered_days_after_today(refreshed):
    _, _, con, *_ = refreshed
    history = rows(con, "select currency, min(date), max(date), count(*) from metrics.mrr_daily group by currency")
    assert history
    for currency, first, last, days in history:
        got = rows(con, "select count(*), count(distinct date), min(date), max(date), min(horizon_day), "
                        "max(horizon_day), any_value(method), any_value(origin_date) from metrics.mrr_forecast "
                        "where currency = ? and basis = 'currency'", [currency])[0]
        if days >= forecast.MIN_HISTORY_DAYS:
            assert got == (90, 90, last + dt.timedelta(days=1), last + dt.timedelta(days=90), 1, 90, "flows_rates",
                           last), currency
        else:
            assert got[0] == 0
    broken = rows(con, "select count(*) from metrics.mrr_forecast where not (0 <= lower_95 and lower_95 <= lower_80 "
                       "and lower_80 <= mrr_forecast and mrr_forecast <= upper_80 and upper_80 <= upper_95)")
    assert broken == [(0,)]
    # the forecast starts from today's MRR and moves by its own movements, to the cent
    jumps = rows(con, """
        with f as (select currency, date, mrr_forecast, new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr
                          - churned_mrr as net from metrics.mrr_forecast),
        prev as (select currency, date + 1 as date, mrr from metrics.mrr_daily
                 union all select currency, date + 1, mrr_forecast from f)
        select count(*) from f join prev using (currency, date) where f.mrr_forecast - prev.mrr <> f.net""")
    assert jumps == [(0,)]


def test_status_names_every_series(refreshed):
    _, _, con, *_ = refreshed
    status = rows(con, "select currency, forecast, history_days, reason from metrics.mrr_forecast_status "
                       "order by currency")
    daily = rows(con, "select currency, count(*) from metrics.mrr_daily group by currency order by currency")
    assert [(c, n) for c, _, n, _ in status] == daily
    for currency, forecast_made, days, reason in status:
        assert forecast_made == (days >= forecast.MIN_HISTORY_DAYS)
        assert reason == ("forecast" if forecast_made else f"{days} days of history; a forecast needs at least 60")


def test_accuracy_rows_and_the_naive_mape_recomputed_from_mrr_daily(refreshed):
    _, _, con, *_ = refreshed
    counts = rows(con, "select currency, count(*), count(distinct method), count(distinct horizon_days) "
                       "from metrics.mrr_forecast_accuracy group by currency")
    forecast_currencies = {c for (c,) in rows(con, "select distinct currency from metrics.mrr_forecast")}
    assert {c for c, *_ in counts} == forecast_currencies
    assert all(n == 12 and m == 4 and h == 3 for _, n, m, h in counts)
    # naive's MAPE straight from metrics.mrr_daily: month ends of the 12 months before this one, 60 days of history
    expected = rows(con, """
        with series as (select currency, min(date) as first, max(date) as last from metrics.mrr_daily group by all),
        origins as (select s.currency, (date_trunc('month', s.last) - interval (k) month - interval 1 day)::date as o
                    from series s, range(12) r(k)),
        usable as (select o.currency, o.o, h from origins o join series s using (currency), (values (30), (60), (90))
                   v(h) where o.o - s.first + 1 >= 60 and o.o + h <= s.last)
        select u.currency, u.h, count(*), avg(abs(b.mrr - a.mrr) / b.mrr)
        from usable u join metrics.mrr_daily a on a.currency = u.currency and a.date = u.o
        join metrics.mrr_daily b on b.currency = u.currency and b.date = u.o + u.h
        group by all order by all""")
    got = rows(con, "select currency, horizon_days, origins, mape from metrics.mrr_forecast_accuracy "
                    "where method = 'naive' and origins > 0 order by all")
    assert [(c, h, n) for c, h, n, _ in got] == [(c, h, n) for c, h, n, _ in expected]
    for (_, _, _, mape), (_, _, _, truth) in zip(got, expected):
        assert mape == pytest.approx(float(truth), abs=1e-6)
    notes = rows(con, "select note from metrics.mrr_forecast_accuracy where method = 'flows_rates' and origins > 0")
    assert notes and all(n.startswith(("beats naive", "does NOT beat naive")) for (n,) in notes)


def test_drivers_add_up_to_month_end_mrr_of_mrr_monthly(refreshed):
    _, _, con, *_ = refreshed
    mismatch = rows(con, """
        with split as (select currency, month, sum(ending_mrr) as mrr from marts.mrr_drivers_monthly group by all)
        select count(*), count(*) filter (where s.mrr is distinct from m.mrr)
        from marts.mrr_monthly m left join split s using (currency, month)""")
    assert mismatch[0][0] > 0 and mismatch[0][1] == 0
    intervals = {i for (i,) in rows(con, "select distinct billing_interval from marts.mrr_drivers_monthly")}
    assert {"monthly", "yearly"} <= intervals


def test_bet_impact_compares_with_the_forecast_from_before_the_start(refreshed, emulator):
    _, _, con, *_ = refreshed
    impact = rows(con, "select bet, currency, start_date, evaluated_on, actual_mrr, forecast_mrr, lower_95, "
                       "upper_95, difference, outside_95, status from marts.bet_impact order by bet, currency")
    by_bet = {}
    for row in impact:
        by_bet.setdefault(row[0], []).append(row)
    assert set(by_bet) == {"spring-push", "business-plan", "next-quarter"}
    for bet, currency, start, evaluated, actual, point, low, high, diff, outside, status in by_bet["spring-push"]:
        assert status == "compared" and evaluated == start + dt.timedelta(days=60)
        truth = rows(con, "select mrr from metrics.mrr_daily where currency = ? and date = ?", [currency, evaluated])
        assert actual == truth[0][0] and diff == actual - point
        assert outside == (actual < low or actual > high) and low <= point <= high
    assert all(r[-1].startswith("not started") for r in by_bet["next-quarter"])
    business = [r for r in by_bet["business-plan"] if r[-1].startswith("compared")]
    assert business
    for _, currency, _, evaluated, actual, *_ in business:
        product = rows(con, "select sum(net_new_mrr) from marts.mrr_drivers_daily where currency = ? and date <= ? "
                            "and product_name = 'Business'", [currency, evaluated])
        assert actual == product[0][0]


def test_report_and_ui_show_the_forecast(refreshed):
    result, published, con, *_ = refreshed
    folder = published.parent / "reports" / INTEGRATIONS[0].name
    assert (folder / "forecast.png").stat().st_size > 10_000
    page = (folder / "mrr.html").read_text()
    assert page.count("Forecast: the next 90 days") == 1 and "spring-push" in page
    report = result.asset_materializations_for_node("marts__mrr_report")[0].metadata
    assert report["forecast_chart"].value.startswith("![MRR forecast](data:image/png;base64,")
    asset = result.asset_materializations_for_node("mrr_forecast")
    chart = [m for m in asset if m.asset_key == dg.AssetKey(["metrics", "mrr_forecast"])][0].metadata
    assert chart["forecast_chart"].value.startswith("![MRR forecast](data:image/png;base64,")
    skipped = rows(con, "select currency from metrics.mrr_forecast_status where not forecast order by currency")
    listed = chart["series_without_forecast"].value
    assert listed == "none" if not skipped else [line.split()[1] for line in listed.splitlines()] == [
        c for (c,) in skipped]


def test_a_broken_bets_file_stops_the_run_before_publishing(refreshed):
    _, published, con, root, mp = refreshed
    before = published.stat().st_mtime_ns
    (root / "broken.yaml").write_text("bets:\n  - name: a\n    start: 2026-02-30\n")
    mp.setenv("SEGFLOW_BETS_FILE", str(root / "broken.yaml"))
    try:
        result = load_definitions().resolve_job_def("daily_refresh_job").execute_in_process(
            run_config={"ops": {"stripe_sync": {"config": {"mode": "auto"}}}}, raise_on_error=False)
    finally:
        mp.setenv("SEGFLOW_BETS_FILE", str(root / "bets.yaml"))
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["marts__bet_impact"]
    assert "broken.yaml:2: start '2026-02-30' is not a date" in failures[0].step_failure_data.user_failure_data.description
    assert published.stat().st_mtime_ns == before


# --- sums_to_bridge blocks when the split does not add up --------------------------------------------------------------

@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "segflow.duckdb"
    name = INTEGRATIONS[0].name
    working = files.working_path(path, name)
    working.parent.mkdir(parents=True)
    con = duckdb.connect(str(working))
    seed(con, name)
    con.execute("drop schema marts cascade")
    con.close()
    return path


def materialize_marts(published: Path) -> dg.ExecuteInProcessResult:
    partition = INTEGRATIONS[0].name if MART_ASSETS[0].partitions_def else None
    return dg.materialize([*MART_ASSETS, sums_to_bridge], partition_key=partition, raise_on_error=False,
                          resources={"duckdb": WarehouseResource(database=str(published))})


def test_sums_to_bridge_fails_when_a_customer_movement_is_off_by_a_cent(seeded: Path):
    good = materialize_marts(seeded)
    verdict = [e for e in good.get_asset_check_evaluations() if e.check_name == "sums_to_bridge"]
    assert [e.passed for e in verdict] == [True]
    with duckdb.connect(str(files.working_path(seeded, INTEGRATIONS[0].name))) as con:
        con.execute("update metrics.mrr_customer_movements set amount = amount + 0.01 "
                    "where customer = 'cus_c' and movement = 'new'")
    bad = materialize_marts(seeded)
    verdict = [e for e in bad.get_asset_check_evaluations() if e.check_name == "sums_to_bridge"]
    assert [(e.asset_key, e.passed) for e in verdict] == [(MRR_DRIVERS_MONTHLY, False)]
    assert verdict[0].metadata["failing_rows"].value == 2  # February's new MRR and its ending, then March's start


# --- the asset on a hand-made working file: the reporting-currency series and a short series ---------------------------

def test_the_asset_forecasts_the_reporting_total_and_states_the_short_series(tmp_path: Path):
    name = INTEGRATIONS[0].name
    published = tmp_path / "data" / "segflow.duckdb"
    working = files.working_path(published, name)
    working.parent.mkdir(parents=True)
    usd = daily({"new_mrr": [1000] * 200}, integration=name, opening_cents=100_000)
    eur = daily({"new_mrr": [500] * 30}, currency="eur", integration=name, first=dt.date(2025, 6, 20))
    history = pl.concat([usd, eur]).with_columns(
        (pl.col("mrr") * 12).alias("arr"), pl.lit(1, pl.Int32).alias("active_subscriptions"),
        pl.lit(1, pl.Int32).alias("paying_customers"))
    reporting = usd.select("integration", "date", pl.lit("chf").alias("reporting_currency"),
                           (pl.col("mrr") * 2).cast(pl.Decimal(18, 2)).alias("mrr"))
    with duckdb.connect(str(working)) as con:
        wh.replace_rows(con, "metrics", "mrr_daily", history, name)
        wh.replace_rows(con, "metrics", "mrr_daily_reporting", reporting, name)
    result = dg.materialize([mrr_forecast], partition_key=name if mrr_forecast.partitions_def else None,
                            resources={"duckdb": WarehouseResource(database=str(published))})
    assert result.success
    with duckdb.connect(str(working), read_only=True) as con:
        got = rows(con, "select basis, currency, count(*), max(mrr_forecast) from metrics.mrr_forecast "
                        "group by all order by all")
        status = rows(con, "select basis, currency, forecast, reason from metrics.mrr_forecast_status order by all")
    assert got == [("currency", "usd", 90, usd["mrr"][-1] + 900), ("reporting", "chf", 90, 2 * usd["mrr"][-1] + 1800)]
    assert status[0][:3] == ("currency", "eur", False) and status[0][3].startswith("30 days of history")
    assert status[2][:3] == ("reporting", "chf", True) and "no movements" in status[2][3]
    metadata = [m for m in result.asset_materializations_for_node("mrr_forecast")
                if m.asset_key == MRR_FORECAST][0].metadata
    assert metadata["series_without_forecast"].value == (
        "- eur (currency): 30 days of history; a forecast needs at least 60")
    assert metadata["mrr_in_90_days_chf_reporting"].value == float(2 * usd["mrr"][-1] + 1800)
