"""Each subscription's MRR as day ranges of constant, positive value: the steps of docs/mrr.md sections 2-5 in the
order they apply, one call each in `subscription_mrr_intervals`.

Exact values: a subscription's MRR is kept as an Int128 `mrr_atoms` over `atoms_per_unit` atoms per major unit
— one denominator for the whole run, the least common multiple of every normalization (12 × interval_count ×
10^currency exponent × decimal digits of the amount) and coupon fraction in play — so monthly normalization,
percentages and sums never round. Rounding happens later, once, in `daily.py`.

Vectorized: values change only at change points (an item, discount, status block, counting window or snapshot
starting or ending), so segments are built from change points with cumulative sums, never subscriptions × days.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import discounts, events, history, lifecycle, money, pricing, snapshots
from segflow_pipeline.transform.days import FAR, SOURCE_RANK, SOURCES
from segflow_pipeline.transform.inputs import MrrInputs, as_of_utc, conform_inputs

# subscription_mrr_intervals: one row per subscription and day range with constant, positive MRR.
# valid_to is exclusive, null = still so. `mrr` is for reading (12 decimals); sums use mrr_atoms.
INTERVAL_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "subscription": pl.Utf8(),
    "customer": pl.Utf8(),
    "currency": pl.Utf8(),
    "valid_from": pl.Date(),
    "valid_to": pl.Date(),
    "mrr": pl.Decimal(38, 12),
    "mrr_atoms": pl.Int128(),
    "atoms_per_unit": pl.Int128(),
    "source": pl.Utf8(),  # lifecycle | invoice | event | snapshot: which rule of section 5 dated valid_from
}

# Denominators beyond this would let Int128 numerators overflow for large accounts.
MAX_ATOMS_PER_UNIT = 2**72

KEYS = ["integration", "subscription"]


def subscription_mrr_intervals(
    inputs: MrrInputs, options: MrrOptions = MrrOptions(), as_of: dt.datetime | None = None
) -> pl.DataFrame:
    """Each subscription's MRR as day ranges of constant, positive value (INTERVAL_SCHEMA), from the current
    state rebuilt back in time (section 5); a range covers day D when valid_from <= D < valid_to. Changes after
    `as_of` (default: now, UTC) have not happened yet. Rows `unusable_rows` reports are left out."""
    as_of = as_of_utc(as_of)
    t = conform_inputs(inputs)
    parsed = events.parse_subscription_events(t.events)
    eras = events.era_starts(t.events)
    # 1. when each subscription counts at all (section 2)
    subs = lifecycle.subscription_table(t, parsed, options, as_of).filter(pl.col("problem").is_null())
    counting = subs.filter(pl.col("count_from").is_not_null() & (pl.col("count_from") < pl.col("count_to")))
    # 2. which items it had on which days (section 5), and what each was worth per billing period (section 3)
    rows = _priced_item_rows(t, counting, parsed, eras, as_of)
    # 3. the discounts that apply (section 4)
    item_disc, sub_disc = _discounts(t, subs, rows, options, as_of)
    # 4. the pipeline's own snapshots of earlier days (section 5, rule 1)
    snap = snapshots.snapshot_exact(t.snapshots).filter(pl.col("date") < as_of.date())
    # 5. one exact denominator, item values on it, item discounts applied
    unit = _atoms_per_unit(rows, item_disc, sub_disc, snap)
    unit_lit = pl.lit(unit, pl.Int128)
    rows = discounts.apply_item_discounts(_item_atoms(rows, unit_lit), item_disc)
    # 6. per subscription: segments between change points, minus status blocks and snapshot-covered days
    blocks = events.status_blocks(parsed, eras, as_of).join(counting.select(KEYS), on=KEYS, how="semi")
    cover = snapshots.snapshot_cover(snap)
    segments = _segments(rows, counting, sub_disc, blocks, cover)
    segments = _drop_covered(segments, blocks, KEYS)
    segments = _drop_covered(segments, cover, ["integration"])
    # 7. subscription discounts on each segment's item total
    segments = discounts.apply_subscription_discounts(segments, sub_disc, rows, unit_lit)
    # 8. the snapshots' own values where they cover the days; equal neighbours merged
    return _intervals(segments, counting, snapshots.snapshot_runs(snap, unit), unit_lit)


def _priced_item_rows(t: MrrInputs, counting: pl.DataFrame, parsed: pl.DataFrame, eras: pl.DataFrame,
                      as_of: dt.datetime) -> pl.DataFrame:
    """Item rows (history.item_rows) of counting subscriptions with a usable price in their currency and a
    non-negative quantity, with `amount` per billing period (10^-digits minor units), `month_num`, `den` and
    `period_den` (section 3: monthly value = amount × month_num / den)."""
    prices = pricing.price_table(t.prices, t.price_tiers)
    usable_prices = prices.filter(pl.col("problem").is_null())
    rows = history.item_rows(counting, t.subscription_items, parsed, eras, t.invoice_lines, as_of,
                             invoice_items=t.invoice_items,
                             metered=prices.filter(pl.col("metered")).select("integration", "price"))
    rows = (
        rows.join(counting.select(*KEYS, "currency", "exponent"), on=KEYS, how="inner")
        .join(usable_prices.select("integration", "price", "price_currency", "month_num", "interval_count"),
              on=["integration", "price"], how="inner")
        .filter((pl.col("price_currency") == pl.col("currency")) & (pl.col("quantity") >= 0))
    )
    amounts = pricing.period_amounts(
        rows.select("integration", "price", "quantity").unique(), usable_prices, pricing.tier_table(t.price_tiers)
    )
    return rows.join(amounts, on=["integration", "price", "quantity"], how="inner").with_columns(
        # section 3: monthly value = amount × month_num / (12 × interval_count), amount in 10^-digits minor
        # units of a currency with `exponent` minor digits
        (12 * pl.col("interval_count").cast(pl.Int128)
         * pl.col("exponent").replace_strict({0: 1, 2: 100, 3: 1000}, return_dtype=pl.Int128)).alias("period_den"),
    ).with_columns(
        (pl.col("period_den")
         * pl.col("digits").replace_strict({d: 10**d for d in range(13)}, return_dtype=pl.Int128)).alias("den")
    )


def _discounts(t: MrrInputs, subs: pl.DataFrame, rows: pl.DataFrame, options: MrrOptions,
               as_of: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(item discounts of the priced items, subscription discounts); an amount_off only in its own currency."""
    coupons = pricing.coupon_table(t.coupons)
    item_disc, sub_disc = discounts.discount_table(t, subs, coupons, options, as_of)
    item_disc = item_disc.join(
        rows.select("integration", "item", "currency").unique(), on=["integration", "item"], how="inner"
    ).filter((pl.col("amount_off") == 0) | (pl.col("coupon_currency") == pl.col("currency"))).drop(
        "coupon_currency", "currency"
    )
    return item_disc, sub_disc


