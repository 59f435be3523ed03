"""MRR charts and the HTML report finance opens: rendering from frames to PNG bytes and HTML text, and writing them.

Belongs here: matplotlib figures (Agg backend, no display), number and date formatting, the self-contained HTML page
(images embedded as base64, no outside links) and writing those files. Not here: reading DuckDB or Dagster metadata
(`defs/marts/report.py` does both). Amounts arrive in major units as Decimal; they become floats only to be drawn.
Zero-decimal currencies (jpy, krw, ...) are shown without decimals; the tables keep their DECIMAL(18,2) values.

Inputs: `daily` has metrics.mrr_daily's columns (at least currency, date, mrr); `bridge` has marts.mrr_bridge_monthly's
(currency, month, starting_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, ending_mrr);
`kpis` marts.kpis_monthly's; `cohorts` marts.cohort_retention's; `reporting_daily` and `reporting_kpis`
metrics.mrr_daily_reporting's and marts.kpis_monthly_reporting's (absent without a reporting currency).
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
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from segflow_pipeline.transform.currency import exponent  # noqa: E402

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


# The headline KPIs: (column, label, kind) with kind money | signed | rate | count.
HEADLINE = (
    ("ending_mrr", "MRR", "money"), ("net_new_mrr", "Net new MRR", "signed"),
    ("net_revenue_retention", "NRR", "rate"), ("gross_revenue_retention", "GRR", "rate"),
    ("logo_churn_rate", "Logo churn", "rate"), ("arpa", "ARPA", "money"),
    ("paying_customers", "Paying customers", "count"), ("quick_ratio", "Quick ratio", "ratio"),
)
KPI_TABLE = (("month", "Month", "month"), ("starting_mrr", "Starting MRR", "money"), *HEADLINE[:6],
             ("new_mrr", "New", "money"), ("churned_mrr", "Churned", "money"), *HEADLINE[6:])
# The KPI chart's panels: (column, title, kind).
KPI_PANELS = (
    ("ending_mrr", "MRR at month end", "money"), ("net_new_mrr", "Net new MRR", "signed"),
    ("arpa", "ARPA", "money"), ("net_revenue_retention", "Net revenue retention (NRR)", "rate"),
    ("gross_revenue_retention", "Gross revenue retention (GRR)", "rate"), ("logo_churn_rate", "Logo churn", "rate"),
)
FX = ("fx_adjustment_mrr", "FX and rounding", "#9e9e9e")


@dataclass(frozen=True)
class ReportFiles:
    """Where `write_report` put the report, and the chart bytes (for Dagster metadata). The KPI, cohort and total
    charts are None when their inputs were not given (the total chart needs a reporting currency)."""

    mrr_png: Path
    bridge_png: Path
    html: Path
    mrr_image: bytes
    bridge_image: bytes
    kpis_png: Path | None = None
    cohorts_png: Path | None = None
    total_png: Path | None = None
    kpis_image: bytes | None = None
    cohorts_image: bytes | None = None
    total_image: bytes | None = None


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
        _money_axis(ax, f"MRR ({currency.upper()})", currency)
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
        _money_axis(ax, f"Change in MRR ({currency.upper()})", currency)
        # a lone month gets room on both sides, or its bar fills the panel
        _month_axis(ax, months[0], months[-1], pad_days=20 if len(months) > 2 else 75)
        ax.set_title(f"{currency.upper()} {title}", loc="left", fontsize=12, fontweight="bold")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if not currencies:
        _empty(axes[0], "No MRR movements yet")
    return _png(fig)


def kpi_chart(kpis: pl.DataFrame, months: int = 12) -> bytes:
    """PNG: per currency, the last `months` months of MRR, net new MRR, ARPA, NRR, GRR and logo churn (the current
    month, still running, drawn lighter)."""
    currencies = sorted(kpis["currency"].unique().to_list()) if kpis.height else []
    rows = max(2 * len(currencies), 1)
    fig, grid = plt.subplots(rows, 3, figsize=(WIDTH_IN, 2.5 * rows), squeeze=False, layout="constrained")
    for index, currency in enumerate(currencies):
        frame = kpis.filter(pl.col("currency") == currency).sort("month").tail(months)
        labels = [m.strftime("%b\n%Y") if m.month == 1 or i == 0 else m.strftime("%b")
                  for i, m in enumerate(frame["month"].to_list())]
        positions = list(range(frame.height))
        for (column, title, kind), ax in zip(KPI_PANELS, [a for row in grid[2 * index:2 * index + 2] for a in row]):
            values = [None if v is None else float(v) for v in frame[column].to_list()]
            shown = [0.0 if v is None else v for v in values]
            if kind in ("money", "signed"):
                colours = ["#c62828" if v < 0 else "#1565c0" for v in shown]
                bars = ax.bar(positions, shown, color=colours, width=0.7)
                bars[-1].set_alpha(0.45)  # the month still running
                if kind == "signed":
                    ax.axhline(0, color="#424242", linewidth=0.8)
                _money_axis(ax, currency.upper(), currency)
            else:
                percents = [float("nan") if v is None else v * 100 for v in values]
                ax.plot(positions, percents, "o-", color="#1565c0", markersize=3.5)
                known = [v for v in percents if v == v] or [0.0]
                if column == "logo_churn_rate":  # from 0 up; at least 0-5 % so that a flat 0 reads as 0
                    ax.set_ylim(0, max(5.0, max(known) * 1.15))
                else:  # around 100 %, the line that separates growth from loss
                    ax.axhline(100, color="#9e9e9e", linewidth=0.8, linestyle="--")
                    low, high = min(known + [100.0]), max(known + [100.0])
                    pad = max(2.0, (high - low) * 0.1)
                    ax.set_ylim(max(0.0, low - pad), high + pad)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0f} %"))
                _tidy(ax)
            ax.set_xticks(positions, labels, fontsize=7)
            ax.set_title(f"{currency.upper()} {title}", loc="left", fontsize=10, fontweight="bold")
    if not currencies:
        _empty(grid[0][0], "No months yet")
        for ax in grid[0][1:]:
            ax.set_axis_off()
    return _png(fig)


def cohort_chart(cohorts: pl.DataFrame, shown: int = 12) -> bytes:
    """PNG: per currency, heat maps of customer and MRR retention of the last `shown` cohorts (rows, oldest on top)
    over the months since their start (columns), in percent of the cohort's first month end."""
    currencies = sorted(cohorts["currency"].unique().to_list()) if cohorts.height else []
    rows = max(len(currencies), 1)
    fig, grid = plt.subplots(rows, 2, figsize=(WIDTH_IN, 0.32 * (shown + 4) * rows), squeeze=False,
                             layout="constrained")
    for (left, right), currency in zip(grid, currencies):
        frame = cohorts.filter(pl.col("currency") == currency)
        starts = sorted(frame["cohort_month"].unique().to_list())[-shown:]
        frame = frame.filter(pl.col("cohort_month").is_in(starts) & (pl.col("months_since_start") < shown))
        for ax, column, title in ((left, "customer_retention_rate", "customers still paying"),
                                  (right, "mrr_retention_rate", "MRR kept (expansion included)")):
            cells = [[float("nan")] * shown for _ in starts]
            for row in frame.iter_rows(named=True):
                if row[column] is not None:
                    cells[starts.index(row["cohort_month"])][row["months_since_start"]] = float(row[column])
            image = ax.imshow(cells, cmap="YlGnBu", norm=Normalize(0, 1.2), aspect="auto")
            for y, line in enumerate(cells):
                for x, value in enumerate(line):
                    if value == value:  # not NaN
                        ax.text(x, y, f"{value * 100:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if value > 0.75 else "#212121")
            ax.set_xticks(range(shown), [str(k) for k in range(shown)], fontsize=7)
            ax.set_yticks(range(len(starts)), [c.strftime("%b %Y") for c in starts], fontsize=7)
            ax.set_xlabel("months since the cohort's first month", fontsize=8)
            ax.set_title(f"{currency.upper()} cohorts: {title}, %", loc="left", fontsize=10, fontweight="bold")
            for side in ("top", "right", "left", "bottom"):
                ax.spines[side].set_visible(False)
        fig.colorbar(image, ax=[left, right], shrink=0.8, format=FuncFormatter(lambda v, _pos: f"{v * 100:.0f} %"))
    if not currencies:
        _empty(grid[0][0], "No cohorts yet")
        grid[0][1].set_axis_off()
    return _png(fig)


def total_chart(reporting_daily: pl.DataFrame, reporting_kpis: pl.DataFrame) -> bytes:
    """PNG: MRR of all currencies together in the reporting currency (daily, month ends marked) and its monthly
    movements, the change rates made (FX and rounding) in grey."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH_IN, 2 * PANEL_HEIGHT_IN), layout="constrained")
    if not reporting_daily.height:
        _empty(top, "No MRR yet")
        bottom.set_axis_off()
        return _png(fig)
    currency = reporting_daily["reporting_currency"][0]
    series = reporting_daily.sort("date")
    dates, values = series["date"].to_list(), [float(v) for v in series["mrr"].to_list()]
    top.step(dates, values, where="post", color="#1565c0", linewidth=2, label="MRR, all currencies (end of day)")
    top.fill_between(dates, values, step="post", color="#1565c0", alpha=0.08)
    ends = series.filter(pl.col("date") == pl.col("date").max().over(pl.col("date").dt.truncate("1mo")))
    top.plot(ends["date"].to_list(), [float(v) for v in ends["mrr"].to_list()], "o", color="#0d47a1", markersize=4,
             label="End of month")
    top.set_ylim(bottom=0, top=max(values + [0.0]) * 1.12 or 1.0)
    _money_axis(top, f"MRR ({currency.upper()})", currency)
    _month_axis(top, dates[0], dates[-1])
    top.set_title(f"Total MRR in {currency.upper()}, every currency converted", loc="left", fontsize=12,
                  fontweight="bold")
    top.legend(loc="upper left", frameon=False)
    months = reporting_kpis.sort("month")
    positions = months["month"].to_list()
    up, down = [0.0] * len(positions), [0.0] * len(positions)
    for column, label, colour, sign in (*MOVEMENTS, (FX[0], FX[1], FX[2], 0)):
        raw = [float(v) * (sign or 1) for v in months[column].to_list()]
        base = [up[i] if (sign > 0 or (sign == 0 and v >= 0)) else down[i] for i, v in enumerate(raw)]
        bottom.bar(positions, raw, width=20, bottom=base, color=colour, label=label, align="center")
        for i, v in enumerate(raw):
            if v >= 0:
                up[i] += v
            else:
                down[i] += v
    bottom.plot(positions, [float(v) for v in months["net_new_mrr"].to_list()], "D", color="#212121", markersize=4,
                label="Net new MRR")
    bottom.axhline(0, color="#424242", linewidth=0.8)
    span = (max(up + [0.0]) - min(down + [0.0])) or 1.0
    bottom.set_ylim(min(down + [0.0]) - 0.08 * span, max(up + [0.0]) + 0.08 * span)
    _money_axis(bottom, f"Change in MRR ({currency.upper()})", currency)
    if positions:
        _month_axis(bottom, positions[0], positions[-1], pad_days=20 if len(positions) > 2 else 75)
    bottom.set_title(f"Monthly movements in {currency.upper()}", loc="left", fontsize=12, fontweight="bold")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def report_html(integration: str, mrr_image: bytes, bridge_image: bytes, bridge: pl.DataFrame,
                generated_at: dt.datetime, months: int = 12, *, kpis: pl.DataFrame | None = None,
                kpis_image: bytes | None = None, cohorts_image: bytes | None = None,
                reporting_kpis: pl.DataFrame | None = None, total_image: bytes | None = None) -> str:
    """A single HTML page (no outside resources): this month's headline KPIs per currency (and in the reporting
    currency), the last `months` months of KPIs, the charts given, and the MRR bridge of the last `months` months."""
    headline, kpi_tables = [], []
    if reporting_kpis is not None and reporting_kpis.height:
        currency = reporting_kpis["reporting_currency"][0]
        headline.append(_headline_card(reporting_kpis, currency, f"All currencies in {currency.upper()}"))
        kpi_tables.append(_kpi_table(reporting_kpis, currency, f"All currencies in {currency.upper()}", months))
    for currency in sorted(kpis["currency"].unique().to_list()) if kpis is not None and kpis.height else []:
        rows = kpis.filter(pl.col("currency") == currency)
        headline.append(_headline_card(rows, currency, currency.upper()))
        kpi_tables.append(_kpi_table(rows, currency, currency.upper(), months))
    tables = []
    for currency in sorted(bridge["currency"].unique().to_list()) if bridge.height else []:
        rows = bridge.filter(pl.col("currency") == currency).sort("month").tail(months).sort("month", descending=True)
        head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(row[c], currency))}</td>" for c, _ in TABLE_COLUMNS) + "</tr>"
            for row in rows.iter_rows(named=True))
        tables.append(f"<h3>{html.escape(currency.upper())}: last {months} months</h3>"
                      f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    def section(title: str, alt: str, image: bytes | None) -> str:
        return "" if image is None else (f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(alt)}" '
                                         f'src="data:image/png;base64,{_b64(image)}">')

    kpi_image = "" if kpis_image is None else (
        f'<img alt="MRR, net new MRR, ARPA, NRR, GRR and logo churn per currency" '
        f'src="data:image/png;base64,{_b64(kpis_image)}">')
    charts_after = "\n".join(part for part in (
        section("Total MRR", "MRR of all currencies in the reporting currency", total_image),
        section("Cohort retention", "Cohort retention heat maps per currency", cohorts_image),
        section("MRR", "MRR per currency", mrr_image),
        section("Monthly movements", "Monthly MRR movements per currency", bridge_image)) if part)
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
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; margin-bottom: 1.5rem; }}
.card {{ border: 1px solid #e0e0e0; border-radius: 6px; padding: 0.8rem 1rem; min-width: 16rem; }}
.card h3 {{ margin: 0 0 0.5rem 0; font-size: 1rem; }}
.card dl {{ display: grid; grid-template-columns: auto auto; gap: 0.15rem 1rem; margin: 0; }}
.card dt {{ color: #616161; }}
.card dd {{ margin: 0; text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }}
</style>
</head>
<body>
<h1>MRR report: {name}</h1>
<p>Generated {html.escape(generated_at.strftime("%Y-%m-%d %H:%M UTC"))}. Amounts in each currency's major unit; the
current month runs to today. Rates are for one month, not annualized. NRR and GRR are measured on the customers who
paid at the start of the month (see docs/mrr.md and docs/tables.md in the project).</p>
<h2>This month</h2>
{f'<div class="cards">{"".join(headline)}</div>' if headline else "<p>No months yet.</p>"}
<h2>Last {months} months</h2>
{kpi_image}
{"".join(kpi_tables) or "<p>No months yet.</p>"}
{charts_after}
<h2>MRR bridge</h2>
{"".join(tables) or "<p>No months yet.</p>"}
</body>
</html>
"""


