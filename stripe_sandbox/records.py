"""The sandbox account's records: Stripe-looking ids and the compact objects generation writes and rendering reads.

Subscriptions keep every version of their mutable attributes (`State`), so an event can render the subscription as
it was; `Segment`s are the item history tests compute expected MRR from. Records hold indexes into the account's
lists (prices, discounts, customers) rather than objects, which keeps accounts of 100k subscriptions small.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from stripe_sandbox._time import DAY

EVENT_WINDOW_S = 30 * DAY  # Stripe keeps events for 30 days.

_ALPHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PAIRS = [a + b for a in _ALPHA for b in _ALPHA]  # the 3,844 two-character base-62 digits, in order
_B62_8 = 62**8


def b62(n: int, pairs: int) -> str:
    """`n` in base 62, written with `pairs` two-character digits."""
    out = []
    for _ in range(pairs):
        n, r = divmod(n, 3844)
        out.append(PAIRS[r])
    return "".join(reversed(out))


class Ids:
    """Stripe-looking ids: a time part (so ids sort roughly by creation, as Stripe's do), an account tag, and a
    scrambled counter. Deterministic for a seed."""

    def __init__(self, rng: random.Random) -> None:
        self.tag = "".join(rng.choice(_ALPHA) for _ in range(10))
        self.n = rng.randrange(_B62_8)

    def long(self, prefix: str, t: int) -> str:
        n = self.n = (self.n + 0x2545F4914F6CDD1D) % _B62_8
        P = PAIRS
        return (f"{prefix}_{P[t // 14776336 % 3844]}{P[t // 3844 % 3844]}{P[t % 3844]}{self.tag}"
                f"{P[n // 56800235584 % 3844]}{P[n // 14776336 % 3844]}{P[n // 3844 % 3844]}{P[n % 3844]}")

    def short(self, prefix: str, t: int) -> str:
        n = self.n = (self.n + 0x2545F4914F6CDD1D) % _B62_8
        P = PAIRS
        return (f"{prefix}_{P[t // 14776336 % 3844]}{P[t // 3844 % 3844]}{P[t % 3844]}"
                f"{P[n // 56800235584 % 3844]}{P[n // 14776336 % 3844]}{P[n // 3844 % 3844]}{P[n % 3844]}")


class Segment(NamedTuple):
    """One item of a subscription at one price and quantity during [start, end) (end None: still running)."""

    subscription: str
    item: str
    price: str
    quantity: int | None
    start: int
    end: int | None


class Item(NamedTuple):
    id: str
    price: int  # price index
    quantity: int | None
    created: int


class State(NamedTuple):
    """A subscription's mutable attributes from time `t` on; `event` is the event type that announced it."""

    t: int
    event: str | None
    changed: tuple[str, ...]
    status: str
    items: tuple[Item, ...]
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    latest_invoice: str | None
    reason: str | None
    discounts: tuple[int, ...]  # subscription-level discount indices in effect
    request: str | None


class Sub:
    __slots__ = ("idx", "id", "customer", "currency", "clock", "start", "created", "trial_start", "trial_end",
                 "versions", "item_discounts", "end_behavior", "pm", "feedback")

    def __init__(self) -> None:
        self.item_discounts: dict[str, int] = {}


class Line(NamedTuple):
    id: str
    kind: str  # sub | trial | metered | proration_credit | proration_charge | oneoff
    item: str | None
    price: int
    quantity: int | None
    amount: int
    start: int
    end: int
    invoice_item: str | None
    discount_amounts: tuple[tuple[int, str], ...]
    change_at: int


class Invoice:
    __slots__ = ("idx", "id", "created", "customer", "sub", "currency", "reason", "status", "period_start",
                 "period_end", "lines", "number", "finalized_at", "paid_at", "voided_at", "discounts",
                 "total_discounts", "subtotal", "total", "attempts")


class Customer:
    __slots__ = ("idx", "id", "created", "name", "email", "country", "city", "currency", "discount", "prefix",
                 "seq", "delinquent", "pm", "phone")


class Discount(NamedTuple):
    id: str
    coupon: str
    customer: str
    subscription: str | None
    subscription_item: str | None
    start: int
    end: int | None


class Event(NamedTuple):
    created: int
    id: str
    type: str
    kind: str  # sub | invoice | customer
    ref: int
    version: int
    request: str | None
