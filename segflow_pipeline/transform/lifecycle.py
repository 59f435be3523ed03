"""When each subscription counts at all (docs/mrr.md section 2): status, trial, cancellation, unpaid and paused.

Belongs here: one row per subscription with the day range it may count in (`count_from` .. `count_to`) and why
a subscription cannot be used (`problem`), from its own dates, the events that scheduled a cancellation or
moved it to unpaid/paused, and the end of its last paid period. Not here: what it was worth on which day.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from segflow_pipeline.config import MrrOptions
from segflow_pipeline.transform import currency
from segflow_pipeline.transform.days import day_from, day_until
from segflow_pipeline.transform.inputs import MrrInputs

SUBSCRIPTION_STATUSES = (
    "active", "past_due", "trialing", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused",
)
NEVER_COUNTING = ("incomplete", "incomplete_expired")
COUNTING_STATUSES = ("active", "past_due")


def subscription_table(t: MrrInputs, parsed: pl.DataFrame, options: MrrOptions,
                       as_of: dt.datetime) -> pl.DataFrame:
    """One row per subscription: customer, currency, exponent, the day range it may count in
    (count_from .. count_to, exclusive; count_from null = never) and `problem` (null when usable)."""
    times = lifecycle_event_times(parsed)
    paid = last_paid_period_end(t.invoice_lines, t.invoices)
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
        pl.when(never).then(pl.lit(None, pl.Date)).otherwise(day_from(count_from_ts, as_of)).alias("count_from"),
        day_until(stop, as_of).alias("count_to"),
        problem.alias("problem"),
    ).select(*keys, "customer", "currency", "exponent", "count_from", "count_to", "problem", "current_period_start")


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


def last_paid_period_end(invoice_lines: pl.DataFrame, invoices: pl.DataFrame | None) -> pl.DataFrame:
    """End of the latest period of subscription lines on paid invoices (integration, subscription, paid_until);
    without an invoices table every finalized line counts as paid."""
    lines = invoice_lines.filter((pl.col("type") == "subscription") & ~pl.col("proration").fill_null(False))
    if invoices is not None:
        paid = invoices.filter(pl.col("status") == "paid").select("integration", pl.col("id").alias("invoice"))
        lines = lines.join(paid, on=["integration", "invoice"], how="semi")
    return lines.group_by("integration", "subscription").agg(pl.col("period_end").max().alias("paid_until"))
