"""What the simulation draws from: customer names and places, subscription families and final outcomes, and the
scenario of each subscription (`random_plan`), plus the scenarios every account of 40 subscriptions or more has
(`forced_plans`), so tests always find each case. Plain data and rng draws, no account state.
"""

from __future__ import annotations

import random
from typing import Any

from stripe_sandbox._time import DAY

FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elena", "Farah", "Gus", "Hana", "Ivan", "Jun", "Kira", "Liam", "Mia", "Noah",
         "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Xavi", "Yuki", "Zoe"]
LAST = ["Smith", "Müller", "Tanaka", "Garcia", "Rossi", "Dubois", "Kim", "Nguyen", "Olsen", "Novak", "Silva",
        "Cohen", "Sato", "Brown", "Fischer", "Martin", "Lopez", "Kowalski", "Ito", "Jensen"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell", "Cyberdyne",
           "Soylent", "Gringotts", "Oscorp", "Wonka", "Aperture", "Massive", "Pied Piper", "Dunder", "Nakatomi"]
SUFFIX = ["Labs", "GmbH", "Inc.", "Ltd", "KK", "SAS", "Studio", "Analytics", "Cloud", "Health", "Logistics"]
PLACES = {"usd": [("US", "San Francisco"), ("US", "Austin"), ("US", "New York"), ("CA", "Toronto")],
          "eur": [("DE", "Berlin"), ("FR", "Paris"), ("NL", "Amsterdam"), ("ES", "Madrid"), ("IE", "Dublin")],
          "jpy": [("JP", "Tokyo"), ("JP", "Osaka")]}

# Subscription families: (currency, interval, interval_count) and their share of new subscriptions.
FAMILIES = [(("usd", "month", 1), 48), (("usd", "year", 1), 12), (("usd", "month", 3), 2), (("usd", "week", 1), 1),
            (("eur", "month", 1), 15), (("eur", "year", 1), 6), (("jpy", "month", 1), 11), (("jpy", "year", 1), 5)]
# Final statuses and their shares. A pending cancellation was requested during the current period, so its share is
# about one period's worth of the cancellations at period end spread over the whole history (a larger share piles
# churn into the most recent month, which real accounts do not show).
OUTCOMES = [("active", 60), ("canceled_now", 8), ("canceled_end", 12), ("cancel_pending", 1), ("past_due", 4),
            ("unpaid", 2), ("incomplete", 1), ("incomplete_expired", 2), ("paused", 2)]


def random_plan(rng: random.Random, can_reactivate: bool) -> dict[str, Any]:
    """A random subscription's scenario: family, final outcome, trial, add-ons, coupons, changes.

    `can_reactivate`: an ended subscription's customer is available to come back."""
    fam = rng.choices([f for f, _ in FAMILIES], [w for _, w in FAMILIES])[0]
    plan: dict[str, Any] = {"family": fam, "outcome": rng.choices([o for o, _ in OUTCOMES],
                                                                    [w for _, w in OUTCOMES])[0]}
    if rng.random() < 0.15:
        plan["imported"] = True
    plan["trial"] = rng.random() < 0.2
    if fam == ("usd", "month", 1):
        r = rng.random()
        if r < 0.04:
            plan["base"] = rng.choice(["Enterprise volume", "Enterprise graduated"])
        elif r < 0.07:
            plan["base"] = "Pro legacy 2023"
    if rng.random() < 0.25:
        plan["addons"] = rng.choice([1, 1, 2])
    if fam == ("usd", "month", 1):
        if rng.random() < 0.06:
            plan["metered"] = True
        if rng.random() < 0.03:
            plan["sms"] = True
        if rng.random() < 0.004:
            plan["addons"] = rng.randint(11, 14)
            plan["base"] = "Enterprise volume"
    r = rng.random()
    if r < 0.05:
        plan["coupon"] = "LAUNCH25"
    elif r < 0.07:
        plan["coupon"] = {"usd": "PARTNER10USD", "eur": "PARTNER5EUR", "jpy": "YEN1000"}[fam[0]]
    elif r < 0.10:
        plan["coupon"] = "WELCOME50"
    elif r < 0.13:
        plan["coupon"] = "SPRING20X3"
    if rng.random() < 0.03:
        plan["customer_coupon"] = "LOYALTY10"
    r = rng.random()
    if r < 0.25:
        plan["changes"] = [None]
    elif r < 0.35:
        plan["changes"] = [None, None]
    if rng.random() < 0.05 and can_reactivate:
        plan["reactivate"] = True
    if rng.random() < 0.02:
        plan["oneoff"] = True
    return plan


