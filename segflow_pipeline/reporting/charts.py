"""MRR charts and the HTML report finance opens: rendering from frames to PNG bytes and HTML text, and writing them.

Belongs here: matplotlib figures (Agg backend, no display), number and date formatting, the self-contained HTML page
(images embedded as base64, no outside links) and writing those files. Not here: reading DuckDB or Dagster metadata
(`defs/marts/report.py` does both). Amounts arrive in major units as Decimal; they become floats only to be drawn.

Inputs: `daily` has metrics.mrr_daily's columns (at least currency, date, mrr); `bridge` has marts.mrr_bridge_monthly's
(currency, month, starting_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, ending_mrr).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

DPI = 110
WIDTH_IN = 11.0
PANEL_HEIGHT_IN = 3.6
# (column, legend label, colour, sign): increases stack up from 0, decreases stack down.
MOVEMENTS = (
    ("new_mrr", "New", "#2e7d32", 1),
    ("expansion_mrr", "Expansion", "#66bb6a", 1),
    ("reactivation_mrr", "Reactivation", "#1e88e5", 1),
    ("contraction_mrr", "Contraction", "#fb8c00", -1),
    ("churned_mrr", "Churned", "#c62828", -1),
)
TABLE_COLUMNS = (
    ("month", "Month"), ("starting_mrr", "Starting MRR"), ("new_mrr", "New"), ("expansion_mrr", "Expansion"),
    ("reactivation_mrr", "Reactivation"), ("contraction_mrr", "Contraction"), ("churned_mrr", "Churned"),
    ("ending_mrr", "Ending MRR"),
)


@dataclass(frozen=True)
class ReportFiles:
    """Where `write_report` put the report, and the chart bytes (for Dagster metadata)."""

    mrr_png: Path
    bridge_png: Path
    html: Path
    mrr_image: bytes
    bridge_image: bytes


def mrr_chart(daily: pl.DataFrame, title: str = "MRR") -> bytes:
    """PNG: one panel per currency with the daily MRR line and the month-end values marked."""
    currencies = sorted(daily["currency"].unique().to_list()) if daily.height else []
    fig, axes = _panels(len(currencies))
    for ax, currency in zip(axes, currencies):
        series = daily.filter(pl.col("currency") == currency).sort("date")
        dates = series["date"].to_list()
        values = [float(v) for v in series["mrr"].to_list()]
        # steps: a day's value holds until the next day's change, not a slope between them
        ax.step(dates, values, where="post", color="#1565c0", linewidth=2, label="MRR (end of day)")
        ends = series.filter(pl.col("date") == pl.col("date").max().over(pl.col("date").dt.truncate("1mo")))
        ax.plot(ends["date"].to_list(), [float(v) for v in ends["mrr"].to_list()], "o", color="#0d47a1",
                markersize=4, label="End of month")
        ax.fill_between(dates, values, step="post", color="#1565c0", alpha=0.08)
        ax.set_ylim(bottom=0, top=max(values + [0.0]) * 1.12 or 1.0)
        _money_axis(ax, f"MRR ({currency.upper()})")
        _month_axis(ax, dates[0], dates[-1])
        ax.set_title(f"{currency.upper()} {title}", loc="left", fontsize=12, fontweight="bold")
        ax.legend(loc="upper left", frameon=False)
    if not currencies:
        _empty(axes[0], "No MRR yet")
    return _png(fig)


def bridge_chart(bridge: pl.DataFrame, title: str = "monthly MRR movements") -> bytes:
    """PNG: one panel per currency, monthly movements as stacked bars (increases up, decreases down) and the net
    change per month as a marker."""
    currencies = sorted(bridge["currency"].unique().to_list()) if bridge.height else []
    fig, axes = _panels(len(currencies))
    for ax, currency in zip(axes, currencies):
        rows = bridge.filter(pl.col("currency") == currency).sort("month")
        months = rows["month"].to_list()
        up = [0.0] * len(months)
        down = [0.0] * len(months)
        for column, label, colour, sign in MOVEMENTS:
            values = [float(v) * sign for v in rows[column].to_list()]
            base = up if sign > 0 else down
            ax.bar(months, values, width=20, bottom=base, color=colour, label=label, align="center")
            for i, v in enumerate(values):
                base[i] += v
        net = [u + d for u, d in zip(up, down)]
        ax.plot(months, net, "D", color="#212121", markersize=5, label="Net change")
        ax.axhline(0, color="#424242", linewidth=0.8)
        span = (max(up + [0.0]) - min(down + [0.0])) or 1.0
        ax.set_ylim(min(down + [0.0]) - 0.08 * span, max(up + [0.0]) + 0.08 * span)
        _money_axis(ax, f"Change in MRR ({currency.upper()})")
        # a lone month gets room on both sides, or its bar fills the panel
        _month_axis(ax, months[0], months[-1], pad_days=20 if len(months) > 2 else 75)
        ax.set_title(f"{currency.upper()} {title}", loc="left", fontsize=12, fontweight="bold")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if not currencies:
        _empty(axes[0], "No MRR movements yet")
    return _png(fig)


def report_html(integration: str, mrr_image: bytes, bridge_image: bytes, bridge: pl.DataFrame,
                generated_at: dt.datetime, months: int = 12) -> str:
    """A single HTML page (no outside resources): both charts and, per currency, the last `months` of the bridge."""
    tables = []
    for currency in sorted(bridge["currency"].unique().to_list()) if bridge.height else []:
        rows = bridge.filter(pl.col("currency") == currency).sort("month").tail(months).sort("month", descending=True)
        head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c, _ in TABLE_COLUMNS) + "</tr>"
            for row in rows.iter_rows(named=True))
        tables.append(f"<h3>{html.escape(currency.upper())}: last {months} months</h3>"
                      f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    name = html.escape(integration)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MRR report: {name}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem; color: #212121; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ padding: 0.3rem 0.7rem; border-bottom: 1px solid #e0e0e0; }}
td:not(:first-child), th:not(:first-child) {{ text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #f5f5f5; }}
</style>
</head>
<body>
<h1>MRR report: {name}</h1>
<p>Generated {html.escape(generated_at.strftime("%Y-%m-%d %H:%M UTC"))}. Amounts in each currency's major unit; the
current month runs to today. Definitions: MRR_SPEC.md.</p>
<h2>MRR</h2>
<img alt="MRR per currency" src="data:image/png;base64,{_b64(mrr_image)}">
<h2>Monthly movements</h2>
<img alt="Monthly MRR movements per currency" src="data:image/png;base64,{_b64(bridge_image)}">
<h2>MRR bridge</h2>
{"".join(tables) or "<p>No months yet.</p>"}
</body>
</html>
"""


