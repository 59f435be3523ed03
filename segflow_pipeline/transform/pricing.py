"""What one subscription item and one coupon are worth per billing period (docs/mrr.md sections 3 and 4).

Belongs here: reading `stripe.prices` / `stripe.price_tiers` / `stripe.coupons` into exact integer amounts per
billing period and monthly factors, and saying which of those rows cannot be used and why. Not here: which
item a subscription had on which day (`history.py`) or the discounts applied (`discounts.py`).

Exactness: an item's monthly value is `amount × factor_num / factor_den` with
`amount` an integer in 10^-digits minor units and `factor_num / factor_den` the month factor of section 3
(month 12/(12n), year 1/(12n), week 52/(12n), day 365/(12n)); `intervals.py` brings every such fraction onto one
common denominator, so nothing is rounded here.
"""

from __future__ import annotations

import polars as pl

from segflow_pipeline.transform import currency, money

# Monthly factor = MONTH_NUMERATOR[interval] / (12 × interval_count)  (docs/mrr.md section 3 table).
MONTH_NUMERATOR: dict[str, int] = {"month": 12, "year": 1, "week": 52, "day": 365}
BILLING_SCHEMES = ("per_unit", "tiered")
TIERS_MODES = ("volume", "graduated")
COUPON_DURATIONS = ("forever", "once", "repeating")


def tier_table(price_tiers: pl.DataFrame) -> pl.DataFrame:
    """Tiers with their lower bound (`lower`, the previous tier's up_to) and amounts in 10⁻¹² minor units.

    Stripe lists tiers lowest first; `up_to` null is the last, unbounded tier.
    """
    return (
        price_tiers.sort("integration", "price", "tier_index")
        .with_columns(
            money.pico_amount("unit_amount_decimal", "unit_amount").fill_null(0).alias("tier_unit"),
            money.pico_amount("flat_amount_decimal", "flat_amount").fill_null(0).alias("tier_flat"),
            pl.col("up_to")
            .shift(1)
            .over(["integration", "price"], order_by="tier_index")
            .fill_null(0)
            .alias("lower"),
        )
        .select("integration", "price", "tier_index", "lower", "up_to", "tier_unit", "tier_flat")
    )


