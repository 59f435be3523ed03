"""An independent computation of today's MRR per currency straight from the live API objects (via the SDK).

Deliberately simple and separate from `transform/`: it reads today's state only, with MRR_SPEC.md's default
options, so it can judge the pipeline's last row.
"""

from collections import defaultdict
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import stripe

ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
MONTHLY = {"month": Decimal(1), "year": Decimal(1) / 12, "week": Decimal(52) / 12, "day": Decimal(365) / 12}


def _minor(currency: str) -> Decimal:
    return Decimal(1) if currency in ZERO_DECIMAL else Decimal(1000) if currency in THREE_DECIMAL else Decimal(100)


def _item_amount(price: dict, quantity: int, tiers: dict[str, list]) -> Decimal:
    recurring = price.get("recurring")
    if not recurring or recurring.get("usage_type") == "metered":
        return Decimal(0)
    if price["billing_scheme"] == "tiered":
        rows = tiers[price["id"]]
        if price["tiers_mode"] == "volume":
            tier = next(t for t in rows if t["up_to"] is None or quantity <= t["up_to"])
            amount = Decimal(tier["unit_amount_decimal"] or 0) * quantity + Decimal(tier["flat_amount_decimal"] or 0)
        else:
            amount, below = Decimal(0), 0
            for t in rows:
                top = quantity if t["up_to"] is None else min(quantity, t["up_to"])
                if top > below:
                    amount += Decimal(t["unit_amount_decimal"] or 0) * (top - below) + Decimal(t["flat_amount_decimal"] or 0)
                below = top if t["up_to"] is not None else below
                if t["up_to"] is None or quantity <= t["up_to"]:
                    break
    else:
        transform = price.get("transform_quantity")
        if transform:
            q = Decimal(quantity) / transform["divide_by"]
            quantity = int(q.to_integral_value(ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR))
        amount = Decimal(price["unit_amount_decimal"]) * quantity
    return amount * MONTHLY[recurring["interval"]] / recurring["interval_count"]


def _forever(discount, coupons: dict) -> dict | None:
    if isinstance(discount, str) or discount is None:
        return None
    source = discount.get("source") or {}
    coupon = source.get("coupon") if source else discount.get("coupon")
    coupon = coupons.get(coupon) if isinstance(coupon, str) else coupon
    return coupon if coupon and coupon.get("duration") == "forever" else None


def _apply(amount: Decimal, coupon: dict | None, interval_factor: Decimal, currency: str) -> Decimal:
    if coupon is None:
        return amount
    if coupon.get("percent_off") is not None:
        return amount * (1 - Decimal(str(coupon["percent_off"])) / 100)
    if coupon.get("amount_off") is not None and coupon.get("currency") == currency:
        return max(Decimal(0), amount - Decimal(coupon["amount_off"]) * interval_factor)
    return amount


def mrr_today(client: stripe.StripeClient, now: int) -> dict[str, Decimal]:
    def all_of(path, **params):
        out, after = [], None
        while True:
            page = client.raw_request("get", path, limit=100, **params,
                                      **({"starting_after": after} if after else {})).data
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["data"][-1]["id"]

    tiers = {p["id"]: p.get("tiers") or [] for p in all_of("/v1/prices", expand=["data.tiers"])}
    coupons = {c["id"]: c for c in all_of("/v1/coupons")}
    customers = {c["id"]: c for c in all_of("/v1/customers")}
    per_customer: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for sub in all_of("/v1/subscriptions", status="all", expand=["data.discounts", "data.items.data.discounts"]):
        status = sub["status"]
        counting = status in ("active", "past_due") or (status == "trialing" and (sub["trial_end"] or 0) <= now)
        if sub.get("cancel_at_period_end") or sub.get("cancel_at"):
            counting = counting and not (sub.get("canceled_at") and sub["canceled_at"] <= now)
        if not counting:
            continue
        currency = sub["currency"]
        sub_coupon = next((c for c in (_forever(d, coupons) for d in sub.get("discounts") or []) if c), None)
        if not sub.get("discounts"):
            sub_coupon = _forever((customers.get(sub["customer"]) or {}).get("discount"), coupons)
        total, factor = Decimal(0), None
        for item in sub["items"]["data"]:
            price = item["price"]
            amount = _item_amount(price, item.get("quantity") or 0, tiers)
            item_coupon = next((c for c in (_forever(d, coupons) for d in item.get("discounts") or []) if c), None)
            recurring = price.get("recurring") or {}
            f = MONTHLY.get(recurring.get("interval"), Decimal(0)) / (recurring.get("interval_count") or 1)
            factor = factor or f
            total += _apply(amount, item_coupon, f, currency)
        total = _apply(total, sub_coupon, factor or Decimal(1), currency)
        per_customer[(sub["customer"], currency)] += max(total, Decimal(0)) / _minor(currency)
    result: dict[str, Decimal] = defaultdict(Decimal)
    for (customer, currency), value in per_customer.items():
        result[currency] += value.quantize(Decimal("0.01"), ROUND_HALF_UP)
    return dict(result)
