"""Pandera DataFrameModels for the tables the MRR transform writes, and `failure_cases()`.

Belongs here: column types and value checks of metrics.mrr_daily (docs/tables.md) and metrics.mrr_snapshots, both
validated before anything is written (`mrr.mrr_run`, the `matches_schema` check). Not here: the invariants that
span rows over time (`invariants.py`), or rules for input rows: a bad input row is left out and reported
(`unusable.py`), it does not stop the run.

Validate collected DataFrames with `lazy=True` (what `failure_cases` does): a LazyFrame is only checked for its
schema, not its values, and lazy validation reports every failure at once.
"""

from __future__ import annotations

import polars as pl
import pandera.polars as pa


CURRENCY_CODE = r"^[a-z]{3}$"

FAILURE_CASES_SCHEMA: dict[str, pl.DataType] = {
    "schema_context": pl.Utf8(),
    "column": pl.Utf8(),
    "check": pl.Utf8(),
    "check_number": pl.Int32(),
    "failure_case": pl.Utf8(),
    "index": pl.Int32(),
}


class MrrDaily(pa.DataFrameModel):
    """metrics.mrr_daily (docs/tables.md): one row per (integration, currency, date), amounts non-negative."""

    integration: str = pa.Field(nullable=False)
    date: pl.Date = pa.Field(nullable=False)
    currency: str = pa.Field(nullable=False, str_matches=CURRENCY_CODE)
    mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    arr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    active_subscriptions: pl.Int32 = pa.Field(nullable=False, ge=0)
    paying_customers: pl.Int32 = pa.Field(nullable=False, ge=0)
    new_mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    expansion_mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    reactivation_mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    contraction_mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    churned_mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)

    class Config:
        strict = True
        unique = ["integration", "currency", "date"]

    @pa.dataframe_check
    def arr_is_12_times_mrr(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("arr") == pl.col("mrr") * 12)

    @pa.dataframe_check
    def paying_customers_have_active_subscriptions(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("paying_customers") <= pl.col("active_subscriptions"))

    @pa.dataframe_check
    def amounts_fit_decimal_18_2(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """An amount too large for DECIMAL(18,2) comes out null (`money.cents_to_decimal`): an input amount or
        quantity is absurd. This names the reason where `not_nullable` alone would not."""
        amounts = ["mrr", "arr", "new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr"]
        return data.lazyframe.select(pl.all_horizontal(pl.col(amounts).is_not_null()))


class MrrSnapshots(pa.DataFrameModel):
    """metrics.mrr_snapshots (snapshots.SNAPSHOT_SCHEMA): one row per (integration, date, subscription)."""

    integration: str = pa.Field(nullable=False)
    date: pl.Date = pa.Field(nullable=False)
    subscription: str = pa.Field(nullable=False)
    customer: str = pa.Field(nullable=False)
    currency: str = pa.Field(nullable=False, str_matches=CURRENCY_CODE)
    mrr: pl.Decimal(18, 2) = pa.Field(nullable=False, ge=0)
    mrr_num: pl.Decimal(38, 0) = pa.Field(nullable=False, ge=0)
    mrr_den: pl.Decimal(38, 0) = pa.Field(nullable=False, gt=0)

    class Config:
        strict = True
        unique = ["integration", "date", "subscription"]


def failure_cases(model: type[pa.DataFrameModel], frame: pl.DataFrame, keys: tuple[str, ...] = ()) -> pl.DataFrame:
    """Every failure of `frame` against `model` (lazy validation of the collected frame), as
    FAILURE_CASES_SCHEMA rows; empty when the frame is valid. `keys`: columns of `frame` put first on each case,
    taken from the row it names (`index`), so a reader sees which rows failed (null for table-level failures)."""
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()  # values are only checked on a DataFrame
    cases = _failure_cases(model, frame)
    if not keys:
        return cases
    rows = frame.select(keys).with_row_index("index").with_columns(pl.col("index").cast(pl.Int32))
    return cases.join(rows, on="index", how="left").select(*keys, *FAILURE_CASES_SCHEMA)


def _failure_cases(model: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame:
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        return cases.select(
            [
                (pl.col(name).cast(pl.Utf8) if name == "failure_case" else pl.col(name)).cast(dtype, strict=False)
                if name in cases.columns
                else pl.lit(None, dtype).alias(name)
                for name, dtype in FAILURE_CASES_SCHEMA.items()
            ]
        )
    except pa.errors.SchemaError as error:
        return pl.DataFrame(
            {"schema_context": ["DataFrameSchema"], "column": [None], "check": [str(error.check)],
             "check_number": [None], "failure_case": [str(error)], "index": [None]},
            schema=FAILURE_CASES_SCHEMA,
        )
    return pl.DataFrame(schema=FAILURE_CASES_SCHEMA)