def write_report(folder: Path, integration: str, daily: pl.DataFrame, bridge: pl.DataFrame,
                 generated_at: dt.datetime, *, kpis: pl.DataFrame | None = None,
                 cohorts: pl.DataFrame | None = None, reporting_daily: pl.DataFrame | None = None,
                 reporting_kpis: pl.DataFrame | None = None) -> ReportFiles:
    """Render the charts and the HTML page into `folder` (created if needed): mrr.png, bridge.png, kpis.png and
    cohorts.png (when given their frames), total.png (with a reporting currency; an older one is removed without),
    mrr.html."""
    folder.mkdir(parents=True, exist_ok=True)
    mrr_image = mrr_chart(daily, title=f"MRR ({integration})")
    bridge_image = bridge_chart(bridge, title=f"monthly MRR movements ({integration})")
    kpis_image = kpi_chart(kpis) if kpis is not None else None
    cohorts_image = cohort_chart(cohorts) if cohorts is not None else None
    total_image = (total_chart(reporting_daily, reporting_kpis)
                   if reporting_daily is not None and reporting_kpis is not None else None)
    files = ReportFiles(mrr_png=folder / "mrr.png", bridge_png=folder / "bridge.png", html=folder / "mrr.html",
                        mrr_image=mrr_image, bridge_image=bridge_image,
                        kpis_png=folder / "kpis.png" if kpis_image else None,
                        cohorts_png=folder / "cohorts.png" if cohorts_image else None,
                        total_png=folder / "total.png" if total_image else None,
                        kpis_image=kpis_image, cohorts_image=cohorts_image, total_image=total_image)
    for path, image in ((files.mrr_png, mrr_image), (files.bridge_png, bridge_image), (files.kpis_png, kpis_image),
                        (files.cohorts_png, cohorts_image), (files.total_png, total_image)):
        if path is not None and image is not None:
            _write(path, image)
    if total_image is None:
        (folder / "total.png").unlink(missing_ok=True)  # a reporting currency was set before, not now
    _write(files.html, report_html(integration, mrr_image, bridge_image, bridge, generated_at, kpis=kpis,
                                   kpis_image=kpis_image, cohorts_image=cohorts_image, reporting_kpis=reporting_kpis,
                                   total_image=total_image).encode())
    return files


