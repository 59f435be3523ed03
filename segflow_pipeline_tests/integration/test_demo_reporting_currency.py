"""`segflow demo` on the sandbox shows a total in usd from the rates the sandbox ships, unless the user set their own."""

import os
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pytest

from segflow_pipeline_tests.support.paths import PROJECT

BIN = Path(sys.executable).parent


def demo(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    published = tmp_path / "data" / "segflow.duckdb"
    env = {**os.environ, "SEGFLOW_DUCKDB_PATH": str(published), "SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "no.yaml"),
           "PYTHONPATH": str(PROJECT), **extra}
    for name in ("STRIPE_API_KEY", "STRIPE_API_BASE", "DAGSTER_HOME", "SEGFLOW_FX_RATES",
                 "SEGFLOW_REPORTING_CURRENCY"):
        if name not in extra:
            env.pop(name, None)
    out = subprocess.run([str(BIN / "segflow"), "demo", "--subscriptions", "60"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    return out, published


@pytest.mark.slow
def test_the_sandbox_demo_converts_into_usd(tmp_path: Path) -> None:
    out, published = demo(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with duckdb.connect(str(published), read_only=True) as con:
        currencies = con.execute("select distinct reporting_currency from metrics.mrr_daily_reporting").fetchall()
        months = con.execute("select count(*) from marts.kpis_monthly_reporting").fetchone()[0]
    assert currencies == [("usd",)] and months > 12
    assert (published.parent / "reports" / "default" / "total.png").exists()


@pytest.mark.slow
def test_the_users_rates_win_over_the_sandboxs(tmp_path: Path) -> None:
    rates = tmp_path / "mine.csv"
    rates.write_text("date,currency,rate\n2000-01-01,usd,0.5\n2000-01-01,jpy,0.004\n")
    out, published = demo(tmp_path, SEGFLOW_FX_RATES=str(rates), SEGFLOW_REPORTING_CURRENCY="eur")
    assert out.returncode == 0, out.stderr[-3000:]
    with duckdb.connect(str(published), read_only=True) as con:
        today = dict(con.execute("select currency, mrr from metrics.mrr_daily where date = "
                                 "(select max(date) from metrics.mrr_daily)").fetchall())
        total = con.execute("select reporting_currency, mrr from metrics.mrr_daily_reporting "
                            "order by date desc limit 1").fetchone()
    half_up = lambda v: v.quantize(Decimal("0.01"), ROUND_HALF_UP)  # noqa: E731
    assert total == ("eur", today["eur"] + half_up(today["usd"] * Decimal("0.5"))
                     + half_up(today["jpy"] * Decimal("0.004")))
