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