def format_amount(value: object, currency: str, signed: bool = False) -> str:
    """An amount in the currency's major unit with thousands separators: no decimals for zero-decimal currencies
    (jpy 2,500), two otherwise (usd 1,234.50); '' for none."""
    if value is None:
        return ""
    decimals = 0 if exponent(currency) == 0 else 2
    return f"{value:{'+' if signed else ''},.{decimals}f}"


def format_rate(value: object) -> str:
    """A fraction as a percentage with one decimal (0.8667 -> 86.7 %); an en dash when there is none."""
    return "\u2013" if value is None else f"{value * 100:.1f} %"


def _formatted(value: object, kind: str, currency: str) -> str:
    if kind == "month":
        return value.strftime("%b %Y")
    if kind in ("money", "signed"):
        return format_amount(value, currency, signed=kind == "signed")
    if kind == "rate":
        return format_rate(value)
    if kind == "ratio":
        return "\u2013" if value is None else f"{value:.2f}"
    return f"{value:,}"


def _headline_card(kpis: pl.DataFrame, currency: str, title: str) -> str:
    row = kpis.sort("month").row(-1, named=True)
    day = row.get("as_of_date")
    through = f"{day:%b} {day.day}" if day else ""
    items = "".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(_formatted(row[column], kind, currency))}</dd>"
                    for column, label, kind in HEADLINE)
    return (f'<div class="card"><h3>{html.escape(title)}: {html.escape(row["month"].strftime("%B %Y"))}'
            f'{html.escape(" to " + through) if through else ""}</h3><dl>{items}</dl></div>')


