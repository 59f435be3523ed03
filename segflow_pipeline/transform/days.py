"""The time model every step of the MRR rebuild shares (docs/mrr.md sections 1 and 5).

The daily value is the state at the end of the UTC day, so a change at timestamp `t` shows from day `t.date()` on;
a change after the run's `as_of` has not happened yet. Every range is a half-open range of days
`[from_day, to_day)`; `FAR` stands for "still so". `SOURCES` are what can date a value, in rising order of trust.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

FAR = dt.date(9999, 12, 31)
MIN = dt.date(1970, 1, 1)

SOURCES = ("lifecycle", "invoice", "event", "snapshot")
SOURCE_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SOURCES)}


def day_from(ts: pl.Expr, as_of: dt.datetime) -> pl.Expr:
    """First day whose end-of-day state includes a change at `ts`; null when `ts` is unknown or after `as_of`."""
    return pl.when(ts <= as_of).then(ts.dt.date()).otherwise(pl.lit(None, pl.Date))


def day_until(ts: pl.Expr, as_of: dt.datetime) -> pl.Expr:
    """Exclusive end day for something that stops at `ts`; FAR when `ts` is unknown or after `as_of`."""
    return pl.when(ts <= as_of).then(ts.dt.date()).otherwise(pl.lit(FAR, pl.Date))
