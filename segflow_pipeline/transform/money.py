"""Exact money arithmetic on Polars columns: integers only, one half-up rounding.

Belongs here: turning Stripe's minor-unit amounts (integers, or DECIMAL(38,12) for fractional minor units) into
exact integers, greatest common divisors and least common multiples, and rounding a non-negative exact value to
0.01 major units half-up (docs/mrr.md section 1). Not here: which amounts count (`pricing.py`, `intervals.py`).

Why integers: normalizing to a month divides by 12 × interval_count (a weekly 10.00 is 43.333...), and a
Polars Decimal division or product truncates to the column scale, while `Decimal.round` rounds half to even.
Instead every value is an Int128 numerator over one run-wide denominator ("atoms per major unit", see
`intervals.py`), so sums are exact and the only rounding is `half_up_cents`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Iterable

import polars as pl

PICO = 10**12  # Stripe's *_decimal amounts carry at most 12 fractional digits of the minor unit


def pico_amount(decimal_col: str, integer_col: str) -> pl.Expr:
    """An amount in 10⁻¹² minor units (Int128): the `*_decimal` column when set, else the integer column."""
    return pl.coalesce(
        pl.col(decimal_col).cast(pl.Decimal(38, 12)).to_physical().cast(pl.Int128),
        pl.col(integer_col).cast(pl.Int128) * PICO,
    )


def fraction_digits(pico: pl.Expr) -> pl.Expr:
    """Fewest decimal digits (0..12) needed to write a 10⁻¹² amount exactly, as Int64."""
    trailing = pl.sum_horizontal([(pico % (10**k) == 0).cast(pl.Int64) for k in range(1, 13)])
    return pl.lit(12, pl.Int64) - trailing


def gcd_columns(frame: pl.DataFrame, a: str, b: str, out: str) -> pl.DataFrame:
    """Adds `out` = gcd(|a|, |b|) row by row (Euclid's algorithm run on whole columns; gcd(0, 0) = 1)."""
    work = frame.with_columns(
        pl.col(a).cast(pl.Int128).abs().fill_null(0).alias("__x"),
        pl.col(b).cast(pl.Int128).abs().fill_null(0).alias("__y"),
    )
    # Each pass is one column operation; Euclid on Int128 needs at most ~180 passes, usually a handful.
    for _ in range(200):
        if work.height == 0 or work.select((pl.col("__y") == 0).all()).item():
            break
        done = pl.col("__y") == 0
        work = work.with_columns(
            pl.when(done).then(pl.col("__x")).otherwise(pl.col("__y")).alias("__x"),
            pl.when(done).then(pl.lit(0, pl.Int128)).otherwise(pl.col("__x") % pl.col("__y")).alias("__y"),
        )
    return work.with_columns(
        pl.when(pl.col("__x") == 0).then(1).otherwise(pl.col("__x")).cast(pl.Int128).alias(out)
    ).drop("__x", "__y")


def lcm_of(values: Iterable[int]) -> int:
    """Least common multiple of a few distinct positive integers (the run's denominators)."""
    result = 1
    for v in values:
        if v is not None and v > 0:
            result = math.lcm(result, int(v))
    return result


def half_up_cents(atoms: pl.Expr, atoms_per_unit: pl.Expr | int) -> pl.Expr:
    """Non-negative exact value atoms / atoms_per_unit (major units), rounded half-up to 0.01, as Int64 cents."""
    unit = atoms_per_unit if isinstance(atoms_per_unit, pl.Expr) else pl.lit(atoms_per_unit, pl.Int128)
    return ((atoms * 200 + unit) // (unit * 2)).cast(pl.Int64)


def cents_to_decimal(cents: pl.Expr) -> pl.Expr:
    """Integer cents → DECIMAL(18,2) major units, exactly; null where the amount does not fit DECIMAL(18,2)
    (absurd input amounts), so the schema check reports the rows instead of the cast stopping the run."""
    return (cents.cast(pl.Decimal(38, 2)) / 100).cast(pl.Decimal(18, 2), strict=False)


def atoms_to_decimal(atoms: pl.Expr, atoms_per_unit: pl.Expr) -> pl.Expr:
    """Exact value → DECIMAL(38,12) for reading (half-up at 10⁻¹²); sums use the atoms, never this."""
    scaled = (atoms * PICO * 2 + atoms_per_unit) // (atoms_per_unit * 2)
    return scaled.cast(pl.Decimal(38, 0)) * pl.lit(Decimal("1E-12"), pl.Decimal(38, 12))
