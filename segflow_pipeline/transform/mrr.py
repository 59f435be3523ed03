"""Daily MRR per integration × currency with its movements, and the predicates that check it (docs/mrr.md).

Belongs here: the public MRR transform the `metrics` assets call — `subscription_mrr_intervals` (each
subscription's MRR as day ranges), `daily_mrr` (the published `metrics.mrr_daily`), `snapshot_rows` (what a run
records in `metrics.mrr_snapshots`), `unusable_rows` (input rows left out, with the reason) and the invariant
predicates `movement_breaks`, `gap_rows`, which return offending rows (empty = fine). Today's value is checked
against the current objects by `live.py`, which shares no code with the history rebuild.
Not here: Dagster, DuckDB or any I/O; pricing rules (`pricing.py`), rebuilding the past (`history.py`),
exact arithmetic (`money.py`), currency exponents (`currency.py`).

Exact values: a subscription's MRR is kept as an Int128 `mrr_atoms` over `atoms_per_unit` atoms per major unit
— one denominator for the whole run, the least common multiple of every normalization (12 × interval_count ×
10^currency exponent × decimal digits of the amount) and coupon fraction in play — so monthly
normalization, percentages and sums never round. The only rounding is docs/mrr.md section 1: each customer's
MRR per day, half-up to 0.01 major units; every sum, count and movement is computed from those cents.

Vectorized: values change only at change points, so everything is computed on change points with cumulative
sums (never subscriptions × days); only the final per-currency series is expanded to one row per day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.stripe_api.tables import TABLES
from segflow_pipeline.transform import currency, history, money, pricing
from segflow_pipeline.transform.history import FAR, MIN, SOURCE_RANK, SOURCES

SUBSCRIPTION_STATUSES = (
    "active", "past_due", "trialing", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused",
)
NEVER_COUNTING = ("incomplete", "incomplete_expired")

# metrics.mrr_snapshots: what a run records per subscription for today, read back by later runs (section 5,
# rule 1). `mrr` is the subscription's MRR rounded half-up to 0.01 for people reading the table; the exact
# value is mrr_num / mrr_den (DECIMAL(38,0) integers), which is what later runs use.
SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "date": pl.Date(),
    "subscription": pl.Utf8(),
    "customer": pl.Utf8(),
    "currency": pl.Utf8(),
    "mrr": pl.Decimal(18, 2),
    "mrr_num": pl.Decimal(38, 0),
    "mrr_den": pl.Decimal(38, 0),
}

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

MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")

# metrics.mrr_daily (docs/tables.md), in this column order.
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "date": pl.Date(),
    "currency": pl.Utf8(),
    "mrr": pl.Decimal(18, 2),
    "arr": pl.Decimal(18, 2),
    "active_subscriptions": pl.Int32(),
    "paying_customers": pl.Int32(),
    **{name: pl.Decimal(18, 2) for name in MOVEMENTS},
}

# metrics.mrr_customer_movements: one row per customer, currency and day its (rounded) MRR changed.
CUSTOMER_MOVEMENT_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8, "currency": pl.Utf8, "customer": pl.Utf8, "date": pl.Date,
    "previous_mrr": pl.Decimal(18, 2), "mrr": pl.Decimal(18, 2),
    "movement": pl.Utf8,  # new | expansion | reactivation | contraction | churned
    "amount": pl.Decimal(18, 2),  # positive, as in metrics.mrr_daily
}

# unusable_rows: input rows the transform leaves out, one reason each (also what `stripe.quarantine` holds).
UNUSABLE_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "object_type": pl.Utf8(),
    "object_id": pl.Utf8(),
    "reason": pl.Utf8(),
}

# Denominators beyond this would let Int128 numerators overflow for large accounts.
MAX_ATOMS_PER_UNIT = 2**72


@dataclass(frozen=True)
class MrrInputs:
    """The `stripe.*` tables the transform reads (columns per `stripe_api/tables.py`), plus the snapshots
    earlier runs recorded (SNAPSHOT_SCHEMA, may be empty). `invoices` is optional: when given, the unpaid
    fallback (section 2) only trusts lines of paid invoices."""

    subscriptions: pl.DataFrame
    subscription_items: pl.DataFrame
    prices: pl.DataFrame
    price_tiers: pl.DataFrame
    coupons: pl.DataFrame
    discounts: pl.DataFrame
    customers: pl.DataFrame
    invoice_lines: pl.DataFrame
    events: pl.DataFrame
    snapshots: pl.DataFrame
    invoices: pl.DataFrame | None = None
    invoice_items: pl.DataFrame | None = None  # pending invoice items (prorations not invoiced yet)


# --- inputs ------------------------------------------------------------------------------------------------------


def _polars_schema(table: str) -> dict[str, pl.DataType]:
    return dict(pl.from_arrow(TABLES[table].empty_table()).schema)


def _conform(frame: pl.DataFrame | None, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The frame with exactly `schema`'s columns and types; missing columns are null, casts are lenient."""
    if frame is None:
        return pl.DataFrame(schema=schema)
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    return frame.with_columns(missing).select(
        [pl.col(name).cast(dtype, strict=False) for name, dtype in schema.items()]
    )


