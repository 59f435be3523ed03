"""Pandera models: the published frame passes, corrupted frames are rejected with every failure listed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from segflow_pipeline.transform import mrr, schemas

from segflow_pipeline_tests.support.mrr_inputs import AS_OF, Account, at


@pytest.fixture
def frame(account: Account) -> pl.DataFrame:
    account.subscription([(account.price(unit_amount=4900), 1)], start=at("2024-06-10"))
    return mrr.daily_mrr(mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF), AS_OF.date())


def test_published_frame_matches_its_schema(frame: pl.DataFrame) -> None:
    assert frame.height == 6
    cases = schemas.failure_cases(schemas.MrrDaily, frame)
    assert cases.height == 0 and cases.schema == pl.Schema(schemas.FAILURE_CASES_SCHEMA)


def test_negative_mrr_and_duplicate_key_are_both_reported(frame: pl.DataFrame) -> None:
    bad = pl.concat([frame, frame.head(1)]).with_columns(
        pl.when(pl.col("date") == dt.date(2024, 6, 12)).then(pl.lit(Decimal("-1.00")))
        .otherwise(pl.col("mrr")).cast(pl.Decimal(18, 2)).alias("mrr")
    )
    cases = schemas.failure_cases(schemas.MrrDaily, bad)
    checks = set(cases.get_column("check").to_list())
    assert "greater_than_or_equal_to(0)" in checks
    assert "multiple_fields_uniqueness" in checks
    assert "arr_is_12_times_mrr" in checks
    negative = cases.filter(pl.col("column") == "mrr")
    assert negative.get_column("failure_case").to_list() == ["-1.00"]


def test_wrong_column_type_is_reported(frame: pl.DataFrame) -> None:
    cases = schemas.failure_cases(schemas.MrrDaily, frame.with_columns(pl.col("active_subscriptions").cast(pl.Int64)))
    assert cases.filter(pl.col("column") == "active_subscriptions").height == 1


def test_snapshot_rows_match_their_schema(account: Account) -> None:
    account.subscription([(account.price(unit_amount=1000, interval="week"), 1)])
    snap = mrr.snapshot_rows(mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF), AS_OF.date())
    assert snap.height == 1
    assert schemas.failure_cases(schemas.MrrSnapshots, snap).height == 0


def test_failure_cases_name_the_rows_that_failed(frame: pl.DataFrame) -> None:
    bad = frame.with_columns(
        pl.when(pl.col("date") == dt.date(2024, 6, 12)).then(pl.lit(Decimal("-1.00")))
        .otherwise(pl.col("mrr")).cast(pl.Decimal(18, 2)).alias("mrr"))
    cases = schemas.failure_cases(schemas.MrrDaily, bad, keys=("currency", "date"))
    assert cases.columns == ["currency", "date", *schemas.FAILURE_CASES_SCHEMA]
    negative = cases.filter(pl.col("column") == "mrr")
    assert negative.select("currency", "date", "failure_case").rows() == [("usd", dt.date(2024, 6, 12), "-1.00")]
    assert schemas.failure_cases(schemas.MrrDaily, frame, keys=("currency", "date")).height == 0


def test_a_run_validates_its_snapshot_rows_too(account: Account) -> None:
    """`matches_schema` covers the snapshot rows later runs trust: a duplicated subscription row and a zero
    denominator are reported under metrics.mrr_snapshots, keyed by subscription, while the daily frame passes."""
    account.subscription([(account.price(unit_amount=1000), 1)], id="sub_a")
    intervals = mrr.subscription_mrr_intervals(account.inputs(), as_of=AS_OF)
    daily, snap = mrr.daily_mrr(intervals, AS_OF.date()), mrr.snapshot_rows(intervals, AS_OF.date())
    assert mrr.schema_failures(daily, snap).height == 0
    bad = pl.concat([snap, snap.with_columns(pl.lit(0, pl.Decimal(38, 0)).alias("mrr_den"))])
    cases = mrr.schema_failures(daily, bad)
    assert set(cases.get_column("table")) == {"metrics.mrr_snapshots"}
    assert {"multiple_fields_uniqueness", "greater_than(0)"} <= set(cases.get_column("check"))
    assert set(cases.get_column("subscription").drop_nulls()) == {"sub_a"}
