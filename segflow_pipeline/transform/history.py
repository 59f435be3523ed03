"""Rebuilding each subscription's past from what the API still shows (docs/mrr.md section 5).

Belongs here: which items (price, quantity) a subscription had on which day and when its status kept it from
counting, read from, in order of trust: the pipeline's own daily snapshots, `customer.subscription.*` events
(the API keeps 30 days), invoice lines of type subscription, and the subscription's own dates with its
current items. Not here: what an item is worth (`pricing.py`) or the daily series (`mrr.py`).

Time model: the daily value is the state at the end of the UTC day (section 1), so a change at timestamp `t`
shows from day `t.date()` on; a change after the run's `as_of` has not happened yet. Every interval here is
a half-open range of days `[from_day, to_day)`; `FAR` stands for "still so".

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

FAR = dt.date(9999, 12, 31)
MIN = dt.date(1970, 1, 1)

SOURCES = ("lifecycle", "invoice", "event", "snapshot")
SOURCE_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SOURCES)}

COUNTING_STATUSES = ("active", "past_due")
SUBSCRIPTION_EVENT_PREFIX = "customer.subscription."

ITEM_STATE = pl.Struct({"id": pl.Utf8, "price": pl.Utf8, "quantity": pl.Int64})
_JSON_ITEMS = pl.List(
    pl.Struct(
        {"id": pl.Utf8, "price": pl.Struct({"id": pl.Utf8}), "plan": pl.Struct({"id": pl.Utf8}), "quantity": pl.Int64}
    )
)

ITEM_ROW_COLUMNS = ["integration", "subscription", "item", "price", "quantity", "from_day", "to_day", "source"]


def day_from(ts: pl.Expr, as_of: dt.datetime) -> pl.Expr:
    """First day whose end-of-day state includes a change at `ts`; null when `ts` is unknown or after `as_of`."""
    return pl.when(ts <= as_of).then(ts.dt.date()).otherwise(pl.lit(None, pl.Date))


def day_until(ts: pl.Expr, as_of: dt.datetime) -> pl.Expr:
    """Exclusive end day for something that stops at `ts`; FAR when `ts` is unknown or after `as_of`."""
    return pl.when(ts <= as_of).then(ts.dt.date()).otherwise(pl.lit(FAR, pl.Date))


def _decode_items(text: pl.Expr, frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Decodes an `items.data` JSON array column into a list of ITEM_STATE; undecodable text becomes null.

    Stripe's item objects have a stable shape in every API version (price/plan objects, integer quantity);
    should a row still not match, the whole column falls back to null and the current items are used instead.
    """
    frame = frame.with_columns(text.alias("__json"))
    try:
        decoded = frame.with_columns(pl.col("__json").str.json_decode(_JSON_ITEMS).alias("__list"))
    except pl.exceptions.PolarsError:
        decoded = frame.with_columns(pl.lit(None, _JSON_ITEMS).alias("__list"))
    state = pl.col("__list").list.eval(
        pl.struct(
            pl.element().struct.field("id").alias("id"),
            pl.coalesce(
                pl.element().struct.field("price").struct.field("id"),
                pl.element().struct.field("plan").struct.field("id"),
            ).alias("price"),
            pl.element().struct.field("quantity").alias("quantity"),
        )
    )
    return decoded.with_columns(state.alias(name)).drop("__json", "__list")


def parse_subscription_events(events: pl.DataFrame) -> pl.DataFrame:
    """`customer.subscription.*` events as columns, read with JSON paths (lenient: bad JSON gives nulls).

    Columns: integration, subscription, created, status, prev_status, cape, prev_cape, cancel_at_set,
    quantity, price, prev_quantity, prev_price (single-item fields of old API versions), items (list of
    ITEM_STATE after the event), prev_items (before, when it changed).
    """
    subs = events.filter(pl.col("type").str.starts_with(SUBSCRIPTION_EVENT_PREFIX))
    prev = pl.col("previous_attributes")
    obj = pl.col("data_object")
    parsed = subs.select(
        "integration",
        pl.coalesce(pl.col("object_id"), obj.str.json_path_match("$.id")).alias("subscription"),
        "created",
        "id",
        obj.str.json_path_match("$.status").alias("status"),
        prev.str.json_path_match("$.status").alias("prev_status"),
        (obj.str.json_path_match("$.cancel_at_period_end") == "true").alias("cape"),
        prev.str.json_path_match("$.cancel_at_period_end").alias("prev_cape"),
        # `cancel_at` listed among previous_attributes and set now: this event scheduled the cancellation.
        (prev.str.contains('"cancel_at"\\s*:').fill_null(False) & obj.str.json_path_match("$.cancel_at").is_not_null())
        .alias("cancel_at_set"),
        prev.str.json_path_match("$.quantity").cast(pl.Int64, strict=False).alias("prev_quantity"),
        obj.str.json_path_match("$.quantity").cast(pl.Int64, strict=False).alias("quantity"),
        pl.coalesce(obj.str.json_path_match("$.price.id"), obj.str.json_path_match("$.plan.id")).alias("price"),
        pl.coalesce(
            prev.str.json_path_match("$.price.id"),
            prev.str.json_path_match("$.plan.id"),
        ).alias("prev_price"),
        obj.str.json_path_match("$.items.data").alias("items_json"),
        prev.str.json_path_match("$.items.data").alias("prev_items_json"),
    )
    parsed = _decode_items(pl.col("items_json"), parsed, "items")
    parsed = _decode_items(pl.col("prev_items_json"), parsed, "prev_items")
    return parsed.drop("items_json", "prev_items_json").filter(pl.col("subscription").is_not_null())


