"""Which coupons reduce which item or subscription on which days, and applying them (docs/mrr.md section 4).

Belongs here: discounts by scope (item, subscription, or a customer's inherited by its subscriptions without
their own), the `discounts` option (forever / all / none), and applying percentages and amounts off to exact
item values and to each subscription's item total. Not here: what a coupon is worth (`pricing.coupon_table`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform.days import MIN, day_from, day_until
from segflow_pipeline.transform.inputs import MrrInputs


def discount_table(t: MrrInputs, subs: pl.DataFrame, coupons: pl.DataFrame, options: MrrOptions,
                    as_of: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(item discounts keyed by integration+item, subscription discounts keyed by integration+subscription),
    each with pnum, pden, amount_off (minor units), from_day, to_day."""
    if options.discounts == "none":
        empty = {"integration": pl.Utf8, "key": pl.Utf8, "pnum": pl.Int128, "pden": pl.Int128,
                 "amount_off": pl.Int128, "from_day": pl.Date, "to_day": pl.Date}
        return (pl.DataFrame(schema={**empty, "coupon_currency": pl.Utf8}).rename({"key": "item"}),
                pl.DataFrame(schema=empty).rename({"key": "subscription"}))
    usable = coupons.filter(pl.col("problem").is_null())
    if options.discounts == "forever":
        usable = usable.filter(pl.col("duration") == "forever")  # Stripe's default MRR excludes once/repeating
    disc = (
        t.discounts.join(usable, on=["integration", "coupon"], how="inner")
        .with_columns(
            # a discount counts from the day it started until the day it ended (end-of-day values)
            pl.when(pl.col("start").is_null()).then(pl.lit(MIN)).otherwise(day_from(pl.col("start"), as_of))
            .alias("from_day"),
            day_until(pl.col("end"), as_of).alias("to_day"),
        )
        .filter(pl.col("from_day").is_not_null() & (pl.col("from_day") < pl.col("to_day")))
    )
    item_level = disc.filter(pl.col("scope") == "subscription_item").select(
        "integration", pl.col("target").alias("item"), "pnum", "pden", "amount_off", "coupon_currency",
        "from_day", "to_day",
    )
    own = disc.filter(pl.col("scope") == "subscription").select(
        "integration", pl.col("target").alias("subscription"), "pnum", "pden", "amount_off", "coupon_currency",
        "from_day", "to_day",
    )
    # a customer's discount applies to each of its subscriptions that has no discount of its own
    has_own = t.discounts.filter(pl.col("scope") == "subscription").select(
        "integration", pl.col("target").alias("subscription")
    ).unique()
    inherited = (
        disc.filter(pl.col("scope") == "customer")
        .drop("subscription", "customer", "subscription_item")
        .join(subs.select("integration", "subscription", pl.col("customer").alias("target")),
              on=["integration", "target"], how="inner")
        .join(has_own, on=["integration", "subscription"], how="anti")
        .select("integration", "subscription", "pnum", "pden", "amount_off", "coupon_currency", "from_day", "to_day")
    )
    sub_level = pl.concat([own, inherited])
    # amount_off is in the coupon's currency: it only reduces subscriptions billed in that currency
    cur = subs.select("integration", "subscription", "currency")
    sub_level = sub_level.join(cur, on=["integration", "subscription"], how="inner").filter(
        (pl.col("amount_off") == 0) | (pl.col("coupon_currency") == pl.col("currency"))
    ).drop("coupon_currency", "currency")
    return item_level, sub_level