def _kpi_table(kpis: pl.DataFrame, currency: str, title: str, months: int) -> str:
    rows = kpis.sort("month").tail(months).sort("month", descending=True)
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in KPI_TABLE)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_formatted(row[c], kind, currency))}</td>"
                                    for c, _, kind in KPI_TABLE) + "</tr>" for row in rows.iter_rows(named=True))
    return (f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def markdown_image(alt: str, image: bytes) -> str:
    """Markdown that shows a PNG inline (Dagster's UI renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{_b64(image)})"


def _panels(count: int) -> tuple[Figure, list[Axes]]:
    rows = max(count, 1)
    fig, axes = plt.subplots(rows, 1, figsize=(WIDTH_IN, PANEL_HEIGHT_IN * rows), squeeze=False,
                             layout="constrained")
    return fig, [row[0] for row in axes]


def _money_axis(ax: Axes, label: str, currency: str = "usd") -> None:
    low, high = ax.get_ylim()
    decimals = 2 if max(abs(low), abs(high)) < 10 and exponent(currency) > 0 else 0
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=exponent(currency) == 0))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.{decimals}f}"))
    ax.set_ylabel(label)
    _tidy(ax)


def _tidy(ax: Axes) -> None:
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


def _cell(value: object, currency: str) -> str:
    if isinstance(value, dt.date):
        return value.strftime("%b %Y")
    return format_amount(value, currency)


def _write(path: Path, data: bytes) -> None:
    # Write beside, then rename: a browser or BI tool never opens half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
