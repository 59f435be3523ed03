"""Where MRR is heading: a 90-day forecast per series, built from its movements.

Belongs here: the forecasting methods and the predicates that check a forecast (intervals ordered, 90 days per
series, no forecast from too short a history). Frames in, frames out. Not here: Dagster, DuckDB, files
(`defs/metrics/forecast.py` reads and writes), charts (`reporting/forecast_chart.py`), the backtest that measures
the methods (`forecast_accuracy.py`), bets (`transform/bet_impact.py` reuses `predict`).

A series is one (integration, basis, currency): `basis = 'currency'` is metrics.mrr_daily's MRR in its own
currency, `basis = 'reporting'` the converted total of metrics.mrr_daily_reporting when that table exists.

The method, `flows_rates`: MRR moves by its five movements (docs/mrr.md section 6), and they behave differently.
New, expansion and reactivation MRR arrive as flows (amounts per day, which follow sales and marketing, not the
size of the book), contraction and churn leave as rates (a share of yesterday's MRR). Each is estimated from the
history before the forecast origin: the flows as daily means over the last 182 days (long enough that a lucky or
unlucky month does not swing the forecast, short enough to follow growth), the rates as the movement divided by
the MRR it came from over the last 365 days (churn is rare and lumpy, so it needs a full year to be estimated at
all). Then each day ahead is `MRR(d) = MRR(d-1) + new + expansion + reactivation - (contraction + churn rate) x
MRR(d-1)`: the forecast is a sum of named drivers, and `mrr_forecast` carries each day's expected movements, so
"why 72k in March" reads as "9.1k of new, 1.2k of expansion, minus 2.4 % of the book churning".
The intervals are empirical: the method's own relative errors at the same horizon from weekly origins over the
last 182 days before the forecast origin (root mean square, scaled to today's MRR), never narrower than the
random-walk spread of the model's daily residuals (plus the uncertainty of the estimated flows). A normal
quantile turns that spread into the 80 % and 95 % bands. Under 60 days of history there is no forecast: flows and
rates cannot be told from noise (the status frame says so per series).

Why this and statsmodels only as a baseline: a board asks what drives the number, and a model of the MRR curve
alone (ETS, ARIMA, Prophet) cannot say it; here every number comes from a movement the finance team already
reports, in closed form. statsmodels (well kept, documented maximum-likelihood ETS with analytic prediction
intervals) supplies the statistical baseline `ets`, an additive damped-trend ETS on the last 365 days, which the
backtest runs beside `naive` (the last value) and `linear_trend` (a least-squares line through the last 91
days), so the published accuracy shows whether the drivers model earns its place; it is not tuned to win: where it
does not beat `naive`, the accuracy table says so.

Numbers: history is read exactly (DECIMAL); the forecast is an estimate computed in float64 and written as
DECIMAL(18,2). Expected movements are rounded to the cent first and the point forecast is the last actual MRR
plus their running sum, so each forecast day reconciles to its movements to the cent.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import polars as pl

from segflow_pipeline.transform.money import cents_to_decimal

HORIZON_DAYS = 90
MIN_HISTORY_DAYS = 60
ACCURACY_HORIZONS = (30, 60, 90)
BACKTEST_MONTHS = 12

FLOWS_RATES = "flows_rates"
NAIVE = "naive"
LINEAR_TREND = "linear_trend"
ETS = "ets"
METHOD = FLOWS_RATES  # the method `metrics.mrr_forecast` publishes
BASELINES = (NAIVE, LINEAR_TREND, ETS)
METHODS = (METHOD, *BASELINES)

INFLOW_WINDOW_DAYS = 182
RATE_WINDOW_DAYS = 365
LINEAR_WINDOW_DAYS = 91
ETS_WINDOW_DAYS = 365
NAIVE_SPREAD_DAYS = 365
CALIBRATION_LOOKBACK_DAYS = 182
CALIBRATION_STEP_DAYS = 7
CALIBRATION_MIN_ERRORS = 4
Z80 = 1.2815515655446004  # two-sided 80 %: the normal 90th percentile
Z95 = 1.959963984540054  # two-sided 95 %: the normal 97.5th percentile
COVERAGE_80_RANGE = (0.70, 0.90)
DAYS_PER_MONTH = 365.25 / 12

SERIES_KEYS = ("integration", "basis", "currency")
INFLOWS = ("new_mrr", "expansion_mrr", "reactivation_mrr")
OUTFLOWS = ("contraction_mrr", "churned_mrr")
MOVEMENTS = (*INFLOWS, *OUTFLOWS)

MONEY = pl.Decimal(18, 2)
FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "currency": pl.Utf8(), "date": pl.Date(),
    "mrr_forecast": MONEY, "lower_80": MONEY, "upper_80": MONEY, "lower_95": MONEY, "upper_95": MONEY,
    "method": pl.Utf8(), "basis": pl.Utf8(), "origin_date": pl.Date(), "horizon_day": pl.Int32(),
    **{name: MONEY for name in MOVEMENTS},
}
STATUS_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "currency": pl.Utf8(), "basis": pl.Utf8(), "first_date": pl.Date(),
    "last_date": pl.Date(), "history_days": pl.Int32(), "forecast": pl.Boolean(), "method": pl.Utf8(),
    "reason": pl.Utf8(), "last_mrr": MONEY, "mrr_in_90_days": MONEY,
    "new_mrr_per_month": MONEY, "expansion_mrr_per_month": MONEY, "reactivation_mrr_per_month": MONEY,
    "contraction_rate_per_month": pl.Float64(), "churn_rate_per_month": pl.Float64(),
}
ACCURACY_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "currency": pl.Utf8(), "method": pl.Utf8(), "horizon_days": pl.Int32(),
    "origins": pl.Int32(), "mape": pl.Float64(), "coverage_80": pl.Float64(), "coverage_95": pl.Float64(),
    "basis": pl.Utf8(), "naive_mape": pl.Float64(), "beats_naive": pl.Boolean(), "note": pl.Utf8(),
}


@dataclass(frozen=True)
class Series:
    """One series as arrays over consecutive days: `mrr[i]` is the end of day `first_date + i`; the movements
    are into that day from the day before (index 0 holds the movements of the first day)."""

    key: tuple[str, str, str]
    first_date: dt.date
    mrr: np.ndarray
    movements: dict[str, np.ndarray]
    has_movements: bool = True

    @property
    def days(self) -> int:
        return len(self.mrr)

    @property
    def last_date(self) -> dt.date:
        return self.first_date + dt.timedelta(days=self.days - 1)

    def upto(self, origin: int) -> "Series":
        """The history known at the end of day index `origin`."""
        return Series(self.key, self.first_date, self.mrr[:origin + 1],
                      {k: v[:origin + 1] for k, v in self.movements.items()}, self.has_movements)


@dataclass(frozen=True)
class Prediction:
    """Forecast for days 1..horizon after the origin: point and bands (arrays), and for `flows_rates` the
    expected movements per day and the drivers they come from."""

    point: np.ndarray
    lower_80: np.ndarray
    upper_80: np.ndarray
    lower_95: np.ndarray
    upper_95: np.ndarray
    movements: dict[str, np.ndarray] | None = None
    drivers: dict[str, float] | None = None


# --- series ------------------------------------------------------------------------------------------------------

def series_list(daily: pl.DataFrame) -> list[Series]:
    """The series of a frame with integration, currency, date, mrr (+ basis, the five movements when known).

    Days missing inside a series repeat the previous MRR with no movements (metrics.mrr_daily has none missing;
    segment series built from sparse movement rows do)."""
    if daily.is_empty():
        return []
    frame = daily if "basis" in daily.columns else daily.with_columns(pl.lit("currency").alias("basis"))
    has_movements = all(m in frame.columns for m in MOVEMENTS)
    value_cols = ["mrr", *(MOVEMENTS if has_movements else ())]
    frame = frame.select(*SERIES_KEYS, "date", *[pl.col(c).cast(pl.Float64) for c in value_cols]).sort(
        *SERIES_KEYS, "date")
    result = []
    for key, part in frame.group_by(list(SERIES_KEYS), maintain_order=True):
        first = part["date"][0]
        index = np.array([(d - first).days for d in part["date"].to_list()], dtype=np.int64)
        n = int(index[-1]) + 1
        mrr = np.empty(n)
        mrr[:] = np.nan
        mrr[index] = part["mrr"].to_numpy()
        mrr = _forward_fill(mrr)
        if has_movements:
            moves = {}
            for m in MOVEMENTS:
                values = np.zeros(n)
                values[index] = part[m].fill_null(0).to_numpy()
                moves[m] = values
        else:
            # Without movements, the daily net change stands in for them: rises as inflow, falls as outflow.
            change = np.diff(mrr, prepend=0.0)
            moves = {m: np.zeros(n) for m in MOVEMENTS}
            moves["new_mrr"] = np.maximum(change, 0.0)
            moves["churned_mrr"] = np.maximum(-change, 0.0)
        result.append(Series(tuple(str(k) for k in key), first, mrr, moves, has_movements))  # type: ignore[arg-type]
    return result


def _forward_fill(values: np.ndarray) -> np.ndarray:
    idx = np.where(np.isnan(values), 0, np.arange(len(values)))
    np.maximum.accumulate(idx, out=idx)
    return values[idx]


# --- methods -----------------------------------------------------------------------------------------------------

def _cumsum0(values: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(values)))


def _flows_rates_paths(s: Series, origins: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    """Point forecasts of `flows_rates` from several origins at once: (len(origins), horizon) paths plus the
    estimated flows and rates per origin. Windows shrink to the history available (never the first day,
    whose movement is the opening balance, not a flow)."""
    o = origins.astype(np.int64)
    w_in = np.minimum(INFLOW_WINDOW_DAYS, o)
    w_rate = np.minimum(RATE_WINDOW_DAYS, o)
    mrr_before = _cumsum0(s.mrr)  # sum of mrr[0..i-1] at [i]
    flows = {}
    for m in INFLOWS:
        c = _cumsum0(s.movements[m])
        flows[m] = (c[o + 1] - c[o + 1 - w_in]) / np.maximum(w_in, 1)
    exposure = mrr_before[o] - mrr_before[o - w_rate]  # MRR of the days before each day of the window
    rates = {}
    for m in OUTFLOWS:
        c = _cumsum0(s.movements[m])
        lost = c[o + 1] - c[o + 1 - w_rate]
        rates[m] = np.where(exposure > 0, lost / np.where(exposure > 0, exposure, 1.0), 0.0)
    inflow = sum(flows.values())
    q = np.clip(rates["contraction_mrr"] + rates["churned_mrr"], 0.0, 1.0)
    start = s.mrr[o]
    h = np.arange(0, horizon + 1)
    decay = (1.0 - q)[:, None] ** h[None, :]
    steady = np.where(q > 0, inflow / np.where(q > 0, q, 1.0), 0.0)
    level = np.where(q[:, None] > 0, steady[:, None] + (start - steady)[:, None] * decay,
                     start[:, None] + inflow[:, None] * h[None, :])  # level[:, k] = MRR k days after the origin
    return {"level": level, "inflow": inflow, "q": q, **flows, **rates}


def _model_spread(s: Series, origin: int, inflow: float, q: float, horizon: int) -> np.ndarray:
    """Random-walk spread of the model's daily residuals over the inflow window, plus the uncertainty of the
    estimated mean flow: sd(h) = s * sqrt(h * (1 + h / window))."""
    window = int(min(INFLOW_WINDOW_DAYS, origin))
    if window < 2:
        return np.zeros(horizon)
    m = s.mrr[origin - window:origin + 1]
    residuals = np.diff(m) - (inflow - q * m[:-1])
    sd = float(np.std(residuals, ddof=1))
    h = np.arange(1, horizon + 1)
    return sd * np.sqrt(h * (1.0 + h / window))


def _empirical_spread(s: Series, origin: int, horizon: int) -> np.ndarray | None:
    """RMS of the method's own relative errors at each horizon, from weekly origins over the lookback (only
    outcomes known at `origin`), times today's MRR; horizons with too few errors extend the last one by sqrt(h)."""
    first = max(MIN_HISTORY_DAYS - 1, origin - CALIBRATION_LOOKBACK_DAYS)
    calibration = np.arange(origin - CALIBRATION_STEP_DAYS, first - 1, -CALIBRATION_STEP_DAYS)
    if len(calibration) == 0:
        return None
    paths = _flows_rates_paths(s, calibration, horizon)["level"][:, 1:]
    targets = calibration[:, None] + np.arange(1, horizon + 1)[None, :]
    known = targets <= origin
    actual = s.mrr[np.minimum(targets, origin)]
    scale = s.mrr[calibration][:, None]
    usable = known & (scale > 0)
    relative = np.where(usable, (actual - paths) / np.where(scale > 0, scale, 1.0), 0.0)
    counts = usable.sum(axis=0)
    good = counts >= CALIBRATION_MIN_ERRORS
    if not good.any():
        return None
    rms = np.sqrt((relative ** 2).sum(axis=0) / np.maximum(counts, 1))
    last = int(np.nonzero(good)[0].max())
    h = np.arange(1, horizon + 1)
    rms = np.where(good, rms, rms[last] * np.sqrt(h / (last + 1)))
    return rms * s.mrr[origin]


