"""The forecast chart and its section of the HTML report: history, the 90-day forecast band after it, a marker at
each bet's start, and the tables a board asks about (drivers, measured accuracy, bets).

Belongs here: rendering frames to PNG bytes and HTML fragments, and adding the section to a written report page.
Not here: reading DuckDB or Dagster metadata (`defs/metrics/forecast.py` and `defs/marts/report.py` do), the
forecast itself (`transform/forecast.py`). Amounts arrive as Decimal; they become floats only to be drawn.

Inputs: `history` has (basis, currency, date, mrr) (basis optional: 'currency' if absent); `forecast` has
metrics.mrr_forecast's columns; `status` metrics.mrr_forecast_status's; `accuracy` metrics.mrr_forecast_accuracy's;
`bets` is a list of (name, start date).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

DPI = 110
WIDTH_IN = 11.0
PANEL_HEIGHT_IN = 3.8
HISTORY_DAYS = 365
HISTORY_COLOUR = "#1565c0"
FORECAST_COLOUR = "#e65100"
BET_COLOUR = "#6a1b9a"
SECTION_START = "<!-- forecast section -->"
SECTION_END = "<!-- /forecast section -->"

Bet = tuple[str, dt.date]


def _with_basis(frame: pl.DataFrame) -> pl.DataFrame:
    return frame if "basis" in frame.columns else frame.with_columns(pl.lit("currency").alias("basis"))


def _series_keys(history: pl.DataFrame, forecast: pl.DataFrame) -> list[tuple[str, str]]:
    keys = set(_with_basis(history).select("basis", "currency").unique().iter_rows())
    keys |= set(_with_basis(forecast).select("basis", "currency").unique().iter_rows())
    # each currency first, then the reporting-currency total
    return sorted(keys, key=lambda k: (k[0] != "currency", k[1]))


def _label(basis: str, currency: str) -> str:
    return currency.upper() + (" (all currencies, converted)" if basis == "reporting" else "")


def forecast_chart(history: pl.DataFrame, forecast: pl.DataFrame, bets: Sequence[Bet] = (),
                   status: pl.DataFrame | None = None, title: str = "MRR forecast",
                   history_days: int = HISTORY_DAYS) -> bytes:
    """PNG: one panel per series: the last `history_days` of MRR, then the forecast with its 80 % and 95 %
    bands, a line at the last actual day and a marker at each bet's start that falls in the panel."""
    history, forecast = _with_basis(history), _with_basis(forecast)
    keys = _series_keys(history, forecast)
    rows = max(len(keys), 1)
    fig, grid = plt.subplots(rows, 1, figsize=(WIDTH_IN, PANEL_HEIGHT_IN * rows), squeeze=False,
                             layout="constrained")
    axes = [row[0] for row in grid]
    for ax, (basis, currency) in zip(axes, keys):
        past = history.filter((pl.col("basis") == basis) & (pl.col("currency") == currency)).sort("date")
        ahead = forecast.filter((pl.col("basis") == basis) & (pl.col("currency") == currency)).sort("date")
        if past.height:
            past = past.filter(pl.col("date") > past["date"].max() - dt.timedelta(days=history_days))
        _draw(ax, past, ahead)
        first = min([*past["date"].to_list()[:1], *ahead["date"].to_list()[:1]])
        last = max([*past["date"].to_list()[-1:], *ahead["date"].to_list()[-1:]])
        shown = [(name, start) for name, start in bets if first <= start <= last]
        for i, (name, start) in enumerate(sorted(shown, key=lambda b: b[1])):
            ax.axvline(start, color=BET_COLOUR, linestyle=":", linewidth=1.4)
            ax.annotate(f"bet: {name}", xy=(start, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12 - 12 * (i % 3)), textcoords="offset points", fontsize=8, color=BET_COLOUR)
        note = _status_note(status, basis, currency) if not ahead.height else ""
        heading = f"{_label(basis, currency)} {title}" + (f": {note}" if note else "")
        ax.set_title(heading, loc="left", fontsize=12, fontweight="bold")
        _money_axis(ax, f"MRR ({currency.upper()})")
        _date_axis(ax, first, last)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    if not keys:
        axes[0].text(0.5, 0.5, "No MRR yet", ha="center", va="center", fontsize=14, color="#757575",
                     transform=axes[0].transAxes)
        axes[0].set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _draw(ax: Axes, past: pl.DataFrame, ahead: pl.DataFrame) -> None:
    tops = [0.0]
    if past.height:
        values = [float(v) for v in past["mrr"]]
        ax.step(past["date"].to_list(), values, where="post", color=HISTORY_COLOUR, linewidth=2,
                label="MRR (actual)")
        tops.append(max(values))
        ax.axvline(past["date"][-1], color="#616161", linewidth=0.8)
    if ahead.height:
        dates = ahead["date"].to_list()
        if past.height:  # start the band at the last actual value so history and forecast join
            dates = [past["date"][-1], *dates]
            start = float(past["mrr"][-1])
        column = lambda c: ([start] if past.height else []) + [float(v) for v in ahead[c]]  # noqa: E731
        ax.fill_between(dates, column("lower_95"), column("upper_95"), color=FORECAST_COLOUR, alpha=0.13,
                        linewidth=0, label="95 % interval")
        ax.fill_between(dates, column("lower_80"), column("upper_80"), color=FORECAST_COLOUR, alpha=0.28,
                        linewidth=0, label="80 % interval")
        method = ahead["method"][0] if "method" in ahead.columns else "forecast"
        ax.plot(dates, column("mrr_forecast"), color=FORECAST_COLOUR, linewidth=2, linestyle="--",
                label=f"Forecast ({method})")
        tops.append(max(column("upper_95")))
    ax.set_ylim(bottom=0, top=max(tops) * 1.1 or 1.0)


