"""The sandbox company's price book: products, prices and coupons, and Stripe's arithmetic on them.

A SaaS catalogue with the pricing features a sync must handle: monthly, yearly, quarterly and weekly prices in
usd, eur and jpy (zero-decimal), per-seat quantities, tiered volume and graduated prices, a metered price, a price
with `transform_quantity`, a one-time fee, an inactive legacy price, and coupons of every duration. Pure data and
math, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stripe_sandbox._time import DAY

if TYPE_CHECKING:
    from stripe_sandbox.account import SandboxAccount

# Stripe's zero-decimal currencies (amounts carry no minor unit).
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
CURRENCY_SYMBOL = {"usd": "$", "eur": "€", "jpy": "¥"}


@dataclass
class Price:
    idx: int
    id: str
    product: str  # product id
    product_name: str
    currency: str
    interval: str | None  # None for one_time prices
    interval_count: int
    unit_amount: int | None
    billing_scheme: str = "per_unit"
    tiers_mode: str | None = None
    tiers: list[tuple[int | None, int | None, int | None]] = field(default_factory=list)  # (up_to, unit, flat)
    usage_type: str = "licensed"
    meter: str | None = None
    transform: tuple[int, str] | None = None  # (divide_by, round)
    nickname: str | None = None
    lookup_key: str | None = None
    active: bool = True
    created: int = 0
    family: str = ""  # "base", "addon", "usage", "fee"
    tier_rank: int = 0  # order of base plans for upgrades/downgrades
    seats: bool = False

    @property
    def type(self) -> str:
        return "one_time" if self.interval is None else "recurring"

    def amount(self, quantity: int) -> int:
        """Amount per billing period for `quantity`, in minor units, as Stripe computes it (tax excluded)."""
        if self.billing_scheme == "tiered":
            return tiered_amount(self.tiers_mode or "volume", self.tiers, quantity)
        unit = self.unit_amount or 0
        if self.transform:
            divide_by, rounding = self.transform
            packs = quantity / divide_by
            packs_i = math.ceil(packs) if rounding == "up" else math.floor(packs)
            return unit * packs_i
        return unit * quantity


def tiered_amount(mode: str, tiers: list[tuple[int | None, int | None, int | None]], quantity: int) -> int:
    """Stripe's tier evaluation: `volume` prices every unit at the tier the quantity falls in, `graduated` sums
    each tier's share; a tier's flat_amount is added once when the tier is reached."""
    if mode == "volume":
        for up_to, unit, flat in tiers:
            if up_to is None or quantity <= up_to:
                return (unit or 0) * quantity + (flat or 0)
        return 0
    total = 0
    lower = 0
    for up_to, unit, flat in tiers:
        if quantity <= lower:
            break
        upper = quantity if up_to is None else min(quantity, up_to)
        total += (unit or 0) * (upper - lower) + (flat or 0)
        lower = upper if up_to is None else up_to
    return total


@dataclass
class Product:
    idx: int
    id: str
    name: str
    description: str
    created: int
    unit_label: str | None = None
    default_price: str | None = None
    active: bool = True
    updated: int = 0


@dataclass
class Coupon:
    id: str
    name: str
    duration: str  # forever | once | repeating
    percent_off: float | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration_in_months: int | None = None
    created: int = 0
    times_redeemed: int = 0


def money(amount: int, currency: str) -> str:
    """`$49.00`, `€17.00`, `¥5,000`: how Stripe writes an amount on an invoice line."""
    symbol = CURRENCY_SYMBOL.get(currency, currency.upper() + " ")
    if currency in ZERO_DECIMAL:
        return f"{symbol}{amount:,}"
    return f"{symbol}{amount / 100:,.2f}"


# Base plans: (name, description, rank, seats, {(currency, interval, interval_count): unit_amount})
BASE_PLANS = [
    ("Starter", "For individuals and small teams getting started.", 1, False, {
        ("usd", "month", 1): 1900, ("usd", "year", 1): 19000, ("usd", "week", 1): 500,
        ("eur", "month", 1): 1700, ("eur", "year", 1): 17000,
        ("jpy", "month", 1): 2500, ("jpy", "year", 1): 25000,
    }),
    ("Pro", "Everything in Starter plus automations and integrations.", 2, False, {
        ("usd", "month", 1): 4900, ("usd", "year", 1): 49000, ("usd", "month", 3): 13500,
        ("eur", "month", 1): 4500, ("eur", "year", 1): 45000,
        ("jpy", "month", 1): 5000, ("jpy", "year", 1): 50000,
    }),
    ("Business", "Per-seat plan with SSO and audit logs.", 3, True, {
        ("usd", "month", 1): 1500, ("usd", "year", 1): 15000,
        ("eur", "month", 1): 1400, ("eur", "year", 1): 14000,
        ("jpy", "month", 1): 2000,
    }),
]

ADDONS = [
    ("Extra seat", 1000), ("Priority support", 4900), ("SSO", 2900), ("Audit log", 1900), ("Data retention 3y", 2500),
    ("Sandbox environment", 1500), ("Advanced analytics", 3900), ("Custom domain", 900), ("Storage 100 GB", 1200),
    ("Workflow automation", 2900), ("White labeling", 9900), ("Dedicated IP", 4900), ("Premium SLA", 14900),
    ("Compliance pack", 5900), ("Training hours", 7500), ("Team inbox", 1900),
]
# The add-ons also sold in eur monthly and in usd yearly (same interval and currency as the base is required).
ADDONS_EUR = ("Extra seat", "Priority support", "SSO", "Audit log")
ADDONS_USD_YEAR = ("Extra seat", "Priority support", "SSO", "Advanced analytics")

# Enterprise tiers (per seat per month, usd). The worked examples of the MRR spec use the first two tiers.
VOLUME_TIERS = [(10, 500, None), (50, 400, None), (None, 300, None)]
GRADUATED_TIERS = [(10, 500, 20000), (None, 400, None)]

COUPONS = [
    Coupon("LAUNCH25", "25% off forever", "forever", percent_off=25.0),
    Coupon("PARTNER10USD", "$10 off forever", "forever", amount_off=1000, currency="usd"),
    Coupon("PARTNER5EUR", "€5 off forever", "forever", amount_off=500, currency="eur"),
    Coupon("WELCOME50", "50% off first invoice", "once", percent_off=50.0),
    Coupon("SPRING20X3", "20% off for 3 months", "repeating", percent_off=20.0, duration_in_months=3),
    Coupon("LOYALTY10", "10% loyalty discount", "forever", percent_off=10.0),
    Coupon("YEN1000", "¥1,000 off forever", "forever", amount_off=1000, currency="jpy"),
]


def add_price_book(a: SandboxAccount) -> None:
    """Create the account's products, prices and coupons, as set up three years before its `now`."""
    ids = a.ids
    t0 = a.now - 1095 * DAY + 1234  # the catalogue was set up three years ago, in one script run
    products: list[Product] = a.products
    prices: list[Price] = a.prices

    def product(name: str, desc: str, created: int, unit_label: str | None = None) -> Product:
        p = Product(len(products), ids.short("prod", created), name, desc, created, unit_label,
                    updated=created)
        products.append(p)
        return p

    def price(prod: Product, currency: str, interval: str | None, count: int, unit: int | None,
              created: int, **kw: Any) -> Price:
        p = Price(len(prices), ids.long("price", created), prod.id, prod.name, currency, interval, count,
                  unit, created=created, **kw)
        prices.append(p)
        if prod.default_price is None:
            prod.default_price = p.id
        prod.updated = max(prod.updated, created)
        return p

    for name, desc, rank, seats, amounts in BASE_PLANS:
        prod = product(name, desc, t0, "seat" if seats else None)
        for (cur, interval, count), amount in amounts.items():
            key = f"{name.lower()}_{cur}_{interval}{count if count > 1 else ''}"
            price(prod, cur, interval, count, amount, t0, family="base", tier_rank=rank, seats=seats,
                  lookup_key=key)
    pro = products[1]
    # A grandfathered price: inactive, still billed on old subscriptions.
    price(pro, "usd", "month", 1, 3900, t0 - 200 * DAY, family="legacy", tier_rank=2, active=False,
          nickname="Pro legacy 2023")
    ent = product("Enterprise", "Volume pricing per seat with a platform fee.", t0 + 60 * DAY, "seat")
    price(ent, "usd", "month", 1, None, t0 + 60 * DAY, family="enterprise", billing_scheme="tiered",
          tiers_mode="volume", tiers=list(VOLUME_TIERS), nickname="Enterprise volume", seats=True)
    price(ent, "usd", "month", 1, None, t0 + 60 * DAY, family="enterprise", billing_scheme="tiered",
          tiers_mode="graduated", tiers=list(GRADUATED_TIERS), nickname="Enterprise graduated",
          seats=True)
    addon_t = t0 + 90 * DAY
    for name, amount in ADDONS:
        prod = product(name, f"Add-on: {name}.", addon_t, "seat" if name == "Extra seat" else None)
        price(prod, "usd", "month", 1, amount, addon_t, family="addon")
        if name in ADDONS_EUR:
            price(prod, "eur", "month", 1, amount * 9 // 10, addon_t, family="addon")
        if name in ADDONS_USD_YEAR:
            price(prod, "usd", "year", 1, amount * 10, addon_t, family="addon")
    api = product("API usage", "Metered API calls, billed monthly in arrears.", t0 + 200 * DAY)
    price(api, "usd", "month", 1, 2, t0 + 200 * DAY, family="usage", usage_type="metered",
          meter="mtr_" + ids.tag + "apicalls", nickname="API calls")
    sms = product("SMS notifications", "Billed per pack of 100 messages.", t0 + 250 * DAY)
    price(sms, "usd", "month", 1, 1000, t0 + 250 * DAY, family="usage", transform=(100, "up"),
          nickname="SMS packs")
    fee = product("Implementation fee", "One-time onboarding and implementation.", t0 + 10 * DAY)
    price(fee, "usd", None, 1, 50000, t0 + 10 * DAY, family="fee", nickname="Implementation fee")
    for k, c in enumerate(COUPONS):
        coupon = Coupon(**{**c.__dict__})
        coupon.created = t0 + 30 * DAY + k * 86400 * 40
        a.coupons.append(coupon)