def era_starts(events: pl.DataFrame) -> pl.DataFrame:
    """First day each integration's event log covers (integration, era_start); none without events."""
    return events.group_by("integration").agg(pl.col("created").min().dt.date().alias("era_start"))


def lifecycle_event_times(parsed: pl.DataFrame) -> pl.DataFrame:
    """Per subscription, the latest event that (a) scheduled its cancellation, (b) moved it from
    active/past_due to unpaid, (c) paused it (docs/mrr.md section 2)."""
    was_counting = pl.col("prev_status").is_in(list(COUNTING_STATUSES))
    return parsed.group_by("integration", "subscription").agg(
        pl.col("created")
        .filter((pl.col("cape") & (pl.col("prev_cape") == "false")) | pl.col("cancel_at_set"))
        .max()
        .alias("cancel_requested_event"),
        pl.col("created").filter(was_counting & (pl.col("status") == "unpaid")).max().alias("unpaid_event"),
        pl.col("created")
        .filter((was_counting | (pl.col("prev_status") == "trialing")) & (pl.col("status") == "paused"))
        .max()
        .alias("paused_event"),
    )


def status_blocks(parsed: pl.DataFrame, eras: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """Day ranges inside the event era when a status change event says the subscription was not
    active/past_due (integration, subscription, from_day, to_day)."""
    changes = (
        parsed.filter(pl.col("prev_status").is_not_null() & pl.col("status").is_not_null())
        .sort("integration", "subscription", "created", "id")
        .join(eras, on="integration", how="inner")
    )
    keys = ["integration", "subscription"]
    after = changes.select(
        *keys,
        day_from(pl.col("created"), as_of).alias("from_day"),
        day_until(pl.col("created").shift(-1).over(keys, order_by=["created", "id"]), as_of).alias("to_day"),
        pl.col("status").alias("state"),
    )
    before = changes.filter(_first_per(keys)).select(
        *keys,
        pl.col("era_start").alias("from_day"),
        day_until(pl.col("created"), as_of).alias("to_day"),
        pl.col("prev_status").alias("state"),
    )
    return (
        pl.concat([after, before])
        .filter(~pl.col("state").is_in(list(COUNTING_STATUSES)) & (pl.col("from_day") < pl.col("to_day")))
        .select(*keys, "from_day", "to_day")
    )


def _first_per(keys: list[str]) -> pl.Expr:
    """True on the earliest event (by created, then id) of each group."""
    return pl.int_range(pl.len()).over(keys, order_by=["created", "id"]) == 0


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
    """Explodes a list-of-ITEM_STATE column into item rows, keeping from_day/to_day. Where `override` is true
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


def item_rows(
    subscriptions: pl.DataFrame,
    subscription_items: pl.DataFrame,
    parsed_events: pl.DataFrame,
    eras: pl.DataFrame,
    invoice_lines: pl.DataFrame,
    as_of: dt.datetime,
    invoice_items: pl.DataFrame | None = None,
    metered: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Which item (price, quantity) each subscription had on which days, by source (module docstring).

    `subscriptions` carries integration, subscription and current_period_start; `invoice_items` the pending
    invoice items; `metered` the (integration, price) of metered prices. Returns ITEM_ROW_COLUMNS: integration,
    subscription, item, price, quantity, from_day, to_day (exclusive, FAR = still so), source. Ranges of one
    subscription from different eras never overlap.
    """
    keys = ["integration", "subscription"]
    if invoice_items is None:
        invoice_items = pl.DataFrame(schema={"integration": pl.Utf8, "subscription": pl.Utf8, "id": pl.Utf8,
                                             "subscription_item": pl.Utf8, "price": pl.Utf8, "quantity": pl.Int64,
                                             "amount": pl.Int64, "proration": pl.Boolean, "invoice": pl.Utf8,
                                             "period_start": pl.Datetime("us"), "period_end": pl.Datetime("us")})
    if metered is None:
        metered = pl.DataFrame(schema={"integration": pl.Utf8, "price": pl.Utf8})
    if "current_period_start" not in subscriptions.columns:
        subscriptions = subscriptions.with_columns(pl.lit(None, pl.Datetime("us")).alias("current_period_start"))
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
    first = ev.filter(_first_per(keys)).select(
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


def last_paid_period_end(invoice_lines: pl.DataFrame, invoices: pl.DataFrame | None) -> pl.DataFrame:
    """End of the latest period of subscription lines on paid invoices (integration, subscription, paid_until);
    without an invoices table every finalized line counts as paid."""
    lines = invoice_lines.filter((pl.col("type") == "subscription") & ~pl.col("proration").fill_null(False))
    if invoices is not None:
        paid = invoices.filter(pl.col("status") == "paid").select("integration", pl.col("id").alias("invoice"))
        lines = lines.join(paid, on=["integration", "invoice"], how="semi")
    return lines.group_by("integration", "subscription").agg(pl.col("period_end").max().alias("paid_until"))


# --- snapshots (section 5, rule 1) -------------------------------------------------------------------------------


def snapshot_exact(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Snapshot rows with their exact value as num/den (Int128): `mrr_num`/`mrr_den` when recorded, else the
    `mrr` decimal at its own scale."""
    mrr_dtype = snapshots.schema.get("mrr")
    scale = getattr(mrr_dtype, "scale", None) or 0
    frame = snapshots
    for name in ("mrr_num", "mrr_den"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Int128).alias(name))
    from_decimal = (
        pl.col("mrr").cast(pl.Decimal(38, scale)).to_physical().cast(pl.Int128)
        if isinstance(mrr_dtype, pl.Decimal)
        else pl.lit(None, pl.Int128)
    )
    exact = pl.col("mrr_num").is_not_null() & pl.col("mrr_den").is_not_null() & (pl.col("mrr_den").cast(pl.Int128) > 0)
    return frame.select(
        "integration", "date", "subscription", "customer", pl.col("currency").str.to_lowercase(),
        pl.when(exact).then(pl.col("mrr_num").cast(pl.Int128)).otherwise(from_decimal).alias("num"),
        pl.when(exact).then(pl.col("mrr_den").cast(pl.Int128)).otherwise(pl.lit(10**scale, pl.Int128)).alias("den"),
    ).filter(pl.col("num").is_not_null() & (pl.col("num") >= 0))


def snapshot_cover(exact: pl.DataFrame) -> pl.DataFrame:
    """Day ranges each integration has snapshots for (integration, from_day, to_day): on those days the
    snapshot is the whole truth, a subscription missing from it had no MRR."""
    days = exact.select("integration", "date").unique().sort("integration", "date")
    gap = pl.col("date") - pl.col("date").shift(1).over("integration", order_by="date") != dt.timedelta(days=1)
    return (
        days.with_columns(gap.fill_null(True).cast(pl.Int64).alias("new_run"))
        .with_columns(pl.col("new_run").cum_sum().over("integration", order_by="date").alias("run"))
        .group_by("integration", "run")
        .agg(pl.col("date").min().alias("from_day"), (pl.col("date").max() + dt.timedelta(days=1)).alias("to_day"))
        .drop("run")
        .sort("integration", "from_day")
    )


def snapshot_runs(exact: pl.DataFrame, atoms_per_unit: int) -> pl.DataFrame:
    """Snapshot values as runs of equal value per subscription (integration, subscription, customer, currency,
    from_day, to_day, atoms) on the run's common denominator."""
    keys = ["integration", "subscription"]
    frame = (
        exact.with_columns((pl.col("num") * (pl.lit(atoms_per_unit, pl.Int128) // pl.col("den"))).alias("atoms"))
        .sort(*keys, "date")
    )
    new_run = (
        (pl.col("date") - pl.col("date").shift(1).over(keys, order_by="date") != dt.timedelta(days=1))
        | (pl.col("atoms") != pl.col("atoms").shift(1).over(keys, order_by="date"))
    ).fill_null(True)
    return (
        frame.with_columns(new_run.cast(pl.Int64).alias("new_run"))
        .with_columns(pl.col("new_run").cum_sum().over(keys, order_by="date").alias("run"))
        .group_by(*keys, "run")
        .agg(
            pl.col("customer").first(),
            pl.col("currency").first(),
            pl.col("date").min().alias("from_day"),
            (pl.col("date").max() + dt.timedelta(days=1)).alias("to_day"),
            pl.col("atoms").first(),
        )
        .drop("run")
    )