def _status_note(status: pl.DataFrame | None, basis: str, currency: str) -> str:
    if status is None or status.is_empty():
        return "no forecast"
    rows = _with_basis(status).filter((pl.col("basis") == basis) & (pl.col("currency") == currency))
    return f"no forecast ({rows['reason'][0]})" if rows.height else "no forecast"


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


def _date_axis(ax: Axes, first: dt.date, last: dt.date) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(first - dt.timedelta(days=2), last + dt.timedelta(days=2))


# --- the report section --------------------------------------------------------------------------------------------

def forecast_section_html(image: bytes, status: pl.DataFrame, accuracy: pl.DataFrame,
                          bet_impact: pl.DataFrame | None = None) -> str:
    """An HTML fragment: the chart, the drivers of each forecast, the backtest's accuracy beside the baselines,
    and each bet's outcome against the forecast made before it started."""
    parts = [SECTION_START, "<h2>Forecast: the next 90 days</h2>",
             f'<img alt="MRR forecast per currency" src="data:image/png;base64,{_b64(image)}">']
    if status.height:
        parts.append("<h3>What drives each forecast</h3>")
        parts.append(_table(_with_basis(status).sort("basis", "currency"), [
            ("currency", "Currency"), ("basis", "Basis"), ("history_days", "Days of history"),
            ("last_mrr", "MRR now"), ("mrr_in_90_days", "Forecast in 90 days"),
            ("new_mrr_per_month", "New / month"), ("expansion_mrr_per_month", "Expansion / month"),
            ("reactivation_mrr_per_month", "Reactivation / month"),
            ("contraction_rate_per_month", "Contraction rate / month"), ("churn_rate_per_month", "Churn rate / month"),
            ("reason", "Status")]))
    if accuracy.height:
        pivot = _with_basis(accuracy).sort("basis", "currency", "horizon_days", "method")
        parts.append("<h3>How accurate it has been</h3><p>Rolling-origin backtest: a forecast from each month end of "
                     "the last 12 months, made only from the data before it, compared with what happened. MAPE = mean "
                     "absolute percentage error (lower is better); coverage = share of outcomes inside the interval "
                     "(80 % and 95 % aimed at).</p>")
        parts.append(_table(pivot, [("currency", "Currency"), ("basis", "Basis"), ("horizon_days", "Days ahead"),
                                    ("method", "Method"), ("origins", "Origins"), ("mape", "MAPE"),
                                    ("coverage_80", "80 % coverage"), ("coverage_95", "95 % coverage"),
                                    ("note", "Note")], percent={"mape", "coverage_80", "coverage_95"}))
    if bet_impact is not None and bet_impact.height:
        parts.append("<h3>Bets</h3><p>Actual MRR (of the bet's product or price when it has one) against the "
                     "forecast made from the data before the bet started.</p>")
        parts.append(_table(bet_impact.sort("start_date", "bet", "currency"), [
            ("bet", "Bet"), ("start_date", "Start"), ("segment", "Segment"), ("currency", "Currency"),
            ("evaluated_on", "Compared on"), ("actual_mrr", "Actual"), ("forecast_mrr", "Forecast"),
            ("lower_95", "95 % low"), ("upper_95", "95 % high"), ("difference", "Difference"),
            ("verdict", "Verdict")]))
    parts.append(SECTION_END)
    return "\n".join(parts)


def add_section(page: str, fragment: str) -> str:
    """The report page with `fragment` before `</body>`, replacing a forecast section already there."""
    if SECTION_START in page and SECTION_END in page:
        head, rest = page.split(SECTION_START, 1)
        page = head + rest.split(SECTION_END, 1)[1]
    marker = page.rfind("</body>")
    if marker < 0:
        return page + fragment
    return page[:marker] + fragment + "\n" + page[marker:]


def write_forecast_report(folder: Path, html_page: Path, image: bytes, status: pl.DataFrame,
                          accuracy: pl.DataFrame, bet_impact: pl.DataFrame | None = None) -> Path:
    """Write `forecast.png` into `folder` and add the forecast section to the report page; returns the PNG path."""
    png = folder / "forecast.png"
    _write(png, image)
    if html_page.exists():
        page = add_section(html_page.read_text(), forecast_section_html(image, status, accuracy, bet_impact))
        _write(html_page, page.encode())
    return png


def _table(frame: pl.DataFrame, columns: list[tuple[str, str]], percent: set[str] = frozenset()) -> str:
    present = [(c, label) for c, label in columns if c in frame.columns]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in present)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row[c], c in percent or 'rate' in c))}</td>"
                                    for c, _ in present) + "</tr>" for row in frame.iter_rows(named=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object, as_percent: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and as_percent:
        return f"{value:.1%}"
    if isinstance(value, (int, str)):
        return str(value)
    return f"{value:,.2f}"


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def _write(path: Path, data: bytes) -> None:
    # Write beside, then rename: a browser never opens half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
