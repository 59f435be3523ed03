"""reporting/forecast_chart.py: a PNG per call (with and without a forecast), the report section with its tables,
added once to a page however often the report is rebuilt."""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.reporting import forecast_chart
from segflow_pipeline.transform import forecast as fc
from segflow_pipeline.transform import forecast_accuracy as fa
from segflow_pipeline_tests.unit.transform.test_forecast import daily

PNG = b"\x89PNG\r\n\x1a\n"


def test_chart_and_section_for_a_forecast_and_a_short_series() -> None:
    history = pl.concat([daily({"new_mrr": [1000] * 200}), daily({"new_mrr": [500] * 20}, currency="eur")])
    result = fc.mrr_forecast(history)
    accuracy = fa.forecast_accuracy(history)
    bets = [("launch", dt.date(2025, 5, 1)), ("far-away", dt.date(2020, 1, 1))]
    image = forecast_chart.forecast_chart(history, result.forecast, bets, result.status)
    assert image.startswith(PNG) and len(image) > 10_000
    section = forecast_chart.forecast_section_html(image, result.status, accuracy)
    assert section.count("<table>") == 2
    assert "20 days of history; a forecast needs at least 60" in section
    assert "flows_rates" in section and "naive" in section


def test_an_empty_account_still_draws() -> None:
    empty = fc.mrr_forecast(daily({"new_mrr": [1]}).clear())
    assert forecast_chart.forecast_chart(daily({"new_mrr": [1]}).clear(), empty.forecast).startswith(PNG)


def test_the_section_is_added_once_before_the_end_of_the_page() -> None:
    page = "<html><body><h1>MRR</h1></body></html>"
    once = forecast_chart.add_section(page, f"{forecast_chart.SECTION_START}<p>v1</p>{forecast_chart.SECTION_END}")
    twice = forecast_chart.add_section(once, f"{forecast_chart.SECTION_START}<p>v2</p>{forecast_chart.SECTION_END}")
    assert twice.count(forecast_chart.SECTION_START) == 1 and "<p>v2</p>" in twice and "<p>v1</p>" not in twice
    assert twice.index("<p>v2</p>") < twice.index("</body>")
