"""transform/bet_impact.py: a bet that changed the trend lands outside the 95 % interval of the forecast made before
it, one that did not stays inside; segments of a product or price come from the daily drivers; bets that cannot be
compared say why."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import polars as pl

from segflow_pipeline.bets import Bet
from segflow_pipeline.transform import bet_impact as impact
from segflow_pipeline.transform import forecast as fc
from segflow_pipeline_tests.unit.transform.test_forecast import daily

START = dt.date(2025, 1, 1)
D = Decimal


def noisy(n: int, jump_at: int | None = None, seed: int = 2) -> pl.DataFrame:
    """About 100.00 of new MRR a day with noise, 0.2 % churn a day; from `jump_at` on, new MRR triples."""
    rng = np.random.default_rng(seed)
    new = rng.poisson(4, n) * 2500
    if jump_at is not None:
        new[jump_at:] *= 3
    mrr, churn = 0, []
    for i in range(n):
        lost = mrr // 500 if i else 0
        churn.append(lost)
        mrr += int(new[i]) - lost + (1_000_000 if i == 0 else 0)
    return daily({"new_mrr": new.tolist(), "churned_mrr": churn}, opening_cents=1_000_000)


def empty_drivers() -> pl.DataFrame:
    return pl.DataFrame(schema={"integration": pl.Utf8, "currency": pl.Utf8, "date": pl.Date, "product": pl.Utf8,
                                "price": pl.Utf8, **{m: pl.Decimal(18, 2) for m in fc.MOVEMENTS}})


def test_a_bet_that_tripled_new_mrr_is_above_the_95_interval() -> None:
    history = noisy(400, jump_at=300)
    start = START + dt.timedelta(days=300)
    (row,) = impact.bet_impact([Bet("launch", start, end=start + dt.timedelta(days=59))], history, empty_drivers(),
                               "acme").iter_rows(named=True)
    assert row["status"] == "compared" and row["evaluated_on"] == start + dt.timedelta(days=59)
    assert row["days_observed"] == 60
    assert row["mrr_before_start"] == history["mrr"][299]
    assert row["actual_mrr"] == history["mrr"][359]
    assert row["difference"] == row["actual_mrr"] - row["forecast_mrr"]
    assert row["outside_95"] is True and row["verdict"] == "above the 95 % interval"
    # the forecast used nothing from the start on: the same as a forecast from a history cut the day before
    cut = history.filter(pl.col("date") < start)
    (s,) = fc.series_list(cut)
    expected = fc.predict(s, s.days - 1, 60)
    assert abs(float(row["forecast_mrr"]) - expected.point[-1]) < 0.01


def test_a_bet_that_changed_nothing_stays_within_the_interval() -> None:
    history = noisy(400)
    (row,) = impact.bet_impact([Bet("nothing", START + dt.timedelta(days=300))], history, empty_drivers(),
                               "acme").iter_rows(named=True)
    assert row["outside_95"] is False and row["verdict"] == "within the 95 % interval"
    assert row["status"] == "compared so far (the bet is still running)"
    assert row["evaluated_on"] == history["date"].max()
    assert row["lower_95"] <= row["lower_80"] <= row["forecast_mrr"] <= row["upper_80"] <= row["upper_95"]


def test_bets_that_cannot_be_compared_say_why() -> None:
    history = noisy(200)
    rows = impact.bet_impact([Bet("early", START + dt.timedelta(days=30)),
                              Bet("future", START + dt.timedelta(days=400)),
                              Bet("ghost", START + dt.timedelta(days=100), product="prod_none")],
                             history, empty_drivers(), "acme")
    status = dict(zip(rows["bet"], rows["status"]))
    assert status["early"] == "30 days of this segment's MRR before the start; a forecast needs at least 60"
    assert status["future"] == "not started: starts after the last day of data (2025-07-19)"
    assert status["ghost"] == "no MRR in the segment (product prod_none) yet"
    assert rows.filter(pl.col("bet") == "ghost")["currency"].to_list() == [None]


def test_a_year_long_bet_is_compared_over_its_first_365_days() -> None:
    history = noisy(900)
    (row,) = impact.bet_impact([Bet("long", START + dt.timedelta(days=100))], history, empty_drivers(),
                               "acme").iter_rows(named=True)
    assert row["days_observed"] == 365 and row["status"] == "compared over the first 365 days"


def test_a_product_segment_is_the_running_sum_of_its_movements() -> None:
    history = noisy(120)
    drivers = pl.DataFrame({
        "integration": ["acme"] * 3, "currency": ["usd"] * 3,
        "date": [START + dt.timedelta(days=d) for d in (10, 20, 20)], "product": ["prod_a", "prod_a", "prod_b"],
        "price": ["price_a", "price_a2", "price_b"],
        "new_mrr": [D("50.00"), D("0.00"), D("7.00")], "expansion_mrr": [D("0.00"), D("25.00"), D("0.00")],
        "reactivation_mrr": [D("0.00")] * 3, "contraction_mrr": [D("0.00")] * 3,
        "churned_mrr": [D("0.00"), D("5.00"), D("0.00")],
    }).with_columns(*(pl.col(m).cast(pl.Decimal(18, 2)) for m in fc.MOVEMENTS))
    segment = impact.segment_history(Bet("x", START, product="prod_a"), history, drivers)
    assert segment["date"].min() == START + dt.timedelta(days=10)
    assert segment["date"].max() == history["date"].max()
    assert segment.height == 110
    values = dict(zip(segment["date"], segment["mrr"]))
    assert values[START + dt.timedelta(days=19)] == D("50.00")
    assert values[START + dt.timedelta(days=20)] == D("70.00")
    assert values[START + dt.timedelta(days=119)] == D("70.00")
    by_price = impact.segment_history(Bet("y", START, price="price_b"), history, drivers)
    assert by_price["mrr"].to_list()[-1] == D("7.00")
    whole = impact.segment_history(Bet("z", START), history, drivers)
    assert whole["mrr"].to_list() == history["mrr"].to_list()
