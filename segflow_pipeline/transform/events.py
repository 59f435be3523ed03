"""`customer.subscription.*` events read as columns, and what they say about the past (docs/mrr.md section 5).

Belongs here: parsing the events (the API keeps 30 days of them), the first day each integration's event log
covers (`era_starts`: inside that era the events are trusted) and the day ranges a status change kept a
subscription from counting (`status_blocks`). Not here: rolling items back through the events (`history.py`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.transform.days import day_from, day_until
from segflow_pipeline.transform.lifecycle import COUNTING_STATUSES

SUBSCRIPTION_EVENT_PREFIX = "customer.subscription."
_JSON_ITEMS = pl.List(
    pl.Struct(
        {"id": pl.Utf8, "price": pl.Struct({"id": pl.Utf8}), "plan": pl.Struct({"id": pl.Utf8}), "quantity": pl.Int64}
    )
)


def parse_subscription_events(events: pl.DataFrame) -> pl.DataFrame:
    """`customer.subscription.*` events as columns, read with JSON paths (lenient: bad JSON gives nulls).

    Columns: integration, subscription, created, status, prev_status, cape, prev_cape, cancel_at_set,
    quantity, price, prev_quantity, prev_price (single-item fields of old API versions), items (list of item
    states {id, price, quantity} after the event), prev_items (before, when it changed).
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


def _decode_items(text: pl.Expr, frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Decodes an `items.data` JSON array column into a list of item states {id, price, quantity}; undecodable
    text becomes null.

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


def era_starts(events: pl.DataFrame) -> pl.DataFrame:
    """First day each integration's event log covers (integration, era_start); none without events."""
    return events.group_by("integration").agg(pl.col("created").min().dt.date().alias("era_start"))


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
    before = changes.filter(first_per(keys)).select(
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


def first_per(keys: list[str]) -> pl.Expr:
    """True on the earliest event (by created, then id) of each group."""
    return pl.int_range(pl.len()).over(keys, order_by=["created", "id"]) == 0
