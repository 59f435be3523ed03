"""Stripe's shapes of the account's catalogue and customer objects (current API version): prices and their legacy
plan view, products, coupons, discounts, customers, the account and its balance.

A mixin of `SandboxAccount` (it reads the account's lists and id maps); the key sets are those of Stripe's own
fixtures for `API_VERSION`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_sandbox import catalog as cat
from stripe_sandbox._time import DAY
from stripe_sandbox.records import Customer

if TYPE_CHECKING:
    from stripe_sandbox.account import SandboxAccount

# The API version whose object shapes this account renders (Stripe's fixtures for it define the key sets).
API_VERSION = "2026-10-28.endive"


class CatalogObjects:
    """Renderers of catalogue, customer and account objects, mixed into `SandboxAccount`."""

    def price_dict(self, p: cat.Price, tiers: bool = False, product: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": p.id,
            "object": "price",
            "active": p.active,
            "billing_scheme": p.billing_scheme,
            "created": p.created,
            "currency": p.currency,
            "custom_unit_amount": None,
            "livemode": self.livemode,
            "lookup_key": p.lookup_key,
            "metadata": {},
            "nickname": p.nickname,
            "product": self.product_dict(self.products[self._product_pos[p.product]]) if product else p.product,
            "recurring": None if p.interval is None else {
                "interval": p.interval,
                "interval_count": p.interval_count,
                "meter": p.meter,
                "trial_period_days": None,
                "usage_type": p.usage_type,
            },
            "tax_behavior": "exclusive",
            "tiers_mode": p.tiers_mode,
            "transform_quantity": None if p.transform is None else {
                "divide_by": p.transform[0], "round": p.transform[1]},
            "type": p.type,
            "unit_amount": p.unit_amount,
            "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
        }
        if tiers and p.billing_scheme == "tiered":
            # `tiers` is an includable property: only present when expanded, as in Stripe.
            d["tiers"] = [
                {"flat_amount": flat, "flat_amount_decimal": None if flat is None else str(flat),
                 "unit_amount": unit, "unit_amount_decimal": None if unit is None else str(unit), "up_to": up_to}
                for up_to, unit, flat in p.tiers
            ]
        elif tiers:
            d["tiers"] = None
        return d

    def plan_dict(self, p: cat.Price) -> dict[str, Any]:
        # The legacy Plan view of a recurring price, still embedded in subscription items.
        return {
            "id": p.id,
            "object": "plan",
            "active": p.active,
            "amount": p.unit_amount,
            "amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            "billing_scheme": p.billing_scheme,
            "created": p.created,
            "currency": p.currency,
            "interval": p.interval,
            "interval_count": p.interval_count,
            "livemode": self.livemode,
            "metadata": {},
            "meter": p.meter,
            "nickname": p.nickname,
            "product": p.product,
            "tiers_mode": p.tiers_mode,
            "transform_usage": None if p.transform is None else {
                "divide_by": p.transform[0], "round": p.transform[1]},
            "trial_period_days": None,
            "usage_type": p.usage_type,
        }

    def product_dict(self, p: cat.Product) -> dict[str, Any]:
        return {
            "id": p.id,
            "object": "product",
            "active": p.active,
            "created": p.created,
            "default_price": p.default_price,
            "description": p.description,
            "images": [],
            "livemode": self.livemode,
            "marketing_features": [],
            "metadata": {},
            "name": p.name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": "txcd_10103001",
            "type": "service",
            "unit_label": p.unit_label,
            "updated": p.updated,
            "url": None,
        }

    def coupon_dict(self, c: cat.Coupon) -> dict[str, Any]:
        return {
            "id": c.id,
            "object": "coupon",
            "amount_off": c.amount_off,
            "created": c.created,
            "currency": c.currency,
            "duration": c.duration,
            "duration_in_months": c.duration_in_months,
            "livemode": self.livemode,
            "max_redemptions": None,
            "metadata": {},
            "name": c.name,
            "percent_off": c.percent_off,
            "redeem_by": None,
            "times_redeemed": c.times_redeemed,
            "valid": True,
        }

    def discount_dict(self, di: int, coupon_object: bool = False) -> dict[str, Any]:
        d = self.discounts[di]
        coupon: Any = d.coupon
        if coupon_object:
            coupon = self.coupon_dict(self.coupons[self._coupon_pos[d.coupon]])
        return {
            "id": d.id,
            "object": "discount",
            "checkout_session": None,
            "customer": d.customer,
            "customer_account": None,
            "end": d.end,
            "invoice": None,
            "invoice_item": None,
            "promotion_code": None,
            "source": {"coupon": coupon, "type": "coupon"},
            "start": d.start,
            "subscription": d.subscription,
            "subscription_item": d.subscription_item,
        }

    def customer_dict(self, c: Customer, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        discount = None
        if c.discount is not None:
            discount = self.discount_dict(c.discount, "discount.source.coupon" in variant)
        return {
            "id": c.id,
            "object": "customer",
            "address": {"city": c.city, "country": c.country, "line1": "1 Market Street", "line2": None,
                        "postal_code": "10001", "state": None},
            "balance": 0,
            "created": c.created,
            "currency": c.currency,
            "default_source": None,
            "delinquent": c.delinquent,
            "description": None,
            "discount": discount,
            "email": c.email,
            "invoice_prefix": c.prefix,
            "invoice_settings": {"custom_fields": None, "default_payment_method": c.pm, "footer": None,
                                 "rendering_options": None},
            "livemode": self.livemode,
            "metadata": {},
            "name": c.name,
            "next_invoice_sequence": c.seq + 1,
            "phone": c.phone,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def account_dict(self) -> dict[str, Any]:
        return _account_object(self)

    def balance_dict(self) -> dict[str, Any]:
        currencies = sorted({s.currency for s in self.subs}) or ["usd"]
        return {
            "object": "balance",
            "available": [{"amount": 0, "currency": c, "source_types": {"card": 0}} for c in currencies],
            "connect_reserved": [{"amount": 0, "currency": c} for c in currencies],
            "livemode": self.livemode,
            "pending": [{"amount": 0, "currency": c, "source_types": {"card": 0}} for c in currencies],
        }


def _account_object(acct: SandboxAccount) -> dict[str, Any]:
    req = {"alternatives": [], "current_deadline": None, "currently_due": [], "disabled_reason": None,
           "errors": [], "eventually_due": [], "past_due": [], "pending_verification": []}
    return {
        "id": acct.account_id,
        "object": "account",
        "business_profile": {
            "annual_revenue": None, "estimated_worker_count": 40, "mcc": "5734",
            "minority_owned_business_designation": None, "name": acct.name,
            "product_description": "Workflow software for teams", "support_address": None,
            "support_email": "support@sandbox.segflow.example", "support_phone": None,
            "support_url": None, "url": "https://sandbox.segflow.example",
        },
        "business_type": "company",
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": {"type": "account"},
        "country": "US",
        "created": acct.now - 1100 * DAY,
        "default_currency": "usd",
        "details_submitted": True,
        "email": "billing@sandbox.segflow.example",
        "external_accounts": {"object": "list", "data": [], "has_more": False,
                              "url": f"/v1/accounts/{acct.account_id}/external_accounts"},
        "future_requirements": dict(req),
        "metadata": {},
        "payouts_enabled": True,
        "requirements": dict(req),
        "settings": {
            "bacs_debit_payments": {"display_name": None, "service_user_number": None},
            "branding": {"icon": None, "logo": None, "primary_color": None, "secondary_color": None},
            "card_issuing": {"tos_acceptance": {"date": None, "ip": None}},
            "card_payments": {"decline_on": {"avs_failure": False, "cvc_failure": True},
                              "statement_descriptor_prefix": "SEGFLOW",
                              "statement_descriptor_prefix_kana": None, "statement_descriptor_prefix_kanji": None},
            "dashboard": {"display_name": acct.name, "timezone": "Etc/UTC"},
            "invoices": {"default_account_tax_ids": None, "hosted_payment_method_save": "offer"},
            "payments": {"statement_descriptor": "SEGFLOW SANDBOX", "statement_descriptor_kana": None,
                         "statement_descriptor_kanji": None, "statement_descriptor_prefix_kana": None,
                         "statement_descriptor_prefix_kanji": None},
            "payouts": {"debit_negative_balances": True, "schedule": {"delay_days": 2, "interval": "daily"},
                        "statement_descriptor": None},
            "sepa_debit_payments": {},
        },
        "tos_acceptance": {"date": acct.now - 1100 * DAY, "ip": "127.0.0.1", "user_agent": None},
        "type": "standard",
    }
