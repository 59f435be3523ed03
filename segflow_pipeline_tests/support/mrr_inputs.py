"""A small builder for hand-made Stripe input frames (columns per segflow_pipeline/raw_tables.py) with sensible defaults,
so each MRR test states only what its scenario is about, and the clock those tests run at."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa

from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline.transform import mrr

TODAY = dt.date(2024, 6, 15)
AS_OF = dt.datetime(2024, 6, 15, 12, 0, 0)
LONG_AGO = dt.datetime(2024, 1, 1, 0, 0, 0)

INPUT_TABLES = ("subscriptions", "subscription_items", "prices", "price_tiers", "coupons", "discounts",
                "customers", "invoice_lines", "invoice_items", "events")


def at(day: dt.date | str, hh: int = 0, mm: int = 0, ss: int = 0) -> dt.datetime:
    day = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return dt.datetime(day.year, day.month, day.day, hh, mm, ss)


class Account:
    """Rows of one integration's stripe.* tables, added with defaults; `inputs()` turns them into frames."""

    def __init__(self, integration: str = "default") -> None:
        self.integration = integration
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in INPUT_TABLES}
        self.snapshots: list[dict[str, Any]] = []
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def _add(self, table: str, **row: Any) -> dict[str, Any]:
        row = {"integration": self.integration, **row}
        self.rows[table].append(row)
        return row

    def price(self, id: str | None = None, unit_amount: int | None = 1000, interval: str | None = "month",
              interval_count: int = 1, currency: str = "usd", scheme: str = "per_unit",
              tiers_mode: str | None = None, usage_type: str = "licensed", divide_by: int | None = None,
              round: str | None = None, unit_amount_decimal: str | None = None,
              tiers: list[tuple[int | None, int, int]] | None = None) -> str:
        """tiers: (up_to, unit_amount, flat_amount) in Stripe's order."""
        id = id or self._id("price")
        self._add(
            "prices", id=id, created=LONG_AGO, product="prod_1", currency=currency, active=True,
            type="recurring" if interval else "one_time", billing_scheme=scheme, tiers_mode=tiers_mode,
            unit_amount=unit_amount,
            unit_amount_decimal=Decimal(unit_amount_decimal) if unit_amount_decimal is not None
            else (Decimal(unit_amount) if unit_amount is not None else None),
            recurring_interval=interval, recurring_interval_count=interval_count if interval else None,
            recurring_usage_type=usage_type if interval else None,
            transform_quantity_divide_by=divide_by, transform_quantity_round=round, deleted=False,
        )
        for index, (up_to, unit, flat) in enumerate(tiers or []):
            self._add("price_tiers", price=id, tier_index=index, up_to=up_to, unit_amount=unit,
                      unit_amount_decimal=Decimal(unit), flat_amount=flat, flat_amount_decimal=Decimal(flat))
        return id

    def subscription(self, items: list[tuple[str, int]] | None = None, id: str | None = None,
                     customer: str = "cus_1", status: str = "active", currency: str = "usd",
                     start: dt.datetime = LONG_AGO, **fields: Any) -> str:
        """items: (price id, quantity); each becomes a subscription item `si_<sub>_<n>`."""
        id = id or self._id("sub")
        self._add(
            "subscriptions", id=id, customer=customer, status=status, currency=currency, created=start,
            start_date=start, cancel_at_period_end=fields.pop("cancel_at_period_end", False), livemode=False,
            **fields,
        )
        for n, (price, quantity) in enumerate(items or [], start=1):
            self.item(id, price, quantity, id=f"si_{id}_{n}", created=start)
        return id

    def item(self, subscription: str, price: str, quantity: int | None = 1, id: str | None = None,
             created: dt.datetime = LONG_AGO) -> str:
        id = id or self._id("si")
        self._add("subscription_items", id=id, subscription=subscription, price=price, quantity=quantity,
                  created=created)
        return id

    def coupon(self, id: str | None = None, percent_off: str | None = None, amount_off: int | None = None,
               duration: str = "forever", currency: str | None = None, duration_in_months: int | None = None) -> str:
        id = id or self._id("coupon")
        self._add("coupons", id=id, created=LONG_AGO, percent_off=Decimal(percent_off) if percent_off else None,
                  amount_off=amount_off, currency=currency or ("usd" if amount_off is not None else None),
                  duration=duration, duration_in_months=duration_in_months, valid=True, deleted=False)
        return id

    def discount(self, coupon: str, scope: str, target: str, start: dt.datetime = LONG_AGO,
                 end: dt.datetime | None = None, id: str | None = None) -> str:
        id = id or self._id("di")
        self._add("discounts", id=id, scope=scope, target=target, coupon=coupon, start=start, end=end,
                  subscription=target if scope == "subscription" else None,
                  subscription_item=target if scope == "subscription_item" else None,
                  customer=target if scope == "customer" else None)
        return id

    def invoice_line(self, subscription: str, price: str, start: dt.datetime, end: dt.datetime,
                     quantity: int = 1, amount: int = 0, item: str | None = None, proration: bool = False,
                     currency: str = "usd", invoice: str | None = None, type: str = "subscription") -> str:
        """type "subscription": a line under `parent.subscription_item_details`; "invoiceitem": one under
        `parent.invoice_item_details` (a proration invoice item: names the subscription, not its item)."""
        id = self._id("il")
        self._add("invoice_lines", id=id, invoice=invoice or self._id("in"), customer="cus_1", type=type,
                  subscription=subscription, subscription_item=item, price=price, quantity=quantity, amount=amount,
                  currency=currency, period_start=start, period_end=end, proration=proration)
        return id

    def pending_item(self, subscription: str, price: str, start: dt.datetime, end: dt.datetime, amount: int,
                     quantity: int = 1, item: str | None = None, currency: str = "usd") -> str:
        """A pending proration invoice item (/v1/invoiceitems?pending=true), not on any invoice yet."""
        id = self._id("ii")
        self._add("invoice_items", id=id, customer="cus_1", subscription=subscription, subscription_item=item,
                  price=price, quantity=quantity, amount=amount, currency=currency, date=start, period_start=start,
                  period_end=end, proration=True, invoice=None)
        return id

    def event(self, subscription: str, created: dt.datetime, data_object: dict[str, Any],
              previous_attributes: dict[str, Any] | None, type: str = "customer.subscription.updated") -> str:
        id = self._id("evt")
        self._add("events", id=id, type=type, created=created, api_version="2024-06-20",
                  object_type="subscription", object_id=subscription,
                  previous_attributes=json.dumps(previous_attributes) if previous_attributes is not None else None,
                  data_object=json.dumps({"id": subscription, "object": "subscription", **data_object}))
        return id

    def snapshot(self, day: dt.date, subscription: str, mrr: str, customer: str = "cus_1",
                 currency: str = "usd") -> None:
        value = Decimal(mrr)
        self.snapshots.append({"integration": self.integration, "date": day, "subscription": subscription,
                               "customer": customer, "currency": currency, "mrr": value,
                               "mrr_num": Decimal(int(value * 100)), "mrr_den": Decimal(100)})

    def frame(self, table: str) -> pl.DataFrame:
        return pl.from_arrow(pa.Table.from_pylist(self.rows[table], schema=TABLES[table]))

    def inputs(self) -> mrr.MrrInputs:
        return mrr.MrrInputs(
            **{name: self.frame(name) for name in INPUT_TABLES},
            snapshots=pl.DataFrame(self.snapshots, schema=mrr.SNAPSHOT_SCHEMA),
        )


def movement_story(account: Account) -> None:
    """One customer: new on the 10th, churned on the 12th, back (reactivation) on the 13th, a second
    subscription (expansion) on the 14th that ends (contraction) on the 15th; another customer's 1.00 all along."""
    ten, twenty, five = (account.price(unit_amount=a) for a in (1000, 2000, 500))
    account.subscription([(ten, 1)], status="canceled", start=at("2024-06-10", 9),
                         canceled_at=at("2024-06-12", 10), ended_at=at("2024-06-12", 10))
    account.subscription([(twenty, 1)], start=at("2024-06-13", 9))
    account.subscription([(five, 1)], status="canceled", start=at("2024-06-14", 9),
                         canceled_at=at("2024-06-15", 8), ended_at=at("2024-06-15", 8))
    account.subscription([(account.price(unit_amount=100), 1)], customer="cus_2", start=at("2024-06-11"))