def price_table(prices: pl.DataFrame, price_tiers: pl.DataFrame) -> pl.DataFrame:
    """One row per price: what pricing needs, plus `problem` (null when usable).

    Columns: integration, price, price_currency, scheme, tiers_mode, unit_pico, month_num, interval_count,
    metered, divide_by, round_up, problem.
    """
    tiers = tier_table(price_tiers)
    tier_stats = tiers.group_by("integration", "price").agg(
        pl.len().alias("tier_count"),
        ((pl.col("tier_unit") < 0) | (pl.col("tier_flat") < 0)).any().alias("tier_negative"),
    )
    table = (
        prices.select(
            "integration",
            pl.col("id").alias("price"),
            pl.col("currency").str.to_lowercase().alias("price_currency"),
            pl.col("billing_scheme").fill_null("per_unit").alias("scheme"),
            "tiers_mode",
            money.pico_amount("unit_amount_decimal", "unit_amount").alias("unit_pico"),
            pl.col("recurring_interval").alias("interval"),
            pl.col("recurring_interval_count").fill_null(1).alias("interval_count"),
            (pl.col("recurring_usage_type") == "metered").fill_null(False).alias("metered"),
            pl.col("transform_quantity_divide_by").alias("divide_by"),
            (pl.col("transform_quantity_round") == "up").fill_null(False).alias("round_up"),
            "type",
        )
        .join(tier_stats, on=["integration", "price"], how="left")
        .with_columns(
            pl.col("interval").replace_strict(MONTH_NUMERATOR, default=None, return_dtype=pl.Int64).alias("month_num")
        )
    )
    tiered = pl.col("scheme") == "tiered"
    problem = (
        pl.when(pl.col("interval").is_null() | (pl.col("type") == "one_time"))
        .then(pl.lit("one-time price (no recurring interval) on a subscription item"))
        .when(pl.col("month_num").is_null())
        .then(pl.lit("unknown recurring interval"))
        .when(pl.col("interval_count") < 1)
        .then(pl.lit("recurring interval_count below 1"))
        .when(~currency.is_known_expr(pl.col("price_currency")))
        .then(pl.lit("unknown currency"))
        .when(~pl.col("scheme").is_in(list(BILLING_SCHEMES)))
        .then(pl.lit("unknown billing_scheme"))
        .when(pl.col("metered"))
        .then(pl.lit(None, pl.Utf8))  # usage-based: contributes 0 whatever its amounts (section 3)
        .when(~tiered & pl.col("unit_pico").is_null())
        .then(pl.lit("per-unit price without unit_amount"))
        .when(~tiered & (pl.col("unit_pico") < 0))
        .then(pl.lit("negative unit_amount"))
        .when(tiered & ~pl.col("tiers_mode").is_in(list(TIERS_MODES)).fill_null(False))
        .then(pl.lit("tiered price with unknown tiers_mode"))
        .when(tiered & pl.col("tier_count").is_null())
        .then(pl.lit("tiered price without tiers (fetch prices with expand[]=data.tiers)"))
        .when(tiered & pl.col("tier_negative").fill_null(False))
        .then(pl.lit("negative tier amount"))
        .when(pl.col("divide_by").is_not_null() & (pl.col("divide_by") < 1))
        .then(pl.lit("transform_quantity.divide_by below 1"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    return table.with_columns(problem.alias("problem")).drop("type", "tier_count", "tier_negative")


def period_amounts(pairs: pl.DataFrame, prices: pl.DataFrame, tiers: pl.DataFrame) -> pl.DataFrame:
    """Amount per billing period of each distinct (integration, price, quantity), exact.

    `pairs` holds integration, price, quantity; `prices` is `price_table(...)` filtered to usable rows; `tiers`
    is `tier_table(...)`. Returns the pairs with `amount` (Int128) in units of 10^-digits minor units and
    `digits` (0..12), metered prices giving 0.
    """
    base = pairs.join(prices, on=["integration", "price"], how="inner").with_columns(
        # transform_quantity: Stripe divides the quantity and rounds up or down before pricing
        # (https://docs.stripe.com/products-prices/pricing-models#transform-quantities).
        pl.when(pl.col("divide_by").is_not_null())
        .then(
            pl.when(pl.col("round_up"))
            .then((pl.col("quantity") + pl.col("divide_by") - 1) // pl.col("divide_by"))
            .otherwise(pl.col("quantity") // pl.col("divide_by"))
        )
        .otherwise(pl.col("quantity"))
        .cast(pl.Int128)
        .alias("billed_quantity")
    )
    per_unit = base.filter(pl.col("scheme") == "per_unit").with_columns(
        (pl.col("unit_pico") * pl.col("billed_quantity")).alias("pico")
    )
    tiered_rows = (
        base.filter(pl.col("scheme") == "tiered")
        .select("integration", "price", "quantity", "billed_quantity", "tiers_mode")
        .join(tiers, on=["integration", "price"], how="inner")
    )
    q = pl.col("billed_quantity")
    upper = pl.col("up_to").cast(pl.Int128)
    # graduated: every tier prices the units that fall inside it, plus its flat fee once reached.
    in_tier = pl.max_horizontal(
        pl.lit(0, pl.Int128), pl.min_horizontal(q, upper.fill_null(q)) - pl.col("lower").cast(pl.Int128)
    )
    graduated = in_tier * pl.col("tier_unit") + pl.when(in_tier > 0).then(pl.col("tier_flat")).otherwise(0)
    # volume: all units at the one tier the quantity falls in, plus that tier's flat fee.
    falls_in = (q > pl.col("lower")) & (upper.is_null() | (q <= upper))
    volume = pl.when(falls_in).then(q * pl.col("tier_unit") + pl.col("tier_flat")).otherwise(0)
    tiered = tiered_rows.group_by("integration", "price", "quantity").agg(
        pl.when(pl.col("tiers_mode") == "graduated").then(graduated).otherwise(volume).sum().cast(pl.Int128)
        .alias("pico")
    )
    amounts = pl.concat(
        [per_unit.select("integration", "price", "quantity", "pico"), tiered.select("integration", "price", "quantity", "pico")],
        how="vertical",
    )
    out = (
        pairs.join(base.select("integration", "price", "quantity", "metered"), on=["integration", "price", "quantity"], how="inner")
        .join(amounts, on=["integration", "price", "quantity"], how="left")
        .with_columns(
            pl.when(pl.col("metered") | (pl.col("quantity") <= 0)).then(pl.lit(0, pl.Int128))
            .otherwise(pl.col("pico").fill_null(0))
            .alias("pico")
        )
        .with_columns(money.fraction_digits(pl.col("pico")).alias("digits"))
        .with_columns(
            (pl.col("pico") // pl.col("digits").replace_strict({d: 10 ** (12 - d) for d in range(13)},
                                                                 return_dtype=pl.Int128)).alias("amount")
        )
    )
    return out.select("integration", "price", "quantity", "amount", "digits")


def coupon_table(coupons: pl.DataFrame) -> pl.DataFrame:
    """Coupons as exact factors: keep = pct_num / pct_den of the amount (1/1 without percent_off),
    `amount_off` in minor units of `coupon_currency`, and `problem` (null when usable)."""
    pct_pico = pl.col("percent_off").cast(pl.Decimal(38, 12)).to_physical().cast(pl.Int128)
    table = coupons.select(
        "integration",
        pl.col("id").alias("coupon"),
        "duration",
        pl.col("currency").str.to_lowercase().alias("coupon_currency"),
        pl.col("amount_off").cast(pl.Int128).alias("amount_off"),
        pl.when(pct_pico.is_not_null()).then(100 * money.PICO - pct_pico).otherwise(1).cast(pl.Int128).alias("pnum"),
        pl.when(pct_pico.is_not_null()).then(pl.lit(100 * money.PICO, pl.Int128)).otherwise(1).cast(pl.Int128)
        .alias("pden"),
        pct_pico.alias("pct_pico"),
    )
    problem = (
        pl.when(pl.col("pct_pico").is_null() & pl.col("amount_off").is_null())
        .then(pl.lit("coupon without percent_off or amount_off"))
        .when((pl.col("pct_pico") <= 0) | (pl.col("pct_pico") > 100 * money.PICO))
        .then(pl.lit("percent_off outside (0, 100]"))
        .when(pl.col("amount_off") < 0)
        .then(pl.lit("negative amount_off"))
        .when(pl.col("amount_off").is_not_null() & ~currency.is_known_expr(pl.col("coupon_currency")))
        .then(pl.lit("amount_off coupon with unknown currency"))
        .when(~pl.col("duration").is_in(list(COUPON_DURATIONS)).fill_null(False))
        .then(pl.lit("unknown coupon duration"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    table = money.gcd_columns(table.with_columns(problem.alias("problem")), "pnum", "pden", "g")
    return table.with_columns(
        (pl.col("pnum") // pl.col("g")).alias("pnum"),
        (pl.col("pden") // pl.col("g")).alias("pden"),
        pl.col("amount_off").fill_null(0),
    ).drop("g", "pct_pico")