def _atoms_per_unit(rows: pl.DataFrame, item_disc: pl.DataFrame, sub_disc: pl.DataFrame,
                    snap: pl.DataFrame) -> int:
    """One denominator for the run: every item denominator, times every product of coupon denominators that
    can apply at once (item-level, then subscription-level), and every snapshot denominator."""
    unit = _lcm_column(rows, "den")
    unit *= _lcm_column(item_disc.group_by("integration", "item").agg(pl.col("pden").product().alias("p")), "p")
    unit *= _lcm_column(sub_disc.group_by(*KEYS).agg(pl.col("pden").product().alias("p")), "p")
    unit = money.lcm_of([unit, *snap.get_column("den").unique().to_list()])
    if unit > MAX_ATOMS_PER_UNIT:
        raise ValueError(
            f"exact MRR needs {unit.bit_length()}-bit denominators (coupon percentages or fractional prices with "
            "too many digits); check coupons.percent_off and prices.unit_amount_decimal"
        )
    return unit


def _lcm_column(frame: pl.DataFrame, column: str) -> int:
    return money.lcm_of(frame.get_column(column).unique().to_list()) if frame.height else 1


def _item_atoms(rows: pl.DataFrame, unit: pl.Expr) -> pl.DataFrame:
    """Each item row's monthly value in atoms, what one minor unit off per period is in atoms, and the trust
    rank of what dated the row."""
    return rows.with_columns(
        (pl.col("amount") * pl.col("month_num").cast(pl.Int128) * (unit // pl.col("den"))).alias("atoms"),
        (pl.col("month_num").cast(pl.Int128) * (unit // pl.col("period_den"))).alias("atoms_per_minor_off"),
        pl.col("source").replace_strict(SOURCE_RANK, return_dtype=pl.Int64).alias("rank"),
    )


def _segments(rows: pl.DataFrame, counting: pl.DataFrame, sub_disc: pl.DataFrame, blocks: pl.DataFrame,
              cover: pl.DataFrame) -> pl.DataFrame:
    """Per subscription, the day ranges between change points inside its counting window, with the summed item
    atoms and the highest trust rank of what dated the change (integration, subscription, from_day, to_day,
    atoms, rank). Change points: item values start/stop, discounts and status blocks start/stop, the counting
    window and snapshot coverage."""
    event_rank = SOURCE_RANK["event"]
    points = pl.concat(
        [
            rows.select(*KEYS, pl.col("from_day").alias("day"), pl.col("atoms").alias("delta"), "rank"),
            rows.filter(pl.col("to_day") < FAR).select(
                *KEYS, pl.col("to_day").alias("day"), (pl.lit(0, pl.Int128) - pl.col("atoms")).alias("delta"), "rank"
            ),
            *[
                frame.select(*KEYS, pl.col(col).alias("day"), pl.lit(0, pl.Int128).alias("delta"),
                             pl.lit(rank, pl.Int64).alias("rank"))
                for frame, col, rank in (
                    (counting, "count_from", 0), (counting.filter(pl.col("count_to") < FAR), "count_to", 0),
                    (sub_disc, "from_day", 0), (sub_disc.filter(pl.col("to_day") < FAR), "to_day", 0),
                    (blocks, "from_day", event_rank), (blocks.filter(pl.col("to_day") < FAR), "to_day", event_rank),
                )
            ],
            *[
                cover.join(counting.select(KEYS), on="integration", how="inner").select(
                    *KEYS, pl.col(col).alias("day"), pl.lit(0, pl.Int128).alias("delta"),
                    # after the covered days the computed value is back: it is dated by what computed it
                    pl.lit(SOURCE_RANK["snapshot"] if col == "from_day" else 0, pl.Int64).alias("rank"),
                )
                for col in ("from_day", "to_day")
            ],
        ],
        how="vertical_relaxed",
    )
    return (
        points.group_by(*KEYS, "day")
        .agg(pl.col("delta").sum(), pl.col("rank").max())
        .sort(*KEYS, "day")
        .with_columns(
            pl.col("delta").cum_sum().over(KEYS, order_by="day").alias("atoms"),
            pl.col("day").shift(-1).over(KEYS, order_by="day").fill_null(FAR).alias("to_day"),
        )
        .rename({"day": "from_day"})
        .join(counting.select(*KEYS, "count_from", "count_to"), on=KEYS, how="inner")
        .filter((pl.col("from_day") >= pl.col("count_from")) & (pl.col("from_day") < pl.col("count_to")))
        .drop("count_from", "count_to", "delta")
    )


def _drop_covered(segments: pl.DataFrame, ranges: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Segments whose first day lies in none of `ranges` (keys, from_day, to_day)."""
    if ranges.height == 0:
        return segments
    hit = (
        segments.select("integration", "subscription", pl.col("from_day").alias("day"))
        .join(ranges.select(*keys, "from_day", "to_day"), on=keys, how="inner")
        .filter((pl.col("from_day") <= pl.col("day")) & (pl.col("day") < pl.col("to_day")))
        .select("integration", "subscription", pl.col("day").alias("from_day"))
        .unique()
    )
    return segments.join(hit, on=["integration", "subscription", "from_day"], how="anti")


def _intervals(segments: pl.DataFrame, counting: pl.DataFrame, snapshot_runs: pl.DataFrame,
               unit: pl.Expr) -> pl.DataFrame:
    """Computed segments and snapshot runs as INTERVAL_SCHEMA rows: equal neighbours merged, zero values dropped."""
    computed = segments.join(counting.select(*KEYS, "customer", "currency"), on=KEYS, how="inner")
    recorded = snapshot_runs.with_columns(pl.lit(SOURCE_RANK["snapshot"], pl.Int64).alias("rank"))
    columns = [*KEYS, "customer", "currency", "from_day", "to_day", "atoms", "rank"]
    merged = _merge_equal_neighbours(
        pl.concat([computed.select(columns), recorded.select(columns)], how="vertical_relaxed")
    ).filter(pl.col("atoms") > 0)
    return merged.select(
        "integration", "subscription", "customer", "currency",
        pl.col("from_day").alias("valid_from"),
        pl.when(pl.col("to_day") < FAR).then(pl.col("to_day")).otherwise(pl.lit(None, pl.Date)).alias("valid_to"),
        money.atoms_to_decimal(pl.col("atoms"), unit).alias("mrr"),
        pl.col("atoms").alias("mrr_atoms"),
        unit.alias("atoms_per_unit"),
        pl.col("rank").replace_strict(dict(enumerate(SOURCES)), return_dtype=pl.Utf8).alias("source"),
    ).sort("integration", "subscription", "valid_from").cast(INTERVAL_SCHEMA)


def _merge_equal_neighbours(frame: pl.DataFrame) -> pl.DataFrame:
    """Joins adjacent day ranges of one subscription with the same value; keeps the first one's source."""
    keys = ["integration", "subscription"]
    frame = frame.sort(*keys, "from_day")
    starts = (
        (pl.col("atoms") != pl.col("atoms").shift(1).over(keys, order_by="from_day"))
        | (pl.col("from_day") != pl.col("to_day").shift(1).over(keys, order_by="from_day"))
    ).fill_null(True)
    return (
        frame.with_columns(starts.cast(pl.Int64).alias("__start"))
        .with_columns(pl.col("__start").cum_sum().over(keys, order_by="from_day").alias("__run"))
        .group_by(*keys, "__run")
        .agg(
            pl.col("customer").first(), pl.col("currency").first(),
            pl.col("from_day").min(), pl.col("to_day").max(),
            pl.col("atoms").first(),
            pl.col("rank").sort_by("from_day").first(),
        )
        .drop("__run")
    )