def flows_rates(s: Series, origin: int, horizon: int = HORIZON_DAYS) -> Prediction:
    """The drivers method (module docstring): flows in, rates out, empirical intervals."""
    est = _flows_rates_paths(s, np.array([origin]), horizon)
    level = est["level"][0]
    q = float(est["q"][0])
    inflow = float(est["inflow"][0])
    before = level[:-1]  # MRR of the day before each forecast day
    movements = {m: np.full(horizon, float(est[m][0])) for m in INFLOWS}
    for m in OUTFLOWS:
        movements[m] = float(est[m][0]) * before
    spread = _model_spread(s, origin, inflow, q, horizon)
    empirical = _empirical_spread(s, origin, horizon)
    if empirical is not None:
        spread = np.maximum(spread, empirical)
    spread = np.maximum.accumulate(spread)  # what is uncertain at 30 days stays so at 31
    drivers = {f"{m}_per_month": float(est[m][0]) * DAYS_PER_MONTH for m in INFLOWS}
    drivers["contraction_rate_per_month"] = 1.0 - (1.0 - float(est["contraction_mrr"][0])) ** DAYS_PER_MONTH
    drivers["churn_rate_per_month"] = 1.0 - (1.0 - float(est["churned_mrr"][0])) ** DAYS_PER_MONTH
    return _bands(level[1:], spread, movements=movements, drivers=drivers)