def write_report(folder: Path, integration: str, daily: pl.DataFrame, bridge: pl.DataFrame,
                 generated_at: dt.datetime) -> ReportFiles:
    """Render both charts and the HTML page into `folder` (created if needed): mrr.png, bridge.png, mrr.html."""
    folder.mkdir(parents=True, exist_ok=True)
    mrr_image = mrr_chart(daily, title=f"MRR ({integration})")
    bridge_image = bridge_chart(bridge, title=f"monthly MRR movements ({integration})")
    files = ReportFiles(mrr_png=folder / "mrr.png", bridge_png=folder / "bridge.png", html=folder / "mrr.html",
                        mrr_image=mrr_image, bridge_image=bridge_image)
    _write(files.mrr_png, mrr_image)
    _write(files.bridge_png, bridge_image)
    _write(files.html, report_html(integration, mrr_image, bridge_image, bridge, generated_at).encode())
    return files


def markdown_image(alt: str, image: bytes) -> str:
    """Markdown that shows a PNG inline (Dagster's UI renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{_b64(image)})"


def _panels(count: int) -> tuple[Figure, list[Axes]]:
    rows = max(count, 1)
    fig, axes = plt.subplots(rows, 1, figsize=(WIDTH_IN, PANEL_HEIGHT_IN * rows), squeeze=False,
                             layout="constrained")
    return fig, [row[0] for row in axes]


def _money_axis(ax: Axes, label: str) -> None:
    low, high = ax.get_ylim()
    decimals = 2 if max(abs(low), abs(high)) < 10 else 0
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.{decimals}f}"))
    ax.set_ylabel(label)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _month_axis(ax: Axes, first: dt.date, last: dt.date, pad_days: int = 0) -> None:
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    if (last - first).days < 62 and not pad_days:
        # under two months of days: monthly ticks would leave one label, so let matplotlib pick days
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax.xaxis.set_major_locator(mdates.MonthLocator(interval=max(1, -(-months // 12))))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %Y"))
    ax.set_xlim(first - dt.timedelta(days=pad_days or 1), last + dt.timedelta(days=pad_days or 1))
    for label in ax.get_xticklabels():
        label.set_rotation(0)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="#757575", transform=ax.transAxes)
    ax.set_axis_off()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def _cell(value: object) -> str:
    if isinstance(value, dt.date):
        return value.strftime("%b %Y")
    if value is None:
        return ""
    return f"{value:,.2f}"


def _write(path: Path, data: bytes) -> None:
    # Write beside, then rename: a browser or BI tool never opens half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