def _tables(inputs: MrrInputs) -> MrrInputs:
    """The inputs with exactly the columns and types the transform reads (missing columns null)."""
    conformed = {}
    for f in fields(MrrInputs):
        frame = getattr(inputs, f.name)
        if f.name == "snapshots":
            conformed[f.name] = _conform_snapshots(frame)
        elif f.name == "invoices":
            conformed[f.name] = None if frame is None else _conform(frame, _polars_schema("invoices"))
        elif f.name == "invoice_items":
            conformed[f.name] = _conform(frame, _polars_schema("invoice_items"))
        else:
            conformed[f.name] = _conform(frame, _polars_schema(f.name))
    return MrrInputs(**conformed)


def _conform_snapshots(frame: pl.DataFrame | None) -> pl.DataFrame:
    if frame is None or frame.height == 0:
        return pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    keep_mrr = frame.schema.get("mrr") if "mrr" in frame.columns else None
    schema = {**SNAPSHOT_SCHEMA}
    if isinstance(keep_mrr, pl.Decimal):
        schema["mrr"] = keep_mrr  # the recorded scale is the exact value when mrr_num/mrr_den are absent
    return _conform(frame, schema)


def _as_of(as_of: dt.datetime | None) -> dt.datetime:
    """The run's moment as naive UTC (the raw tables hold naive UTC timestamps)."""
    if as_of is None:
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if as_of.tzinfo is not None:
        return as_of.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return as_of


# --- subscriptions: when each one counts (section 2) -------------------------------------------------------------