def forced_plans(now: int) -> list[dict[str, Any]]:
    """Scenarios every account has (even small ones), so tests always find each case."""
    d, m = DAY, ("usd", "month", 1)
    return [
        {"family": m, "outcome": "active", "changes": [("upgrade", None)], "start": now - 200 * d},
        {"family": ("usd", "month", 1), "base": "Business", "qty": 8, "outcome": "active",
         "changes": [("qty_up", None), ("qty_down", None)], "start": now - 300 * d},
        {"family": m, "base": "Enterprise volume", "qty": 25, "addons": 14, "outcome": "active",
         "start": now - 150 * d},
        {"family": m, "outcome": "trialing", "trial": True, "start": now - 5 * d},
        {"family": m, "outcome": "active", "trial": True, "start": now - 60 * d},
        {"family": m, "outcome": "canceled_now", "start": now - 400 * d, "end_before": now - 100 * d},
        {"family": m, "outcome": "cancel_pending", "start": now - 100 * d},
        {"family": ("usd", "year", 1), "outcome": "canceled_end", "start": now - 500 * d},
        {"family": m, "outcome": "past_due", "start": now - 90 * d},
        {"family": m, "outcome": "unpaid", "start": now - 120 * d},
        {"family": m, "outcome": "incomplete", "start": now - 3 * 3600},
        {"family": m, "outcome": "incomplete_expired", "start": now - 40 * d},
        {"family": m, "outcome": "paused", "trial": True, "start": now - 50 * d},
        {"family": ("jpy", "month", 1), "base": "Pro", "outcome": "active", "start": now - 80 * d},
        {"family": ("eur", "year", 1), "base": "Business", "qty": 5, "addons": 1, "outcome": "active",
         "start": now - 420 * d},
        {"family": ("usd", "month", 3), "outcome": "active", "start": now - 250 * d},
        {"family": ("usd", "week", 1), "outcome": "active", "start": now - 70 * d},
        {"family": m, "base": "Enterprise volume", "qty": 15, "outcome": "active", "start": now - 95 * d},
        {"family": m, "base": "Enterprise graduated", "qty": 15, "outcome": "active", "start": now - 95 * d},
        {"family": m, "base": "Starter", "metered": True, "outcome": "active", "start": now - 130 * d},
        {"family": m, "sms": True, "outcome": "active", "start": now - 75 * d},
        {"family": m, "coupon": "LAUNCH25", "outcome": "active", "start": now - 210 * d},
        {"family": m, "coupon": "PARTNER10USD", "outcome": "active", "start": now - 190 * d},
        {"family": m, "coupon": "SPRING20X3", "outcome": "active", "start": now - 20 * d},
        {"family": m, "coupon": "WELCOME50", "outcome": "active", "start": now - 100 * d},
        {"family": m, "addons": 2, "item_coupon": "LAUNCH25", "outcome": "active", "start": now - 160 * d},
        {"family": m, "customer_coupon": "LOYALTY10", "outcome": "active", "start": now - 140 * d},
        {"family": m, "outcome": "active", "reactivate_of": 5, "start": now - 60 * d},
        {"family": m, "base": "Enterprise graduated", "qty": 12, "addons": 12, "oneoff": True,
         "outcome": "active", "start": now - 45 * d},
        {"family": m, "base": "Pro legacy 2023", "outcome": "active", "start": now - 700 * d},
        {"family": m, "base": "Starter", "outcome": "active", "changes": [("upgrade", now - 10 * d)],
         "start": now - 200 * d},
        {"family": m, "outcome": "cancel_pending", "cancel_request": now - 6 * d, "start": now - 300 * d},
        {"family": m, "base": "Pro", "outcome": "active", "changes": [("downgrade", now - 12 * d)],
         "start": now - 180 * d},
        {"family": m, "base": "Business", "qty": 20, "outcome": "active",
         "changes": [("qty_up", now - 4 * d)], "start": now - 240 * d},
        {"family": m, "outcome": "canceled_now", "start": now - 200 * d, "end_at": now - 8 * d},
        {"family": ("eur", "month", 1), "outcome": "active", "trial": True, "start": now - 25 * d},
        # Changes older than the event window that only invoices (or pending invoice items) date, in both
        # shapes Stripe renders proration lines in:
        # a yearly upgrade mid-year, invoiced at once (proration_behavior=always_invoice)
        {"family": ("usd", "year", 1), "base": "Starter", "outcome": "active", "parent": "invoice_item_details",
         "changes": [("upgrade", now - 100 * d)], "start": now - 230 * d},
        {"family": ("eur", "year", 1), "base": "Starter", "outcome": "active",
         "parent": "subscription_item_details", "changes": [("upgrade", now - 120 * d)], "start": now - 200 * d},
        # a monthly upgrade and a seat change
        {"family": m, "base": "Starter", "outcome": "active", "parent": "invoice_item_details",
         "changes": [("upgrade", now - 45 * d)], "start": now - 200 * d},
        {"family": m, "base": "Business", "qty": 10, "outcome": "active", "parent": "invoice_item_details",
         "changes": [("qty_up", now - 52 * d)], "start": now - 170 * d},
        # downgrades left as pending prorations (create_prorations) until the next renewal, months away
        {"family": ("usd", "year", 1), "base": "Business", "qty": 6, "outcome": "active",
         "parent": "invoice_item_details", "changes": [("downgrade", now - 90 * d)], "start": now - 300 * d},
        {"family": ("jpy", "year", 1), "base": "Pro", "outcome": "active", "parent": "subscription_item_details",
         "changes": [("qty_down", now - 60 * d), ("downgrade", now - 40 * d)], "start": now - 280 * d},
        # schedule phases: a new price from a renewal on, before and inside the event window
        {"family": m, "base": "Starter", "outcome": "active", "changes": [("phase:upgrade", now - 75 * d)],
         "start": now - 160 * d},
        {"family": m, "base": "Pro", "outcome": "active", "changes": [("phase:downgrade", now - 14 * d)],
         "start": now - 130 * d},
        # proration_behavior=none mid-period: in the current yearly period and in an older monthly one, before
        # the event window (nothing dates them), and inside it (the event does)
        {"family": ("usd", "year", 1), "base": "Business", "qty": 5, "outcome": "active",
         "changes": [("none:qty_up", now - 100 * d)], "start": now - 250 * d},
        {"family": m, "base": "Business", "qty": 8, "outcome": "active",
         "changes": [("none:qty_up", now - 70 * d)], "start": now - 200 * d},
        {"family": m, "base": "Pro", "outcome": "active", "changes": [("none:downgrade", now - 8 * d)],
         "start": now - 90 * d},
    ]
