"""Which items (price, quantity) each subscription had on which day, rebuilt from what the API still shows
(docs/mrr.md section 5).

Belongs here: `item_rows`, read from, in order of trust: `customer.subscription.*` events (the API keeps 30 days),
invoice lines of type subscription (with pending proration invoice items), and the subscription's current items.
Not here: parsing the events and the status blocks they give (`events.py`), when the subscription counts at all
(`lifecycle.py`), the pipeline's own snapshots, which outrank all of these (`snapshots.py`, `intervals.py`), or
what an item is worth (`pricing.py`). Time model: `days.py`.

Eras per subscription (later eras win because they are more trustworthy):
- event era `[era_start, FAR)`: `era_start` is the first day the integration's event log covers. Inside it the
  current items hold, rolled back through each event's `previous_attributes`.
- invoice era `[first invoiced period, min(last invoiced period end, era_start))`: regular subscription lines
  give (price, quantity) per item for their period; proration lines (proration=true) whose period starts at a
  change date the change itself (positive line: new state from then on; negative line: old state ends).
- lifecycle: every other day, with the current items (each from its own `created`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.transform.days import FAR, MIN, day_from, day_until
from segflow_pipeline.transform.events import first_per


ITEM_ROW_COLUMNS = ["integration", "subscription", "item", "price", "quantity", "from_day", "to_day", "source"]


def item_rows(
    subscriptions: pl.DataFrame,
    subscription_items: pl.DataFrame,
    parsed_events: pl.DataFrame,
    eras: pl.DataFrame,
    invoice_lines: pl.DataFrame,
    as_of: dt.datetime,
    invoice_items: pl.DataFrame,
    metered: pl.DataFrame,
) -> pl.DataFrame:
    """Which item (price, quantity) each subscription had on which days, by source (module docstring).

    `subscriptions` carries integration, subscription and current_period_start; `invoice_items` the pending
    invoice items; `metered` the (integration, price) of metered prices. Returns ITEM_ROW_COLUMNS: integration,
    subscription, item, price, quantity, from_day, to_day (exclusive, FAR = still so), source. Ranges of one
    subscription from different eras never overlap.
    """
    keys = ["integration", "subscription"]
    subs = subscriptions.select(*keys, "current_period_start").unique(keys).join(
        eras, on="integration", how="left"
    ).with_columns(pl.col("era_start").fill_null(FAR))
    current = subscription_items.select(
        "integration",
        pl.col("subscription"),
        pl.col("id").alias("item"),
        "price",
        pl.col("quantity").fill_null(1),
        pl.col("created").alias("item_created"),
    ).join(subs.select(keys), on=keys, how="semi")

    # Invoice era: observations per item, each valid until the item's next observation or its period end.
    obs = observations(subs, subscription_items, invoice_lines, invoice_items)
    lines = (
        obs.join(subs, on=keys, how="inner")
        .with_columns(
            day_from(pl.col("period_start"), as_of).alias("from_day"),
            day_until(pl.col("period_end"), as_of).alias("period_to"),
        )
        .filter(pl.col("from_day").is_not_null())
    )
    coverage = lines.filter(pl.col("kind") == 1).group_by(keys).agg(
        pl.col("from_day").min().alias("inv_from"), pl.col("period_to").max().alias("inv_to")
    )

    # Event era: roll the current items back through each event that changed items/quantity/price.
    changed = pl.col("prev_items").is_not_null() | pl.col("prev_quantity").is_not_null() | pl.col("prev_price").is_not_null()
    cur_lists = current.group_by(keys).agg(
        pl.struct(pl.col("item").alias("id"), "price", "quantity").alias("cur")
    )
    ev = (
        parsed_events.filter(changed)
        .join(subs.filter(pl.col("era_start") < FAR).drop("current_period_start"), on=keys, how="inner")
        .sort(*keys, "created", "id")
        .join(cur_lists, on=keys, how="left")
        .with_columns(pl.col("created").shift(-1).over(keys, order_by=["created", "id"]).alias("next_created"))
        .with_columns(
            pl.when(pl.col("next_created").is_null()).then(pl.col("cur"))
            .otherwise(pl.coalesce(pl.col("items"), pl.col("cur"))).alias("after"),
            pl.coalesce(pl.col("prev_items"), pl.col("items"), pl.col("cur")).alias("before"),
            pl.col("prev_items").is_null().alias("override"),
            day_from(pl.col("created"), as_of).alias("from_day"),
            day_until(pl.col("next_created"), as_of).alias("to_day"),
        )
    )
    first = ev.filter(first_per(keys)).select(
        *keys, pl.col("era_start").alias("from_day"), pl.col("from_day").alias("to_day"), "prev_quantity",
        "prev_price", "before", "override",
    )

    # The current objects are the truth for now: the earliest state they can be rolled back to (the state the
    # events roll back to at the start of their window, else the current items) must be what the invoice era
    # ends with. If it is not, something nobody dated changed it (proration_behavior=none), and that state
    # counts from the start of the current period, or from the latest dated change after it (MRR_SPEC section 5).
    rolled_back = pl.concat([
        _state_rows(first.with_columns(pl.lit(FAR).alias("to_day")), "before", "lifecycle")
        .select(*keys, "item", "price", "quantity"),
        current.join(first.select(keys), on=keys, how="anti").select(*keys, "item", "price", "quantity"),
    ], how="vertical_relaxed")
    before_era = lines.filter(pl.col("from_day") < pl.col("era_start"))
    undated = _differs(_last_invoiced(before_era, metered), _comparable(rolled_back, metered)).join(
        before_era.select(keys).unique(), on=keys, how="semi")
    current_from = (
        undated.join(subs, on=keys, how="inner")
        .join(before_era.group_by(keys).agg(pl.col("from_day").max().alias("last_seen")), on=keys, how="left")
        .select(*keys, pl.max_horizontal(day_from(pl.col("current_period_start"), as_of), "last_seen")
                .alias("current_from"))
    )
    coverage = coverage.join(current_from, on=keys, how="left").with_columns(
        pl.min_horizontal("inv_to", pl.col("current_from").fill_null(FAR)).alias("inv_to")
    ).drop("current_from")

    item_keys = [*keys, "item"]
    # ordered by timestamp, not day: a proration and a renewal on the same day must keep their order
    invoice = (
        lines.sort(*item_keys, "period_start", "kind")
        .with_columns(
            pl.col("period_start").shift(-1).over(item_keys, order_by=["period_start", "kind"]).alias("next_start")
        )
        .join(coverage, on=keys, how="inner")
        .with_columns(
            pl.min_horizontal(
                day_until(pl.min_horizontal("period_end", pl.col("next_start")), as_of), "inv_to", "era_start"
            ).alias("to_day")
        )
        .filter((pl.col("kind") > 0) & (pl.col("from_day") < pl.col("to_day")))
        .with_columns(pl.lit("invoice").alias("source"))
        .select(ITEM_ROW_COLUMNS)
    )

    # Lifecycle day ranges: wherever neither events nor invoices say otherwise.
    with_cov = subs.join(coverage, on=keys, how="left")
    lifecycle_ranges = pl.concat(
        [
            with_cov.select(*keys, pl.lit(MIN).alias("from_day"),
                            pl.min_horizontal(pl.col("inv_from").fill_null(FAR), "era_start").alias("to_day")),
            with_cov.filter(pl.col("inv_to").is_not_null()).select(
                *keys, pl.col("inv_to").alias("from_day"), pl.col("era_start").alias("to_day")
            ),
        ]
    ).filter(pl.col("from_day") < pl.col("to_day"))
    after_rows = _state_rows(
        ev.with_columns((pl.col("items").is_null() & pl.col("next_created").is_not_null()).alias("override")),
        "after", "event", quantity="quantity", price="price",
    )
    before_rows = _state_rows(first, "before", "event")
    quiet = subs.filter(pl.col("era_start") < FAR).join(ev.select(keys).unique(), on=keys, how="anti").select(
        *keys, pl.col("era_start").alias("from_day"), pl.lit(FAR).alias("to_day")
    )
    quiet_rows = _current_item_rows(current, quiet, as_of, "event")

    # Lifecycle: wherever neither events nor invoices say otherwise, the earliest state known: the state the
    # events roll back to at the start of their window, else the current items.
    lifecycle_before_events = _state_rows(
        lifecycle_ranges.join(first.drop("from_day", "to_day"), on=keys, how="inner"), "before", "lifecycle"
    )
    lifecycle = _current_item_rows(
        current, lifecycle_ranges.join(first.select(keys), on=keys, how="anti"), as_of, "lifecycle"
    )

    rows = pl.concat([lifecycle, lifecycle_before_events, invoice, after_rows, before_rows, quiet_rows],
                     how="vertical_relaxed")
    return rows.with_columns(pl.col("quantity").fill_null(1)).filter(
        pl.col("from_day").is_not_null() & (pl.col("from_day") < pl.col("to_day"))
    )


def observations(subscriptions: pl.DataFrame, subscription_items: pl.DataFrame, invoice_lines: pl.DataFrame,
                 invoice_items: pl.DataFrame) -> pl.DataFrame:
    """What invoices say each subscription item was, and when (module docstring, invoice era).

    Regular subscription lines, proration lines under either parent shape (`subscription_item_details` names the
    item; `invoice_item_details`, the proration invoice item a subscription update created, names only the
    subscription) and pending proration invoice items (not invoiced yet). A line without its item is matched to
    the subscription's item with the same price, preferring one whose quantity matches, among the current items
    and the items regular lines name. Columns: integration, subscription, item, price, quantity, period_start,
    period_end, kind (0 = old state ends here, 1 = regular period, 2 = new state starts here).
    """
    keys = ["integration", "subscription"]
    lines = invoice_lines.filter(
        pl.col("subscription").is_not_null() & pl.col("price").is_not_null()
        & ((pl.col("type") == "subscription") | pl.col("proration").fill_null(False))
    ).select(*keys, "id", "subscription_item", "price", "quantity", "amount", "proration", "period_start",
             "period_end")
    pending = invoice_items.filter(
        pl.col("proration").fill_null(False) & pl.col("subscription").is_not_null() & pl.col("price").is_not_null()
        & pl.col("invoice").is_null()
    ).select(*keys, "id", "subscription_item", "price", "quantity", "amount", "proration", "period_start",
             "period_end")
    rows = pl.concat([lines, pending], how="vertical_relaxed").join(
        subscriptions.select(keys).unique(), on=keys, how="semi"
    ).with_columns(pl.col("quantity").fill_null(1))
    known = pl.concat([
        subscription_items.select(*keys, pl.col("id").alias("item"), "price", pl.col("quantity").fill_null(1),
                                  pl.lit(0).alias("from_lines")),
        rows.filter(pl.col("subscription_item").is_not_null()).select(
            *keys, pl.col("subscription_item").alias("item"), "price", "quantity", pl.lit(1).alias("from_lines")),
    ], how="vertical_relaxed").unique()
    unnamed = rows.filter(pl.col("subscription_item").is_null())
    matched = (
        unnamed.select(*keys, "id", "price", "quantity")
        .join(known.rename({"quantity": "known_quantity"}), on=[*keys, "price"], how="inner")
        .with_columns((pl.col("quantity") != pl.col("known_quantity")).cast(pl.Int64).alias("__miss"))
        .sort("__miss", "from_lines", "item")
        .group_by(*keys, "id", maintain_order=True)
        .agg(pl.col("item").first().alias("matched_item"))
    )
    rows = rows.join(matched, on=[*keys, "id"], how="left")
    return rows.select(
        *keys,
        pl.coalesce("subscription_item", "matched_item", pl.col("subscription") + "|" + pl.col("price")).alias("item"),
        "price", "quantity", "period_start", "period_end",
        pl.when(~pl.col("proration").fill_null(False)).then(1)
        .when(pl.col("amount") > 0).then(2)
        .otherwise(0)
        .alias("kind"),
    )


def _last_invoiced(obs: pl.DataFrame, metered: pl.DataFrame) -> pl.DataFrame:
    """Each item's state after the last observation (integration, subscription, item, price, quantity; an item
    whose last observation ends it is left out). Metered items are compared by price only (their lines carry
    the usage, not a quantity)."""
    item_keys = ["integration", "subscription", "item"]
    last = (
        obs.sort(*item_keys, "period_start", "kind")
        .group_by(item_keys, maintain_order=True)
        .agg(pl.col("price").last(), pl.col("quantity").last(), pl.col("kind").last())
        .filter(pl.col("kind") > 0)
        .drop("kind")
    )
    return _comparable(last, metered)


def _comparable(state: pl.DataFrame, metered: pl.DataFrame) -> pl.DataFrame:
    is_metered = pl.col("price").is_in(metered.get_column("price").implode()).fill_null(False)
    return state.select(
        "integration", "subscription", "item", "price",
        pl.when(is_metered).then(pl.lit(None, pl.Int64)).otherwise(pl.col("quantity").fill_null(1)).alias("quantity"),
    )


def _differs(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """(integration, subscription) whose item states (item, price, quantity) differ between `a` and `b`."""
    keys = ["integration", "subscription"]
    cols = [*keys, "item", "price", "quantity"]
    a = a.select(cols).with_columns(pl.col("quantity").fill_null(-1))
    b = b.select(cols).with_columns(pl.col("quantity").fill_null(-1))
    return pl.concat([a.join(b, on=cols, how="anti"), b.join(a, on=cols, how="anti")]).select(keys).unique()


def _current_item_rows(current: pl.DataFrame, ranges: pl.DataFrame, as_of: dt.datetime, source: str) -> pl.DataFrame:
    """Current items over day ranges (integration, subscription, from_day, to_day), each from its own `created`."""
    return (
        ranges.join(current, on=["integration", "subscription"], how="inner")
        .with_columns(
            # an item added after the subscription started only counts from its own creation
            pl.when(pl.col("item_created").is_null())
            .then(pl.col("from_day"))
            .otherwise(pl.max_horizontal(pl.col("from_day"), day_from(pl.col("item_created"), as_of).fill_null(FAR)))
            .alias("from_day"),
            pl.lit(source).alias("source"),
        )
        .select(ITEM_ROW_COLUMNS)
    )


def _state_rows(frame: pl.DataFrame, state: str, source: str, quantity: str = "prev_quantity",
                price: str = "prev_price") -> pl.DataFrame:
    """Explodes a list-of-item-states column ({id, price, quantity}) into item rows, keeping from_day/to_day. Where `override` is true
    (an old API version's single-item event), the `quantity` / `price` columns replace the item's own."""
    return (
        frame.select("integration", "subscription", "from_day", "to_day", pl.col(quantity).alias("prev_quantity"),
                     pl.col(price).alias("prev_price"), pl.col(state).alias("__state"), "override")
        .explode("__state")
        .filter(pl.col("__state").is_not_null())
        .select(
            "integration",
            "subscription",
            pl.col("__state").struct.field("id").alias("item"),
            pl.when(pl.col("override"))
            .then(pl.coalesce(pl.col("prev_price"), pl.col("__state").struct.field("price")))
            .otherwise(pl.col("__state").struct.field("price"))
            .alias("price"),
            pl.when(pl.col("override"))
            .then(pl.coalesce(pl.col("prev_quantity"), pl.col("__state").struct.field("quantity")))
            .otherwise(pl.col("__state").struct.field("quantity"))
            .alias("quantity"),
            "from_day",
            "to_day",
            pl.lit(source).alias("source"),
        )
    )