def _subscription_table(t: MrrInputs, parsed: pl.DataFrame, options: MrrOptions, as_of: dt.datetime) -> pl.DataFrame:
    """One row per subscription: customer, currency, exponent, the day range it may count in
    (count_from .. count_to, exclusive; count_from null = never) and `problem` (null when usable)."""
    times = history.lifecycle_event_times(parsed)
    paid = history.last_paid_period_end(t.invoice_lines, t.invoices)
    keys = ["integration", "subscription"]
    subs = (
        t.subscriptions.select(
            "integration",
            pl.col("id").alias("subscription"),
            "customer",
            "status",
            pl.col("currency").str.to_lowercase().alias("currency"),
            pl.coalesce("start_date", "created").alias("start"),
            "trial_end", "cancel_at", "canceled_at", "ended_at",
            pl.col("cancel_at_period_end").fill_null(False).alias("cape"),
            "current_period_start", "current_period_end",
        )
        .join(times, on=keys, how="left")
        .join(paid, on=keys, how="left")
    )
    scheduled = pl.col("cape") | pl.col("cancel_at").is_not_null()
    if options.churn_recognition == "period_end":
        # option: a scheduled cancellation stops counting at cancel_at / the end of the period
        scheduled_stop = pl.coalesce("cancel_at", "current_period_end", "ended_at")
    else:
        # default (Stripe's dashboard): the moment cancellation was requested; without canceled_at, the event
        # that set it; else cancel_at
        scheduled_stop = pl.coalesce("canceled_at", "cancel_requested_event", "cancel_at", "ended_at")
    status = pl.col("status")
    stop = (
        pl.when(status == "canceled")
        .then(pl.when(scheduled).then(scheduled_stop).otherwise(pl.coalesce("ended_at", "canceled_at")))
        .when(status == "unpaid")
        # the event that moved it from active/past_due to unpaid; else the end of the last paid period
        .then(pl.coalesce("unpaid_event", "paid_until", "current_period_start"))
        .when(status == "paused")
        .then(pl.coalesce("paused_event", "trial_end", "current_period_start"))
        .when(scheduled)
        .then(scheduled_stop)
        .otherwise(pl.lit(None, pl.Datetime("us")))
    )
    # trialing does not count until trial_end, from then on as active
    count_from_ts = pl.when(pl.col("trial_end").is_not_null()).then(
        pl.max_horizontal("start", "trial_end")
    ).otherwise(pl.col("start"))
    never = status.is_in(list(NEVER_COUNTING)) | ((status == "trialing") & pl.col("trial_end").is_null())
    problem = (
        pl.when(pl.col("subscription").is_null()).then(pl.lit("subscription without id"))
        .when(pl.col("customer").is_null()).then(pl.lit("subscription without customer"))
        # a null status is unknown too (`~` binds tighter than the method call: negate first, then fill)
        .when((~status.is_in(list(SUBSCRIPTION_STATUSES))).fill_null(True)).then(pl.lit("unknown status"))
        .when(~currency.is_known_expr(pl.col("currency"))).then(pl.lit("unknown currency"))
        .when(pl.col("start").is_null()).then(pl.lit("subscription without start_date or created"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    return subs.with_columns(
        currency.exponent_expr(pl.col("currency")).alias("exponent"),
        pl.when(never).then(pl.lit(None, pl.Date)).otherwise(history.day_from(count_from_ts, as_of)).alias("count_from"),
        history.day_until(stop, as_of).alias("count_to"),
        problem.alias("problem"),
    ).select(*keys, "customer", "currency", "exponent", "count_from", "count_to", "problem", "current_period_start")


# --- discounts (section 4) ---------------------------------------------------------------------------------------


def _discount_table(t: MrrInputs, subs: pl.DataFrame, coupons: pl.DataFrame, options: MrrOptions,
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
            pl.when(pl.col("start").is_null()).then(pl.lit(MIN)).otherwise(history.day_from(pl.col("start"), as_of))
            .alias("from_day"),
            history.day_until(pl.col("end"), as_of).alias("to_day"),
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


def _lcm_column(frame: pl.DataFrame, column: str) -> int:
    return money.lcm_of(frame.get_column(column).unique().to_list()) if frame.height else 1


# --- the intervals -----------------------------------------------------------------------------------------------


def subscription_mrr_intervals(
    inputs: MrrInputs, options: MrrOptions = MrrOptions(), as_of: dt.datetime | None = None
) -> pl.DataFrame:
    """Each subscription's MRR as day ranges of constant, positive value (INTERVAL_SCHEMA), from the current
    state rebuilt back in time (section 5); a range covers day D when valid_from <= D < valid_to. Changes after
    `as_of` (default: now, UTC) have not happened yet. Rows `unusable_rows` reports are left out."""
    as_of = _as_of(as_of)
    t = _tables(inputs)
    keys = ["integration", "subscription"]

    parsed = history.parse_subscription_events(t.events)
    subs = _subscription_table(t, parsed, options, as_of).filter(pl.col("problem").is_null())
    counting = subs.filter(pl.col("count_from").is_not_null() & (pl.col("count_from") < pl.col("count_to")))
    eras = history.era_starts(t.events)
    prices = pricing.price_table(t.prices, t.price_tiers)
    usable_prices = prices.filter(pl.col("problem").is_null())
    rows = history.item_rows(counting, t.subscription_items, parsed, eras, t.invoice_lines, as_of,
                             invoice_items=t.invoice_items,
                             metered=prices.filter(pl.col("metered")).select("integration", "price"))

    rows = (
        rows.join(counting.select(*keys, "currency", "exponent"), on=keys, how="inner")
        .join(usable_prices.select("integration", "price", "price_currency", "month_num", "interval_count"),
              on=["integration", "price"], how="inner")
        .filter((pl.col("price_currency") == pl.col("currency")) & (pl.col("quantity") >= 0))
    )
    amounts = pricing.period_amounts(
        rows.select("integration", "price", "quantity").unique(), usable_prices, pricing.tier_table(t.price_tiers)
    )
    rows = rows.join(amounts, on=["integration", "price", "quantity"], how="inner").with_columns(
        # section 3: monthly value = amount × month_num / (12 × interval_count), amount in 10^-digits minor
        # units of a currency with `exponent` minor digits
        (12 * pl.col("interval_count").cast(pl.Int128)
         * pl.col("exponent").replace_strict({0: 1, 2: 100, 3: 1000}, return_dtype=pl.Int128)).alias("period_den"),
    ).with_columns(
        (pl.col("period_den")
         * pl.col("digits").replace_strict({d: 10**d for d in range(13)}, return_dtype=pl.Int128)).alias("den")
    )

    coupons = pricing.coupon_table(t.coupons)
    item_disc, sub_disc = _discount_table(t, subs, coupons, options, as_of)
    item_disc = item_disc.join(
        rows.select("integration", "item", "currency").unique(), on=["integration", "item"], how="inner"
    ).filter((pl.col("amount_off") == 0) | (pl.col("coupon_currency") == pl.col("currency"))).drop(
        "coupon_currency", "currency"
    )

    snap = history.snapshot_exact(t.snapshots).filter(pl.col("date") < as_of.date())

    # One denominator for the run: every item denominator, times every product of coupon denominators that
    # can apply at once (item-level, then subscription-level), and every snapshot denominator.
    unit = _lcm_column(rows, "den")
    unit *= _lcm_column(item_disc.group_by("integration", "item").agg(pl.col("pden").product().alias("p")), "p")
    unit *= _lcm_column(sub_disc.group_by(*keys).agg(pl.col("pden").product().alias("p")), "p")
    unit = money.lcm_of([unit, *snap.get_column("den").unique().to_list()])
    if unit > MAX_ATOMS_PER_UNIT:
        raise ValueError(
            f"exact MRR needs {unit.bit_length()}-bit denominators (coupon percentages or fractional prices with "
            "too many digits); check coupons.percent_off and prices.unit_amount_decimal"
        )
    unit_lit = pl.lit(unit, pl.Int128)

    rows = rows.with_columns(
        (pl.col("amount") * pl.col("month_num").cast(pl.Int128) * (unit_lit // pl.col("den"))).alias("atoms"),
        (pl.col("month_num").cast(pl.Int128) * (unit_lit // pl.col("period_den"))).alias("atoms_per_minor_off"),
        pl.col("source").replace_strict(SOURCE_RANK, return_dtype=pl.Int64).alias("rank"),
    )
    rows = _apply_item_discounts(rows, item_disc)

    # Change points per subscription: item values start/stop, discounts and status blocks start/stop,
    # the counting window and snapshot coverage; each carries the trust rank of what dated it.
    cover = history.snapshot_cover(snap)
    blocks = history.status_blocks(parsed, eras, as_of).join(counting.select(keys), on=keys, how="semi")
    event_rank = SOURCE_RANK["event"]
    points = pl.concat(
        [
            rows.select(*keys, pl.col("from_day").alias("day"), pl.col("atoms").alias("delta"), "rank"),
            rows.filter(pl.col("to_day") < FAR).select(
                *keys, pl.col("to_day").alias("day"), (pl.lit(0, pl.Int128) - pl.col("atoms")).alias("delta"), "rank"
            ),
            *[
                frame.select(*keys, pl.col(col).alias("day"), pl.lit(0, pl.Int128).alias("delta"),
                             pl.lit(rank, pl.Int64).alias("rank"))
                for frame, col, rank in (
                    (counting, "count_from", 0), (counting.filter(pl.col("count_to") < FAR), "count_to", 0),
                    (sub_disc, "from_day", 0), (sub_disc.filter(pl.col("to_day") < FAR), "to_day", 0),
                    (blocks, "from_day", event_rank), (blocks.filter(pl.col("to_day") < FAR), "to_day", event_rank),
                )
            ],
            *[
                cover.join(counting.select(keys), on="integration", how="inner").select(
                    *keys, pl.col(col).alias("day"), pl.lit(0, pl.Int128).alias("delta"),
                    # after the covered days the computed value is back: it is dated by what computed it
                    pl.lit(SOURCE_RANK["snapshot"] if col == "from_day" else 0, pl.Int64).alias("rank"),
                )
                for col in ("from_day", "to_day")
            ],
        ],
        how="vertical_relaxed",
    )
    segments = (
        points.group_by(*keys, "day")
        .agg(pl.col("delta").sum(), pl.col("rank").max())
        .sort(*keys, "day")
        .with_columns(
            pl.col("delta").cum_sum().over(keys, order_by="day").alias("atoms"),
            pl.col("day").shift(-1).over(keys, order_by="day").fill_null(FAR).alias("to_day"),
        )
        .rename({"day": "from_day"})
        .join(counting.select(*keys, "count_from", "count_to"), on=keys, how="inner")
        .filter((pl.col("from_day") >= pl.col("count_from")) & (pl.col("from_day") < pl.col("count_to")))
        .drop("count_from", "count_to", "delta")
    )
    segments = _drop_covered(segments, blocks, keys)
    segments = _drop_covered(segments, cover, ["integration"])
    segments = _apply_subscription_discounts(segments, sub_disc, rows, unit_lit)

    computed = segments.join(counting.select(*keys, "customer", "currency"), on=keys, how="inner")
    snapshot_rows_ = history.snapshot_runs(snap, unit).with_columns(
        pl.lit(SOURCE_RANK["snapshot"], pl.Int64).alias("rank")
    )
    columns = [*keys, "customer", "currency", "from_day", "to_day", "atoms", "rank"]
    merged = _merge_equal_neighbours(
        pl.concat([computed.select(columns), snapshot_rows_.select(columns)], how="vertical_relaxed")
    ).filter(pl.col("atoms") > 0)
    return merged.select(
        "integration", "subscription", "customer", "currency",
        pl.col("from_day").alias("valid_from"),
        pl.when(pl.col("to_day") < FAR).then(pl.col("to_day")).otherwise(pl.lit(None, pl.Date)).alias("valid_to"),
        money.atoms_to_decimal(pl.col("atoms"), unit_lit).alias("mrr"),
        pl.col("atoms").alias("mrr_atoms"),
        unit_lit.alias("atoms_per_unit"),
        pl.col("rank").replace_strict(dict(enumerate(SOURCES)), return_dtype=pl.Utf8).alias("source"),
    ).sort("integration", "subscription", "valid_from").cast(INTERVAL_SCHEMA)


def _apply_item_discounts(rows: pl.DataFrame, item_disc: pl.DataFrame) -> pl.DataFrame:
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


def _apply_subscription_discounts(segments: pl.DataFrame, sub_disc: pl.DataFrame, rows: pl.DataFrame,
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


# --- the daily series (sections 1 and 6) -------------------------------------------------------------------------


def _customer_changes(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """Per (integration, currency, customer) and day its MRR changed: rounded cents before/after and the
    movement amounts in cents."""
    end = today + dt.timedelta(days=1)
    iv = intervals.filter(pl.col("valid_from") <= today).with_columns(
        pl.min_horizontal(pl.col("valid_to").fill_null(end), pl.lit(end)).alias("to_day")
    )
    keys = ["integration", "currency", "customer"]
    deltas = pl.concat([
        iv.select(*keys, pl.col("valid_from").alias("date"), pl.col("mrr_atoms").alias("delta"), "atoms_per_unit"),
        iv.filter(pl.col("to_day") <= today).select(
            *keys, pl.col("to_day").alias("date"), (pl.lit(0, pl.Int128) - pl.col("mrr_atoms")).alias("delta"), "atoms_per_unit"
        ),
    ])
    changes = (
        deltas.group_by(*keys, "date")
        .agg(pl.col("delta").sum(), pl.col("atoms_per_unit").first())
        .sort(*keys, "date")
        .with_columns(pl.col("delta").cum_sum().over(keys, order_by="date").alias("atoms"))
        .with_columns(money.half_up_cents(pl.col("atoms"), pl.col("atoms_per_unit")).alias("cents"))
        .with_columns(
            pl.col("cents").shift(1).over(keys, order_by="date").fill_null(0).alias("prev"),
            (pl.col("cents") > 0).cast(pl.Int64).alias("__pos"),
        )
        .with_columns(pl.col("__pos").cum_sum().over(keys, order_by="date").alias("__seen"))
        # "had MRR before" = some earlier day of the series had it (the count up to the previous change > 0)
        .with_columns(((pl.col("__seen") - pl.col("__pos")) > 0).alias("had_before"))
    )
    cents, prev = pl.col("cents"), pl.col("prev")
    starts = (prev == 0) & (cents > 0)
    return changes.with_columns(
        (cents - prev).alias("change"),
        pl.when(starts & ~pl.col("had_before")).then(cents).otherwise(0).alias("new_mrr"),
        pl.when((prev > 0) & (cents > prev)).then(cents - prev).otherwise(0).alias("expansion_mrr"),
        pl.when(starts & pl.col("had_before")).then(cents).otherwise(0).alias("reactivation_mrr"),
        pl.when((cents > 0) & (cents < prev)).then(prev - cents).otherwise(0).alias("contraction_mrr"),
        pl.when((cents == 0) & (prev > 0)).then(prev).otherwise(0).alias("churned_mrr"),
        ((cents > 0).cast(pl.Int64) - (prev > 0).cast(pl.Int64)).alias("paying_change"),
    )


def customer_movements(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """metrics.mrr_customer_movements (CUSTOMER_MOVEMENT_SCHEMA): the customer-level rows behind the movements
    of `daily_mrr` (their amounts sum to its columns per day), for logo churn and drill-downs in BI."""
    changes = _customer_changes(intervals, today).filter(pl.col("change") != 0)
    movement = pl.coalesce(*[pl.when(pl.col(m) != 0).then(pl.lit(m.removesuffix("_mrr"))) for m in MOVEMENTS])
    return changes.select(
        "integration", "currency", "customer", "date",
        money.cents_to_decimal(pl.col("prev")).alias("previous_mrr"),
        money.cents_to_decimal(pl.col("cents")).alias("mrr"),
        movement.alias("movement"),
        money.cents_to_decimal(pl.sum_horizontal(*MOVEMENTS)).alias("amount"),
    ).sort("integration", "currency", "customer", "date").cast(CUSTOMER_MOVEMENT_SCHEMA)


def daily_mrr(intervals: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """metrics.mrr_daily (DAILY_SCHEMA): one row per (integration, currency, date) from the first day with MRR
    to `today` inclusive, no gaps, sorted by integration, currency, date."""
    series = ["integration", "currency"]
    changes = _customer_changes(intervals, today)
    per_day = changes.group_by(*series, "date").agg(
        pl.col("change").sum(), *[pl.col(m).sum() for m in MOVEMENTS], pl.col("paying_change").sum()
    )
    end = today + dt.timedelta(days=1)
    iv = intervals.filter(pl.col("valid_from") <= today).with_columns(
        pl.min_horizontal(pl.col("valid_to").fill_null(end), pl.lit(end)).alias("to_day")
    )
    # intervals hold only positive MRR, so a subscription is active exactly inside its intervals
    sub_counts = pl.concat([
        iv.select(*series, pl.col("valid_from").alias("date"), pl.lit(1, pl.Int64).alias("sub_change")),
        iv.filter(pl.col("to_day") <= today).select(*series, pl.col("to_day").alias("date"),
                                                    pl.lit(-1, pl.Int64).alias("sub_change")),
    ]).group_by(*series, "date").agg(pl.col("sub_change").sum())
    sparse = (
        per_day.join(sub_counts, on=[*series, "date"], how="full", coalesce=True)
        .with_columns(pl.col(c).fill_null(0) for c in ["change", *MOVEMENTS, "paying_change", "sub_change"])
        .sort(*series, "date")
        .with_columns(
            pl.col("change").cum_sum().over(series, order_by="date").alias("mrr_cents"),
            pl.col("paying_change").cum_sum().over(series, order_by="date").alias("paying"),
            pl.col("sub_change").cum_sum().over(series, order_by="date").alias("subs"),
        )
    )
    starts = sparse.filter(pl.col("mrr_cents") > 0).group_by(series).agg(pl.col("date").min().alias("start"))
    spine = (
        starts.with_columns(pl.date_ranges("start", pl.lit(today), interval="1d").alias("date"))
        .explode("date")
        .drop("start")
    )
    cumulative = ["mrr_cents", "paying", "subs"]
    daily = (
        spine.join(sparse, on=[*series, "date"], how="left")
        .sort(*series, "date")
        .with_columns(pl.col(c).forward_fill().over(series, order_by="date") for c in cumulative)
        .with_columns(pl.col(m).fill_null(0) for m in MOVEMENTS)
    )
    return daily.select(
        "integration", "date", "currency",
        money.cents_to_decimal(pl.col("mrr_cents")).alias("mrr"),
        money.cents_to_decimal(pl.col("mrr_cents") * 12).alias("arr"),
        pl.col("subs").cast(pl.Int32).alias("active_subscriptions"),
        pl.col("paying").cast(pl.Int32).alias("paying_customers"),
        *[money.cents_to_decimal(pl.col(m)).alias(m) for m in MOVEMENTS],
    ).sort("integration", "currency", "date").cast(DAILY_SCHEMA)


def snapshot_rows(intervals: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Each subscription's MRR on `day` as metrics.mrr_snapshots rows (SNAPSHOT_SCHEMA), exact in
    mrr_num / mrr_den; subscriptions without MRR are not listed."""
    live = intervals.filter(
        (pl.col("valid_from") <= day) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > day))
    )
    return live.select(
        "integration",
        pl.lit(day, pl.Date).alias("date"),
        "subscription", "customer", "currency",
        money.cents_to_decimal(money.half_up_cents(pl.col("mrr_atoms"), pl.col("atoms_per_unit"))).alias("mrr"),
        pl.col("mrr_atoms").cast(pl.Decimal(38, 0)).alias("mrr_num"),
        pl.col("atoms_per_unit").cast(pl.Decimal(38, 0)).alias("mrr_den"),
    ).sort("integration", "subscription").cast(SNAPSHOT_SCHEMA)


# --- invariant predicates: offending rows, empty when fine -------------------------------------------------------


def movement_breaks(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows where mrr(D) - mrr(D-1) != new + expansion + reactivation - contraction - churned (section 6);
    D-1 is the series' previous row (0 before the first). Columns: integration, currency, date, mrr,
    previous_mrr, mrr_change, movements."""
    series = ["integration", "currency"]
    checked = frame.sort(*series, "date").with_columns(
        pl.col("mrr").shift(1).over(series, order_by="date").fill_null(0).cast(pl.Decimal(18, 2)).alias("previous_mrr"),
    ).with_columns(
        (pl.col("mrr") - pl.col("previous_mrr")).alias("mrr_change"),
        (pl.col("new_mrr") + pl.col("expansion_mrr") + pl.col("reactivation_mrr") - pl.col("contraction_mrr")
         - pl.col("churned_mrr")).alias("movements"),
    )
    return checked.filter(pl.col("mrr_change") != pl.col("movements")).select(
        "integration", "currency", "date", "mrr", "previous_mrr", "mrr_change", "movements"
    )


def gap_rows(frame: pl.DataFrame, today: dt.date | None = None) -> pl.DataFrame:
    """(integration, currency, date) of every day missing between a series' first day and `today` (default:
    the latest date in the frame, which every series must reach)."""
    schema = {"integration": pl.Utf8, "currency": pl.Utf8, "date": pl.Date}
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    end = today if today is not None else frame.get_column("date").max()
    expected = (
        frame.group_by("integration", "currency")
        .agg(pl.col("date").min().alias("start"))
        .with_columns(pl.date_ranges("start", pl.lit(end, pl.Date), interval="1d").alias("date"))
        .explode("date")
        .drop("start")
        .filter(pl.col("date").is_not_null())
    )
    return (
        expected.join(frame.select("integration", "currency", "date"), on=["integration", "currency", "date"],
                      how="anti")
        .sort("integration", "currency", "date")
        .select(list(schema))
        .cast(schema)
    )


# --- what was left out -------------------------------------------------------------------------------------------


def unusable_rows(inputs: MrrInputs) -> pl.DataFrame:
    """Input rows the transform cannot use and leaves out, one reason each (UNUSABLE_SCHEMA): subscriptions
    with an unknown status or currency, items whose price is missing, one-time, in another currency or with
    a negative quantity, prices and coupons with impossible amounts. Metered items are not listed: they are
    valid and worth 0 (section 3)."""
    t = _tables(inputs)
    subs = _subscription_table(t, history.parse_subscription_events(t.events), MrrOptions(), _as_of(None))
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
