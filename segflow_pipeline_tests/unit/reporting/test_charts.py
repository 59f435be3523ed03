"""Charts and the HTML report: PNGs are written and non-trivial, the HTML needs nothing from outside."""

from __future__ import annotations

import base64
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from segflow_pipeline.reporting import charts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MOVES = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")


def daily_frame() -> pl.DataFrame:
    rows = []
    for currency, first, step in (("usd", dt.date(2024, 1, 1), Decimal("12.50")), ("jpy", dt.date(2024, 11, 15),
                                                                                   Decimal("1500"))):
        day, mrr = first, Decimal("0")
        while day <= dt.date(2025, 3, 5):
            mrr += step
            rows.append({"currency": currency, "date": day, "mrr": mrr})
            day += dt.timedelta(days=1)
    return pl.DataFrame(rows, schema={"currency": pl.String, "date": pl.Date, "mrr": pl.Decimal(18, 2)})


def bridge_frame() -> pl.DataFrame:
    rows, ending = [], Decimal("0")
    for i in range(15):
        month = dt.date(2024 + (i // 12), i % 12 + 1, 1)
        moves = dict(zip(MOVES, (Decimal(300 + 10 * i), Decimal(50), Decimal(i % 3 * 10), Decimal(20), Decimal(40))))
        starting, ending = ending, ending + moves["new_mrr"] + moves["expansion_mrr"] + moves["reactivation_mrr"] \
            - moves["contraction_mrr"] - moves["churned_mrr"]
        rows.append({"currency": "usd", "month": month, "starting_mrr": starting, **moves, "ending_mrr": ending})
    schema = {"currency": pl.String, "month": pl.Date,
              **{c: pl.Decimal(18, 2) for c in ("starting_mrr", *MOVES, "ending_mrr")}}
    return pl.DataFrame(rows, schema=schema)


def test_write_report_writes_pngs_and_one_self_contained_page(tmp_path: Path) -> None:
    files = charts.write_report(tmp_path / "reports" / "acme", "acme", daily_frame(), bridge_frame(),
                                dt.datetime(2025, 3, 5, 12, tzinfo=dt.timezone.utc))
    assert [p.name for p in (files.mrr_png, files.bridge_png, files.html)] == ["mrr.png", "bridge.png", "mrr.html"]
    for png in (files.mrr_png, files.bridge_png):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    page = files.html.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "the page must not load anything from outside"
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(i) for i in images] == [files.mrr_image, files.bridge_image]
    # the last 12 months of the bridge, newest first, with thousands separators
    months = re.findall(r"<tr><td>([A-Z][a-z]{2} \d{4})</td>", page)
    assert months[0] == "Mar 2025" and months[-1] == "Apr 2024" and len(months) == 12
    assert "<td>5,550.00</td></tr>" in page  # ending MRR of Mar 2025
    assert not list(files.html.parent.glob(".*.tmp"))


def test_charts_cover_every_currency() -> None:
    one = charts.mrr_chart(daily_frame().filter(pl.col("currency") == "usd"))
    two = charts.mrr_chart(daily_frame())
    assert one.startswith(PNG_MAGIC) and two.startswith(PNG_MAGIC)
    assert _png_height(two) > 1.8 * _png_height(one)  # one panel per currency


@pytest.mark.parametrize("render", [charts.mrr_chart, charts.bridge_chart], ids=["mrr", "bridge"])
def test_charts_render_without_data(render) -> None:
    empty = pl.DataFrame(schema={"currency": pl.String, "date": pl.Date, "month": pl.Date, "mrr": pl.Decimal(18, 2)})
    assert render(empty).startswith(PNG_MAGIC)


def test_a_series_of_one_day_renders() -> None:
    frame = pl.DataFrame({"currency": ["eur"], "date": [dt.date(2025, 3, 5)], "mrr": [Decimal("40.00")]})
    assert charts.mrr_chart(frame).startswith(PNG_MAGIC)
    assert charts.bridge_chart(bridge_frame().tail(1)).startswith(PNG_MAGIC)


def test_markdown_image_embeds_the_png() -> None:
    image = PNG_MAGIC + b"data"
    encoded = base64.b64encode(image).decode()
    assert charts.markdown_image("mrr", image) == f"![mrr](data:image/png;base64,{encoded})"


def test_html_escapes_names(tmp_path: Path) -> None:
    page = charts.report_html("<acme>", b"x", b"y", bridge_frame(), dt.datetime(2025, 3, 5))
    assert "<acme>" not in page and "&lt;acme&gt;" in page


def _png_height(data: bytes) -> int:
    return int.from_bytes(data[20:24], "big")


# --- KPIs, cohorts and the reporting currency --------------------------------------------------------------------

KPI_MONEY = ("starting_mrr", "ending_mrr", "net_new_mrr", "new_mrr", "churned_mrr", "arpa")
KPI_RATES = ("net_revenue_retention", "gross_revenue_retention", "logo_churn_rate", "quick_ratio")


def kpis_frame() -> pl.DataFrame:
    rows = []
    for currency, unit in (("usd", Decimal("100.50")), ("jpy", Decimal("5000"))):
        ending = Decimal("0")
        for i in range(14):
            month = dt.date(2024 + (i + 1) // 12, (i + 1) % 12 + 1, 1)
            starting, ending = ending, ending + unit * (i % 4) - (unit if i % 5 == 0 else 0)
            rows.append({"currency": currency, "month": month, "as_of_date": month.replace(day=28),
                         "starting_mrr": starting, "ending_mrr": ending, "net_new_mrr": ending - starting,
                         "new_mrr": unit * (i % 4), "churned_mrr": unit if i % 5 == 0 else Decimal("0"),
                         "arpa": (ending / 3).quantize(Decimal("0.01")), "paying_customers": 3 + i,
                         "net_revenue_retention": None if i == 0 else Decimal("0.9512") + Decimal(i) / 100,
                         "gross_revenue_retention": None if i == 0 else Decimal("0.9012"),
                         "logo_churn_rate": None if i == 0 else Decimal("0.0333"),
                         "quick_ratio": None if i % 5 else Decimal("2.5")})
    schema = {"currency": pl.String, "month": pl.Date, "as_of_date": pl.Date, "paying_customers": pl.Int32,
              **{c: pl.Decimal(18, 2) for c in KPI_MONEY}, **{c: pl.Decimal(18, 4) for c in KPI_RATES}}
    return pl.DataFrame(rows, schema=schema)


def cohorts_frame() -> pl.DataFrame:
    rows = []
    for c in range(15):
        cohort = dt.date(2024 + c // 12, c % 12 + 1, 1)
        for k in range(15 - c):
            rows.append({"currency": "usd", "cohort_month": cohort, "months_since_start": k,
                         "customer_retention_rate": Decimal(1) - Decimal(k) / 40,
                         "mrr_retention_rate": None if c == 3 else Decimal(1) + Decimal(k - 5) / 50})
    return pl.DataFrame(rows, schema={"currency": pl.String, "cohort_month": pl.Date, "months_since_start": pl.Int32,
                                      "customer_retention_rate": pl.Decimal(18, 4),
                                      "mrr_retention_rate": pl.Decimal(18, 4)})


def reporting_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    daily = daily_frame().filter(pl.col("currency") == "usd").with_columns(pl.lit("usd").alias("reporting_currency"))
    kpis = kpis_frame().filter(pl.col("currency") == "usd").drop("currency").with_columns(
        pl.lit("usd").alias("reporting_currency"),
        *[pl.lit(Decimal("1.00")).cast(pl.Decimal(18, 2)).alias(c) for c in MOVES
          if c not in ("new_mrr", "churned_mrr")],
        pl.lit(Decimal("-3.21")).cast(pl.Decimal(18, 2)).alias("fx_adjustment_mrr"))
    return daily, kpis


@pytest.mark.parametrize(
    ("value", "currency", "signed", "text"),
    [(Decimal("1234.5"), "usd", False, "1,234.50"), (Decimal("183083.00"), "jpy", False, "183,083"),
     (Decimal("0.00"), "jpy", True, "+0"), (Decimal("-51.3"), "eur", True, "-51.30"), (None, "usd", False, "")],
    ids=["usd", "jpy-no-decimals", "jpy-signed", "eur-negative", "none"],
)
def test_amounts_are_shown_with_the_currencys_decimals(value, currency, signed, text) -> None:
    assert charts.format_amount(value, currency, signed=signed) == text


def test_rates_are_shown_as_percentages() -> None:
    assert charts.format_rate(Decimal("0.8667")) == "86.7 %"
    assert charts.format_rate(None) == "\u2013"


def test_the_report_opens_with_this_months_kpis_then_the_last_12_months(tmp_path: Path) -> None:
    reporting_daily, reporting_kpis = reporting_frames()
    files = charts.write_report(tmp_path, "acme", daily_frame(), bridge_frame(),
                                dt.datetime(2025, 3, 5, 12, tzinfo=dt.timezone.utc), kpis=kpis_frame(),
                                cohorts=cohorts_frame(), reporting_daily=reporting_daily,
                                reporting_kpis=reporting_kpis)
    assert {p.name for p in tmp_path.iterdir()} == {"mrr.png", "bridge.png", "kpis.png", "cohorts.png", "total.png",
                                                     "mrr.html"}
    for png in (files.kpis_png, files.cohorts_png, files.total_png):
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 20_000
    page = files.html.read_text()
    sections = re.findall(r"<h2>([^<]+)</h2>", page)
    assert sections == ["This month", "Last 12 months", "Total MRR", "Cohort retention", "MRR", "Monthly movements",
                        "MRR bridge"]
    images = [base64.b64decode(i) for i in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert images == [files.kpis_image, files.total_image, files.cohorts_image, files.mrr_image, files.bridge_image]
    cards = re.findall(r'<div class="card"><h3>([^<]+)</h3><dl>(.*?)</dl></div>', page)
    assert [title for title, _ in cards] == ["All currencies in USD: March 2025 to Mar 28", "JPY: March 2025 to Mar 28",
                                             "USD: March 2025 to Mar 28"]
    jpy = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", cards[1][1]))
    # the last jpy month: i = 13 -> ending 5000 x (0+1+2+3+0+1+2+3+0+1+2+3+0+1) - 5000 x 3 (months 0, 5, 10)
    assert jpy == {"MRR": "80,000", "Net new MRR": "+5,000", "NRR": "108.1 %", "GRR": "90.1 %", "Logo churn": "3.3 %",
                   "ARPA": "26,667", "Paying customers": "16", "Quick ratio": "\u2013"}
    months = re.findall(r"<tr><td>([A-Z][a-z]{2} \d{4})</td><td>[^<]*</td><td>[^<]*</td><td>[+-]", page)
    assert months[:12] == [dt.date(2025 - (i > 2), (2 - i) % 12 + 1, 1).strftime("%b %Y") for i in range(12)]
    assert "<td>183,083.00</td>" not in page and ".00</td>" in page  # jpy without decimals, usd with


def test_without_a_reporting_currency_the_total_chart_goes(tmp_path: Path) -> None:
    reporting_daily, reporting_kpis = reporting_frames()
    charts.write_report(tmp_path, "acme", daily_frame(), bridge_frame(), dt.datetime(2025, 3, 5), kpis=kpis_frame(),
                        cohorts=cohorts_frame(), reporting_daily=reporting_daily, reporting_kpis=reporting_kpis)
    files = charts.write_report(tmp_path, "acme", daily_frame(), bridge_frame(), dt.datetime(2025, 3, 5),
                                kpis=kpis_frame(), cohorts=cohorts_frame())
    assert files.total_png is None and not (tmp_path / "total.png").exists()
    assert "All currencies" not in files.html.read_text()


@pytest.mark.parametrize("render", [
    lambda: charts.kpi_chart(kpis_frame().head(0)),
    lambda: charts.cohort_chart(cohorts_frame().head(0)),
    lambda: charts.total_chart(reporting_frames()[0].head(0), reporting_frames()[1].head(0)),
    lambda: charts.kpi_chart(kpis_frame().head(1)),
    lambda: charts.cohort_chart(cohorts_frame().tail(1)),
], ids=["kpis-empty", "cohorts-empty", "total-empty", "kpis-one-month", "cohorts-one-cell"])
def test_kpi_cohort_and_total_charts_render_with_little_data(render) -> None:
    assert render().startswith(PNG_MAGIC)