def apply_item_discounts(rows: pl.DataFrame, item_disc: pl.DataFrame) -> pl.DataFrame:
    """Item-level discounts (section 4) on item rows, split where a discount starts or ends; never below 0."""
    if item_disc.height == 0:
        return rows
    item_keys = ["integration", "item"]
    discounted = rows.join(item_disc.select(item_keys).unique(), on=item_keys, how="semi")
    plain = rows.join(item_disc.select(item_keys).unique(), on=item_keys, how="anti")
    cuts = pl.concat([
        item_disc.select(*item_keys, pl.col("from_day").alias("cut")),
        item_disc.select(*item_keys, pl.col("to_day").alias("cut")),
    ]).unique()
    pieces = _split_rows(discounted, cuts, item_keys).with_row_index("__pid")
    factors = (
        pieces.select("__pid", *item_keys, pl.col("from_day").alias("day"))
        .join(item_disc, on=item_keys, how="inner")
        .filter((pl.col("from_day") <= pl.col("day")) & (pl.col("day") < pl.col("to_day")))
        .group_by("__pid")
        .agg(pl.col("pnum").product().alias("pnum"), pl.col("pden").product().alias("pden"),
             pl.col("amount_off").sum().alias("amount_off"))
    )
    applied = pieces.join(factors, on="__pid", how="left").with_columns(
        pl.max_horizontal(
            pl.lit(0, pl.Int128),
            pl.col("atoms") * pl.col("pnum").fill_null(1) // pl.col("pden").fill_null(1)
            - pl.col("amount_off").fill_null(0) * pl.col("atoms_per_minor_off"),
        ).alias("atoms")
    ).drop("__pid", "pnum", "pden", "amount_off")
    return pl.concat([plain, applied.select(plain.columns)])


def apply_subscription_discounts(segments: pl.DataFrame, sub_disc: pl.DataFrame, rows: pl.DataFrame,
                                  unit: pl.Expr) -> pl.DataFrame:
    """Subscription-level (or inherited customer-level) discounts on each segment's item total: percentages
    multiply, then an amount_off is taken once per subscription per billing period, normalized with the
    subscription's interval on that day; never below 0 (section 3/4)."""
    if sub_disc.height == 0:
        return segments
    keys = ["integration", "subscription"]
    factors = (
        segments.select(*keys, pl.col("from_day").alias("day"))
        .join(sub_disc, on=keys, how="inner")
        .filter((pl.col("from_day") <= pl.col("day")) & (pl.col("day") < pl.col("to_day")))
        .group_by(*keys, "day")
        .agg(pl.col("pnum").product().alias("pnum"), pl.col("pden").product().alias("pden"),
             pl.col("amount_off").sum().alias("amount_off"))
    )
    # the billing interval in effect that day: from any item row of the subscription covering it
    with_off = factors.filter(pl.col("amount_off") > 0)
    per_minor = (
        with_off.select(*keys, "day")
        .join(rows.select(*keys, "from_day", "to_day", "atoms_per_minor_off"), on=keys, how="inner")
        .filter((pl.col("from_day") <= pl.col("day")) & (pl.col("day") < pl.col("to_day")))
        .group_by(*keys, "day")
        .agg(pl.col("atoms_per_minor_off").min())
    )
    factors = factors.join(per_minor, on=[*keys, "day"], how="left").rename({"day": "from_day"})
    return segments.join(factors, on=[*keys, "from_day"], how="left").with_columns(
        pl.max_horizontal(
            pl.lit(0, pl.Int128),
            pl.col("atoms") * pl.col("pnum").fill_null(1) // pl.col("pden").fill_null(1)
            - pl.col("amount_off").fill_null(0) * pl.col("atoms_per_minor_off").fill_null(0),
        ).alias("atoms")
    ).drop("pnum", "pden", "amount_off", "atoms_per_minor_off")


def _split_rows(rows: pl.DataFrame, cuts: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Splits each row's [from_day, to_day) at the cut days (`cuts`: keys + `cut`) falling strictly inside it."""
    rows = rows.with_row_index("__rid")
    inner = (
        rows.select("__rid", *keys, "from_day", "to_day")
        .join(cuts, on=keys, how="inner")
        .filter((pl.col("cut") > pl.col("from_day")) & (pl.col("cut") < pl.col("to_day")))
        .select("__rid", pl.col("cut").alias("__b"))
    )
    bounds = (
        pl.concat([rows.select("__rid", pl.col("from_day").alias("__b")), inner])
        .unique()
        .sort("__rid", "__b")
        .with_columns(pl.col("__b").shift(-1).over("__rid", order_by="__b").alias("__e"))
    )
    return (
        bounds.join(rows, on="__rid", how="inner")
        .with_columns(pl.col("__b").alias("from_day"), pl.coalesce("__e", "to_day").alias("to_day"))
        .drop("__rid", "__b", "__e")
    )
