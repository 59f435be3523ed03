"""Input rows the MRR transform leaves out, one reason each (also what `stripe.quarantine` holds).

The same rules decide, inside the transform, which subscriptions, items, prices and coupons are used: a bad row
is reported here and skipped there, never fails the run.
"""

from __future__ import annotations

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import events, pricing
from segflow_pipeline.transform.inputs import MrrInputs, as_of_utc, conform_inputs
from segflow_pipeline.transform.lifecycle import subscription_table

# unusable_rows: input rows the transform leaves out, one reason each (also what `stripe.quarantine` holds).
UNUSABLE_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "object_type": pl.Utf8(),
    "object_id": pl.Utf8(),
    "reason": pl.Utf8(),
}


def unusable_rows(inputs: MrrInputs) -> pl.DataFrame:
    """Input rows the transform cannot use and leaves out, one reason each (UNUSABLE_SCHEMA): subscriptions
    with an unknown status or currency, items whose price is missing, one-time, in another currency or with
    a negative quantity, prices and coupons with impossible amounts. Metered items are not listed: they are
    valid and worth 0 (section 3)."""
    t = conform_inputs(inputs)
    subs = subscription_table(t, events.parse_subscription_events(t.events), MrrOptions(), as_of_utc(None))
    prices = pricing.price_table(t.prices, t.price_tiers)
    coupons = pricing.coupon_table(t.coupons)
    bad_subs = subs.filter(pl.col("problem").is_not_null()).select(
        "integration", pl.lit("subscription").alias("object_type"), pl.col("subscription").alias("object_id"),
        pl.col("problem").alias("reason"),
    )
    bad_prices = prices.filter(pl.col("problem").is_not_null()).select(
        "integration", pl.lit("price").alias("object_type"), pl.col("price").alias("object_id"),
        pl.col("problem").alias("reason"),
    )
    # items of a subscription that is itself reported are not listed again
    items = t.subscription_items.join(
        subs.filter(pl.col("problem").is_not_null()).select("integration", "subscription"),
        on=["integration", "subscription"], how="anti",
    ).join(
        subs.select("integration", pl.col("subscription"), "currency"), on=["integration", "subscription"], how="left"
    ).join(
        prices.select("integration", pl.col("price"), "price_currency", pl.col("problem").alias("price_problem")),
        on=["integration", "price"], how="left",
    )
    item_reason = (
        pl.when(pl.col("currency").is_null()).then(pl.lit("item of an unknown subscription"))
        .when(pl.col("price").is_null() | pl.col("price_currency").is_null() & pl.col("price_problem").is_null())
        .then(pl.lit("price not found (sync prices, including archived ones)"))
        .when(pl.col("price_problem").is_not_null()).then(pl.lit("unusable price: ") + pl.col("price_problem"))
        .when(pl.col("price_currency") != pl.col("currency")).then(pl.lit("price currency differs from subscription"))
        .when(pl.col("quantity") < 0).then(pl.lit("negative quantity"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    bad_items = items.with_columns(item_reason.alias("reason")).filter(pl.col("reason").is_not_null()).select(
        "integration", pl.lit("subscription_item").alias("object_type"), pl.col("id").alias("object_id"), "reason"
    )
    bad_coupons = coupons.filter(pl.col("problem").is_not_null()).select(
        "integration", pl.lit("coupon").alias("object_type"), pl.col("coupon").alias("object_id"),
        pl.col("problem").alias("reason"),
    )
    bad_discounts = t.discounts.join(coupons.select("integration", "coupon"), on=["integration", "coupon"],
                                     how="anti").select(
        "integration", pl.lit("discount").alias("object_type"), pl.col("id").alias("object_id"),
        pl.lit("coupon not found").alias("reason"),
    )
    known = prices.select("integration", "price")
    bad_lines = (
        t.invoice_lines.filter((pl.col("type") == "subscription") & pl.col("price").is_not_null())
        .join(known, on=["integration", "price"], how="anti")
        .select("integration", pl.lit("invoice_line").alias("object_type"), pl.col("id").alias("object_id"),
                pl.lit("price not found: the line cannot date a past price").alias("reason"))
    )
    return (
        pl.concat([bad_subs, bad_prices, bad_items, bad_coupons, bad_discounts, bad_lines], how="vertical_relaxed")
        .unique()
        .sort("integration", "object_type", "object_id")
        .cast(UNUSABLE_SCHEMA)
    )
