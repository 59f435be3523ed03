"""What a bet did to MRR: the actual MRR after its start against the forecast made only from the data before it.

Belongs here: the MRR series of a bet's segment (all MRR, one product's or one price's) and the comparison
(marts.bet_impact's rows). Not here: reading the bets file (`bets.py`), the forecasting method
(`transform/forecast.py`, whose `predict` sees only the history up to the day before the start), Dagster or I/O.

A product's or price's MRR comes from marts.mrr_drivers_daily, the customers' movements shared out over their
subscription items: its running sum is the segment's MRR (the segments of a day add up to metrics.mrr_daily's MRR),
and its movements are the segment's, so the same drivers model forecasts it. marts.mrr_by_product cannot serve: it
is today's list-price MRR only, with no history to forecast from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import polars as pl

from segflow_pipeline.bets import Bet
from segflow_pipeline.transform import forecast

MAX_DAYS = 365  # a forecast from before the start says little about the effect a year later
MONEY = pl.Decimal(18, 2)
SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(), "bet": pl.Utf8(), "currency": pl.Utf8(), "start_date": pl.Date(),
    "end_date": pl.Date(), "segment": pl.Utf8(), "product": pl.Utf8(), "price": pl.Utf8(), "note": pl.Utf8(),
    "evaluated_on": pl.Date(), "days_observed": pl.Int32(), "mrr_before_start": MONEY, "actual_mrr": MONEY,
    "forecast_mrr": MONEY, "lower_80": MONEY, "upper_80": MONEY, "lower_95": MONEY, "upper_95": MONEY,
    "difference": MONEY, "difference_pct": pl.Float64(), "outside_95": pl.Boolean(), "verdict": pl.Utf8(),
    "method": pl.Utf8(), "status": pl.Utf8(),
}


def segment_history(bet: Bet, daily: pl.DataFrame, drivers_daily: pl.DataFrame) -> pl.DataFrame:
    """The bet's segment as an MRR history frame (integration, currency, date, mrr and the five movements): all of
    metrics.mrr_daily for a bet without filter, else the running sum of the product's or price's movements in
    marts.mrr_drivers_daily, one row per day up to the currency's last day in `daily`."""
    if not (bet.product or bet.price):
        return daily.select("integration", "currency", "date", "mrr", *forecast.MOVEMENTS)
    column, value = ("product", bet.product) if bet.product else ("price", bet.price)
    moves = drivers_daily.filter(pl.col(column) == value).group_by("integration", "currency", "date").agg(
        *(pl.col(m).sum() for m in forecast.MOVEMENTS))
    if moves.is_empty():
        return pl.DataFrame(schema={"integration": pl.Utf8, "currency": pl.Utf8, "date": pl.Date, "mrr": MONEY,
                                    **{m: MONEY for m in forecast.MOVEMENTS}})
    last = daily.group_by("integration", "currency").agg(pl.col("date").max().alias("last"))
    spans = moves.group_by("integration", "currency").agg(pl.col("date").min().alias("first")).join(
        last, on=["integration", "currency"], how="left").with_columns(
        pl.coalesce("last", "first").alias("last"))
    days = spans.with_columns(pl.date_ranges("first", "last").alias("date")).explode("date").select(
        "integration", "currency", "date")
    filled = days.join(moves, on=["integration", "currency", "date"], how="left").with_columns(
        *(pl.col(m).fill_null(Decimal("0")) for m in forecast.MOVEMENTS)).sort("integration", "currency", "date")
    net = (pl.col("new_mrr") + pl.col("expansion_mrr") + pl.col("reactivation_mrr") - pl.col("contraction_mrr")
           - pl.col("churned_mrr"))
    return filled.with_columns(net.cum_sum().over("integration", "currency").cast(MONEY).alias("mrr")).select(
        "integration", "currency", "date", "mrr", *forecast.MOVEMENTS)


def bet_impact(bets: Iterable[Bet], daily: pl.DataFrame, drivers_daily: pl.DataFrame, integration: str,
               method: str = forecast.METHOD) -> pl.DataFrame:
    """marts.bet_impact: per bet and currency of its segment, on the last day observed (the bet's end, or the last
    day of data, at most MAX_DAYS after the start), the actual MRR against the forecast from the day before the
    start, its intervals, the difference and whether it lies outside the 95 % interval; rows that cannot be
    compared say why in `status`."""
    rows: list[dict] = []
    for bet in bets:
        base = {"integration": integration, "bet": bet.name, "start_date": bet.start, "end_date": bet.end,
                "segment": bet.segment, "product": bet.product, "price": bet.price, "note": bet.note,
                "method": method}
        series = forecast.series_list(segment_history(bet, daily, drivers_daily).with_columns(
            pl.lit("currency").alias("basis")))
        if not series:
            rows.append({**base, "status": f"no MRR in the segment ({bet.segment}) yet"})
            continue
        for s in series:
            rows.append({**base, "currency": s.key[2], **_compare(bet, s, method)})
    frame = pl.DataFrame([{k: r.get(k) for k in SCHEMA} for r in rows], schema=SCHEMA, orient="row") if rows \
        else pl.DataFrame(schema=SCHEMA)
    return frame.sort("start_date", "bet", "currency", nulls_last=True)


def _compare(bet: Bet, s: forecast.Series, method: str) -> dict:
    origin = (bet.start - s.first_date).days - 1  # index of the day before the start
    if bet.start > s.last_date:
        return {"status": f"not started: starts after the last day of data ({s.last_date})"}
    if origin + 1 < forecast.MIN_HISTORY_DAYS:
        return {"status": f"{max(origin + 1, 0)} days of this segment's MRR before the start; a forecast needs at "
                          f"least {forecast.MIN_HISTORY_DAYS}"}
    last = min(bet.end or s.last_date, s.last_date, bet.start + dt.timedelta(days=MAX_DAYS - 1))
    horizon = (last - bet.start).days + 1
    prediction = forecast.predict(s, origin, horizon, method)
    if prediction is None:
        return {"status": f"{method} could not be fitted to the history before the start"}
    actual = _money(s.mrr[origin + horizon])
    values = {name: _money(getattr(prediction, name)[-1])
              for name in ("point", "lower_80", "upper_80", "lower_95", "upper_95")}
    difference = actual - values["point"]
    outside = actual < values["lower_95"] or actual > values["upper_95"]
    verdict = ("above the 95 % interval" if actual > values["upper_95"]
               else "below the 95 % interval" if actual < values["lower_95"] else "within the 95 % interval")
    capped = bet.end is None or bet.end > last
    status = ("compared" if not capped else
              "compared so far (the bet is still running)" if last == s.last_date else
              f"compared over the first {MAX_DAYS} days")
    return {"evaluated_on": last, "days_observed": horizon, "mrr_before_start": _money(s.mrr[origin]),
            "actual_mrr": actual, "forecast_mrr": values["point"], "lower_80": values["lower_80"],
            "upper_80": values["upper_80"], "lower_95": values["lower_95"], "upper_95": values["upper_95"],
            "difference": difference,
            "difference_pct": float(difference / values["point"]) if values["point"] else None,
            "outside_95": outside, "verdict": verdict, "status": status}


def _money(value: float) -> Decimal:
    return Decimal(int(round(float(value) * 100))) / 100