def naive(s: Series, origin: int, horizon: int = HORIZON_DAYS) -> Prediction:
    """The last value, with the random-walk spread of the daily changes of the last 365 days."""
    window = s.mrr[max(0, origin - NAIVE_SPREAD_DAYS):origin + 1]
    sd = float(np.std(np.diff(window), ddof=1)) if len(window) > 2 else 0.0
    h = np.arange(1, horizon + 1)
    return _bands(np.full(horizon, s.mrr[origin]), sd * np.sqrt(h))


def linear_trend(s: Series, origin: int, horizon: int = HORIZON_DAYS) -> Prediction:
    """A least-squares line through the last 91 days, with its ordinary prediction interval."""
    y = s.mrr[max(0, origin + 1 - LINEAR_WINDOW_DAYS):origin + 1]
    n = len(y)
    x = np.arange(n, dtype=float)
    design = np.column_stack([np.ones(n), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    s2 = float(residual @ residual) / max(n - 2, 1)
    future = np.column_stack([np.ones(horizon), np.arange(n, n + horizon, dtype=float)])
    leverage = np.einsum("ij,jk,ik->i", future, np.linalg.pinv(design.T @ design), future)
    return _bands(future @ coef, np.sqrt(s2 * (1.0 + leverage)))


def ets(s: Series, origin: int, horizon: int = HORIZON_DAYS) -> Prediction | None:
    """statsmodels ETS(A,Ad,N) (additive errors, additive damped trend) fitted by maximum likelihood to the
    last 365 days; its analytic prediction intervals. None when the fit fails (e.g. a constant series)."""
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = s.mrr[max(0, origin + 1 - ETS_WINDOW_DAYS):origin + 1]
    if len(y) < 10 or float(np.ptp(y)) == 0.0:
        return None
    # pandas input: statsmodels 0.15 get_prediction fails on a bare ndarray
    endog = pd.Series(y, index=pd.RangeIndex(len(y)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ETSModel(endog, error="add", trend="add", damped_trend=True).fit(disp=False)
            prediction = fit.get_prediction(start=len(y), end=len(y) + horizon - 1)
            frame80 = prediction.summary_frame(alpha=0.2)
            frame95 = prediction.summary_frame(alpha=0.05)
    except Exception:  # noqa: BLE001 - a baseline that cannot be fitted is left out (0 origins), never fails the run
        return None
    point = frame80["mean"].to_numpy()
    if not np.all(np.isfinite(point)):
        return None
    return _ordered(point, frame80["pi_lower"].to_numpy(), frame80["pi_upper"].to_numpy(),
                    frame95["pi_lower"].to_numpy(), frame95["pi_upper"].to_numpy())


PREDICTORS: dict[str, Callable[[Series, int, int], Prediction | None]] = {
    FLOWS_RATES: flows_rates, NAIVE: naive, LINEAR_TREND: linear_trend, ETS: ets,
}


def predict(s: Series, origin: int, horizon: int = HORIZON_DAYS, method: str = METHOD) -> Prediction | None:
    """Forecast `horizon` days after day index `origin` of `s`, from the history up to it only."""
    return PREDICTORS[method](s.upto(origin), origin, horizon)


def _bands(point: np.ndarray, spread: np.ndarray, movements: dict[str, np.ndarray] | None = None,
           drivers: dict[str, float] | None = None) -> Prediction:
    spread = np.nan_to_num(np.maximum(spread, 0.0))
    return _ordered(point, point - Z80 * spread, point + Z80 * spread, point - Z95 * spread, point + Z95 * spread,
                    movements, drivers)


def _ordered(point: np.ndarray, lo80: np.ndarray, hi80: np.ndarray, lo95: np.ndarray, hi95: np.ndarray,
             movements: dict[str, np.ndarray] | None = None, drivers: dict[str, float] | None = None) -> Prediction:
    # MRR is never negative; clipping at 0 keeps the order lower_95 <= lower_80 <= point.
    point = np.maximum(point, 0.0)
    lo80 = np.clip(lo80, 0.0, point)
    lo95 = np.clip(lo95, 0.0, lo80)
    hi80 = np.maximum(hi80, point)
    hi95 = np.maximum(hi95, hi80)
    return Prediction(point, lo80, hi80, lo95, hi95, movements, drivers)


# --- the published forecast --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForecastResult:
    """`forecast`: FORECAST_SCHEMA rows (90 per series with enough history); `status`: STATUS_SCHEMA, one row
    per series, saying whether it was forecast and why not."""

    forecast: pl.DataFrame
    status: pl.DataFrame


def mrr_forecast(daily: pl.DataFrame, horizon: int = HORIZON_DAYS, method: str = METHOD) -> ForecastResult:
    """The next `horizon` days of every series of `daily` (metrics.mrr_daily's columns, optionally `basis`),
    from its last day on; series with fewer than MIN_HISTORY_DAYS days get a status row and no forecast."""
    parts: list[pl.DataFrame] = []
    status: list[dict] = []
    for s in series_list(daily):
        row = {"integration": s.key[0], "basis": s.key[1], "currency": s.key[2], "first_date": s.first_date,
               "last_date": s.last_date, "history_days": s.days, "method": method,
               "last_mrr": _cents(s.mrr[-1])}
        if s.days < MIN_HISTORY_DAYS:
            status.append({**row, "forecast": False,
                           "reason": f"{s.days} days of history; a forecast needs at least {MIN_HISTORY_DAYS}"})
            continue
        prediction = predict(s, s.days - 1, horizon, method)
        if prediction is None:
            status.append({**row, "forecast": False, "reason": f"{method} could not be fitted to this series"})
            continue
        frame = prediction_rows(s, prediction, method)
        parts.append(frame)
        drivers = {k: (_cents(v) if k.endswith("mrr_per_month") else v)
                   for k, v in (prediction.drivers or {}).items()}
        reason = "forecast" if s.has_movements else (
            "forecast; this table has no movements, so daily rises count as new MRR and falls as churn")
        status.append({**row, "forecast": True, "reason": reason, **drivers,
                       "mrr_in_90_days": _cents(float(frame["mrr_forecast"][-1]))})
    forecast = pl.concat(parts) if parts else pl.DataFrame(schema=FORECAST_SCHEMA)
    return ForecastResult(forecast.select(list(FORECAST_SCHEMA)), _frame(status, STATUS_SCHEMA))


def prediction_rows(s: Series, prediction: Prediction, method: str) -> pl.DataFrame:
    """FORECAST_SCHEMA rows of one prediction made at the end of `s`. With movements, they are rounded to the
    cent and the point is the last actual MRR plus their running sum (each day reconciles); the bands keep
    their distance from the point, rounded to the cent."""
    horizon = len(prediction.point)
    origin_cents = int(round(float(s.mrr[-1]) * 100))
    if prediction.movements is not None:
        moves = {m: np.rint(v * 100).astype(np.int64) for m, v in prediction.movements.items()}
        net = sum(moves[m] for m in INFLOWS) - sum(moves[m] for m in OUTFLOWS)
        point = origin_cents + np.cumsum(net)
    else:
        moves = None
        point = np.rint(prediction.point * 100).astype(np.int64)
    point = np.maximum(point, 0)
    drop80 = np.maximum(np.rint((prediction.point - prediction.lower_80) * 100).astype(np.int64), 0)
    drop95 = np.maximum(np.rint((prediction.point - prediction.lower_95) * 100).astype(np.int64), drop80)
    rise80 = np.maximum(np.rint((prediction.upper_80 - prediction.point) * 100).astype(np.int64), 0)
    rise95 = np.maximum(np.rint((prediction.upper_95 - prediction.point) * 100).astype(np.int64), rise80)
    lo80 = np.maximum(point - drop80, 0)
    lo95 = np.minimum(np.maximum(point - drop95, 0), lo80)
    origin = s.last_date
    frame = pl.DataFrame({
        "integration": [s.key[0]] * horizon, "basis": [s.key[1]] * horizon, "currency": [s.key[2]] * horizon,
        "date": pl.date_range(origin + dt.timedelta(days=1), origin + dt.timedelta(days=horizon), eager=True),
        "origin_date": [origin] * horizon, "horizon_day": np.arange(1, horizon + 1, dtype=np.int32),
        "method": [method] * horizon,
        "point": point, "lo80": lo80, "hi80": point + rise80, "lo95": lo95, "hi95": point + rise95,
        **{f"m_{m}": (moves[m] if moves is not None else np.zeros(horizon, dtype=np.int64)) for m in MOVEMENTS},
    })
    columns = [cents_to_decimal(pl.col(src)).alias(dst) for src, dst in
               (("point", "mrr_forecast"), ("lo80", "lower_80"), ("hi80", "upper_80"), ("lo95", "lower_95"),
                ("hi95", "upper_95"))]
    columns += [(cents_to_decimal(pl.col(f"m_{m}")) if moves is not None else pl.lit(None, MONEY)).alias(m)
                for m in MOVEMENTS]
    return frame.with_columns(*columns, pl.col("horizon_day").cast(pl.Int32)).select(list(FORECAST_SCHEMA))


def _cents(value: float) -> Decimal | None:
    if value is None or not math.isfinite(value):
        return None
    return Decimal(int(round(value * 100))) / 100


def _frame(rows: list[dict], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


# --- checks (each returns offending rows; empty = fine) -----------------------------------------------------------

def interval_order_breaks(forecast: pl.DataFrame) -> pl.DataFrame:
    """Rows where lower_95 <= lower_80 <= mrr_forecast <= upper_80 <= upper_95 does not hold (or a value is
    missing or negative)."""
    ordered = ((pl.col("lower_95") >= 0) & (pl.col("lower_95") <= pl.col("lower_80"))
               & (pl.col("lower_80") <= pl.col("mrr_forecast")) & (pl.col("mrr_forecast") <= pl.col("upper_80"))
               & (pl.col("upper_80") <= pl.col("upper_95")))
    return forecast.filter(~ordered.fill_null(False)).select(
        *SERIES_KEYS, "date", "lower_95", "lower_80", "mrr_forecast", "upper_80", "upper_95")


def history_lengths(daily: pl.DataFrame) -> pl.DataFrame:
    """Per series of an MRR history frame: first and last date and the number of days between them."""
    frame = daily if "basis" in daily.columns else daily.with_columns(pl.lit("currency").alias("basis"))
    return frame.group_by(*SERIES_KEYS).agg(pl.col("date").min().alias("first_date"),
                                            pl.col("date").max().alias("last_date")).with_columns(
        ((pl.col("last_date") - pl.col("first_date")).dt.total_days() + 1).cast(pl.Int32).alias("history_days"))


def horizon_breaks(forecast: pl.DataFrame, daily: pl.DataFrame, horizon: int = HORIZON_DAYS) -> pl.DataFrame:
    """Series whose forecast is not exactly the `horizon` consecutive days after their last day of history, when
    they have at least MIN_HISTORY_DAYS days (computed from the history itself, not from the forecast's status).
    Forecast rows of series not in the history count too."""
    expected = history_lengths(daily).filter(pl.col("history_days") >= MIN_HISTORY_DAYS)
    got = forecast.group_by(*SERIES_KEYS).agg(
        pl.len().alias("rows"), pl.col("date").n_unique().alias("days"), pl.col("date").min().alias("first"),
        pl.col("date").max().alias("last"))
    joined = expected.join(got, on=list(SERIES_KEYS), how="full", coalesce=True)
    ok = ((pl.col("rows") == horizon) & (pl.col("days") == horizon)
          & (pl.col("first") == pl.col("last_date") + pl.duration(days=1))
          & (pl.col("last") == pl.col("last_date") + pl.duration(days=horizon)))
    short = history_lengths(daily).filter(pl.col("history_days") < MIN_HISTORY_DAYS).select(*SERIES_KEYS)
    joined = joined.join(short, on=list(SERIES_KEYS), how="anti")
    return joined.filter(~ok.fill_null(False)).select(
        *SERIES_KEYS, pl.col("history_days"), pl.col("rows").fill_null(0).alias("forecast_rows"),
        pl.col("first").alias("first_forecast_date"), pl.col("last").alias("last_forecast_date"))


def short_history_breaks(forecast: pl.DataFrame, status: pl.DataFrame, daily: pl.DataFrame) -> pl.DataFrame:
    """Series with fewer than MIN_HISTORY_DAYS days of history (from the history itself) that have forecast rows,
    or whose status row is missing or does not say that no forecast was made."""
    short = history_lengths(daily).filter(pl.col("history_days") < MIN_HISTORY_DAYS)
    rows = forecast.group_by(*SERIES_KEYS).agg(pl.len().alias("forecast_rows"))
    stated = status.select(*SERIES_KEYS, pl.col("forecast").alias("status_forecast"), "reason")
    joined = short.join(rows, on=list(SERIES_KEYS), how="left").join(stated, on=list(SERIES_KEYS), how="left")
    ok = (pl.col("forecast_rows").fill_null(0) == 0) & (pl.col("status_forecast") == False)  # noqa: E712
    return joined.filter(~ok.fill_null(False)).select(
        *SERIES_KEYS, "history_days", pl.col("forecast_rows").fill_null(0), "status_forecast", "reason")
