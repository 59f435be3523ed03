"""Stripe's shapes of the account's billing objects (current API version): subscriptions and their items, invoices
and their lines, invoice items, and events (which show an object as it was when the event happened).

A mixin of `SandboxAccount` (it reads the account's records and id maps, and the catalogue renderers of
`objects.CatalogObjects`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from stripe_sandbox import catalog as cat
from stripe_sandbox._time import DAY
from stripe_sandbox.objects import API_VERSION
from stripe_sandbox.records import Event, Invoice, Item, Line, State, Sub


class BillingObjects:
    """Renderers of subscriptions, items, invoices, lines, invoice items and events, mixed into `SandboxAccount`."""

    def item_dict(self, sub: Sub, it: Item, period: tuple[int, int], variant: tuple[str, ...] = (),
                  prefix: str = "items.data.") -> dict[str, Any]:
        p = it.price
        if prefix + "price.tiers" in variant or prefix + "price.product" in variant:
            price: Any = orjson.Fragment(orjson.dumps(self.price_dict(
                self.prices[p], prefix + "price.tiers" in variant, prefix + "price.product" in variant)))
        else:
            price = self._price_frag[p]
        di = sub.item_discounts.get(it.id)
        discounts: list[Any] = []
        if di is not None and self._discount_in_effect(di):
            discounts = [self.discount_dict(di) if prefix + "discounts" in variant else self.discounts[di].id]
        return {
            "id": it.id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": it.created,
            "current_period_end": period[1],
            "current_period_start": period[0],
            "discounts": discounts,
            "metadata": {},
            "plan": self._plan_frag[p],
            "price": price,
            "quantity": it.quantity,
            "subscription": sub.id,
            "tax_rates": [],
        }

    def _discount_in_effect(self, di: int, at: int | None = None) -> bool:
        end = self.discounts[di].end
        return end is None or end > (self.now if at is None else at)

    def sub_period(self, sub: Sub, state: State, t: int) -> tuple[int, int]:
        if state.ended_at is not None:
            t = min(t, state.ended_at - 1)
        if sub.trial_end is not None and t < sub.trial_end:
            return sub.trial_start, sub.trial_end
        return sub.clock.period_at(t)

    def sub_dict(self, sub: Sub, state: State, t: int, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        period = self.sub_period(sub, state, t)
        expand_discounts = "discounts" in variant
        discounts = [self.discount_dict(di) if expand_discounts else self.discounts[di].id
                     for di in state.discounts if self._discount_in_effect(di, t)]
        customer: Any = sub.customer
        if "customer" in variant:
            customer = self.customer_dict(self.customers[self._customer_pos[sub.customer]])
        latest: Any = state.latest_invoice
        if "latest_invoice" in variant and latest is not None:
            latest = self.invoice_dict(self.invoices[self._invoice_pos[latest]])
        return {
            "id": sub.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": sub.clock.anchor,
            "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": None, "type": "classic"},
            "billing_schedules": [],
            "billing_thresholds": None,
            "cancel_at": state.cancel_at,
            "cancel_at_period_end": state.cancel_at_period_end,
            "canceled_at": state.canceled_at,
            "cancellation_details": {"comment": None,
                                     "feedback": sub.feedback if state.canceled_at else None,
                                     "reason": state.reason},
            "collection_method": "charge_automatically",
            "created": sub.created,
            "currency": sub.currency,
            "customer": customer,
            "customer_account": None,
            "days_until_due": None,
            "default_payment_method": sub.pm,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": discounts,
            "ended_at": state.ended_at,
            "invoice_settings": {"account_tax_ids": None, "custom_fields": None, "description": None,
                                 "footer": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [self.item_dict(sub, it, period, variant) for it in state.items],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub.id}",
            },
            "latest_invoice": latest,
            "livemode": self.livemode,
            "managed_payments": {"enabled": False},
            "metadata": {},
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                 "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": sub.start,
            "status": state.status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": sub.trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": sub.end_behavior}},
            "trial_start": sub.trial_start,
        }

    def line_dict(self, inv: Invoice, ln: Line, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        p = self.prices[ln.price]
        if ln.kind == "oneoff":
            parent = {
                "invoice_item_details": {"invoice_item": ln.invoice_item, "proration": False,
                                         "proration_details": {"credited_items": None}, "subscription": inv.sub},
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        elif ln.invoice_item in self.item_details_parent:
            # The proration invoice item a subscription update created, invoiced: it names the subscription but
            # not the subscription item (https://docs.stripe.com/api/invoice-line-item/object#invoice_line_item_object-parent).
            parent = {
                "invoice_item_details": {"invoice_item": ln.invoice_item, "proration": True,
                                         "proration_details": {"credited_items": None}, "subscription": inv.sub},
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        else:
            proration = ln.kind.startswith("proration")
            parent = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": ln.invoice_item,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": inv.sub,
                    "subscription_item": ln.item,
                },
                "type": "subscription_item_details",
            }
        expand_discounts = "discounts" in variant
        return {
            "id": ln.id,
            "object": "line_item",
            "amount": ln.amount,
            "currency": inv.currency,
            "description": self._line_description(p, ln, inv.currency),
            "discount_amounts": [{"amount": a, "discount": d} for a, d in ln.discount_amounts],
            "discountable": ln.kind != "proration_credit",
            "discounts": [self.discount_dict(self._discount_pos[d]) if expand_discounts else d
                          for _, d in ln.discount_amounts],
            "invoice": inv.id,
            "livemode": self.livemode,
            "metadata": {},
            "parent": parent,
            "period": {"end": ln.end, "start": ln.start},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": p.id, "product": p.product},
                "type": "price_details",
                "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            },
            "quantity": ln.quantity,
            "quantity_decimal": None if ln.quantity is None else str(ln.quantity),
            "subscription": inv.sub,
            "subtotal": ln.amount,
            "taxes": [],
        }

    @staticmethod
    def _line_description(p: cat.Price, ln: Line, currency: str) -> str:
        q = ln.quantity if ln.quantity is not None else 0
        if ln.kind == "trial":
            return f"Trial period for {p.product_name}"
        if ln.kind == "oneoff":
            return p.product_name
        if ln.kind == "proration_credit":
            return f"Unused time on {q} × {p.product_name} after {_date(ln.change_at)}"
        if ln.kind == "proration_charge":
            return f"Remaining time on {q} × {p.product_name} after {_date(ln.change_at)}"
        if p.billing_scheme == "tiered":
            return f"{q} × {p.product_name} (tiered)"
        interval = p.interval if p.interval_count == 1 else f"every {p.interval_count} {p.interval}s"
        return f"{q} × {p.product_name} (at {cat.money(p.unit_amount or 0, currency)} / {interval})"

    def invoice_item_dict(self, inv: Invoice | None, sub_idx: int, ln: Line) -> dict[str, Any]:
        """An invoice item (/v1/invoiceitems): a proration a subscription update created, or a one-off charge.
        `invoice` is null while it is pending (not yet on an invoice)."""
        sub = self.subs[sub_idx]
        p = self.prices[ln.price]
        details = {"subscription": sub.id,
                   "subscription_item": None if ln.invoice_item in self.item_details_parent else ln.item}
        return {
            "id": ln.invoice_item,
            "object": "invoiceitem",
            "amount": ln.amount,
            "currency": sub.currency,
            "customer": sub.customer,
            "customer_account": None,
            "date": ln.change_at,
            "description": self._line_description(p, ln, sub.currency),
            "discountable": ln.kind != "proration_credit",
            "discounts": [],
            "invoice": inv.id if inv is not None else None,
            "livemode": self.livemode,
            "metadata": {},
            "net_amount": ln.amount,
            "parent": {"subscription_details": details, "type": "subscription_details"},
            "period": {"end": ln.end, "start": ln.start},
            "pricing": {
                "price_details": {"price": p.id, "product": p.product},
                "type": "price_details",
                "unit_amount_decimal": None if p.unit_amount is None else str(p.unit_amount),
            },
            "proration": ln.kind.startswith("proration"),
            "quantity": ln.quantity or 1,
            "quantity_decimal": str(ln.quantity or 1),
            "tax_rates": [],
            "test_clock": None,
        }

    def invoice_dict(self, inv: Invoice, variant: tuple[str, ...] = ()) -> dict[str, Any]:
        c = self.customers[self._customer_pos[inv.customer]]
        lines = inv.lines
        status = inv.status
        draft = status == "draft"
        paid = inv.total if status == "paid" else 0
        due = max(inv.total, 0)
        customer: Any = inv.customer
        if "customer" in variant:
            customer = self.customer_dict(c)
        sub_ref: Any = inv.sub
        if "parent.subscription_details.subscription" in variant and inv.sub is not None:
            s = self.subs[self._sub_pos[inv.sub]]
            sub_ref = self.sub_dict(s, s.versions[-1], self.now)
        line_variant = tuple(v[len("lines.data."):] for v in variant if v.startswith("lines.data."))
        hosted = None if draft else f"https://invoice.stripe.com/i/{self.account_id}/test_{inv.id[3:]}"
        return {
            "id": inv.id,
            "object": "invoice",
            "account_country": "US",
            "account_name": self.name,
            "account_tax_ids": None,
            "amount_due": due,
            "amount_overpaid": 0,
            "amount_paid": paid,
            "amount_remaining": due if status in ("open", "draft") else 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": inv.attempts,
            "attempted": inv.attempts > 0,
            "auto_advance": status in ("draft", "open"),
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                              "status": None},
            "automatically_finalizes_at": inv.created + 3600 if draft else None,
            "billing_reason": inv.reason,
            "collection_method": "charge_automatically",
            "created": inv.created,
            "currency": inv.currency,
            "custom_fields": None,
            "customer": customer,
            "customer_account": None,
            "customer_address": {"city": c.city, "country": c.country, "line1": "1 Market Street", "line2": None,
                                 "postal_code": "10001", "state": None},
            "customer_email": c.email,
            "customer_name": c.name,
            "customer_phone": c.phone,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [self.discount_dict(self._discount_pos[d]) if "discounts" in variant else d
                          for d in inv.discounts],
            "due_date": None,
            "effective_at": inv.finalized_at,
            "ending_balance": None if draft else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": hosted,
            "invoice_pdf": None if hosted is None else hosted + "/pdf",
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            # Embedded lines are truncated to 10, the rest is paged from `url`.
            "lines": {
                "object": "list",
                "data": [self.line_dict(inv, ln, line_variant) for ln in lines[:10]],
                "has_more": len(lines) > 10,
                "total_count": len(lines),
                "url": f"/v1/invoices/{inv.id}/lines",
            },
            "livemode": self.livemode,
            "metadata": {},
            "next_payment_attempt": (inv.created + (inv.attempts + 1) * 3 * DAY) if status == "open" else None,
            "number": inv.number,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": None if inv.sub is None else {"metadata": {}, "subscription": sub_ref},
                "type": "subscription_details",
            },
            "payment_settings": {"default_mandate": None, "payment_method_options": None,
                                 "payment_method_types": None},
            "period_end": inv.period_end,
            "period_start": inv.period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": {"amount_tax_display": None, "pdf": {"page_size": "auto"}, "template": None,
                          "template_version": None},
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": status,
            "status_transitions": {"finalized_at": inv.finalized_at, "marked_uncollectible_at": None,
                                   "paid_at": inv.paid_at, "voided_at": inv.voided_at},
            # Current API versions carry the subscription in parent.subscription_details; this legacy field stays null.
            "subscription": None,
            "subtotal": inv.subtotal,
            "subtotal_excluding_tax": inv.subtotal,
            "test_clock": None,
            "total": inv.total,
            "total_discount_amounts": [{"amount": a, "discount": d} for a, d in inv.total_discounts],
            "total_excluding_tax": inv.total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": inv.created,
        }

    def event_dict(self, ev: Event) -> dict[str, Any]:
        data: dict[str, Any]
        if ev.kind == "sub":
            sub = self.subs[ev.ref]
            state = sub.versions[ev.version]
            data = {"object": self.sub_dict(sub, state, ev.created)}
            if ev.type == "customer.subscription.updated" and ev.version > 0:
                prev = self.sub_dict(sub, sub.versions[ev.version - 1], ev.created - 1)
                data["previous_attributes"] = {k: prev[k] for k in state.changed}
        elif ev.kind == "invoice":
            data = {"object": self._invoice_at_event(self.invoices[ev.ref], ev.type)}
        else:
            # As the customer was when created: events are immutable, whatever happened to the customer later.
            obj = self.customer_dict(self.customers[ev.ref])
            obj.update(next_invoice_sequence=1, delinquent=False)
            data = {"object": obj}
        return {
            "id": ev.id,
            "object": "event",
            "api_version": API_VERSION,
            "created": ev.created,
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": 0,
            "request": {"id": ev.request, "idempotency_key": None},
            "type": ev.type,
        }

    def _invoice_at_event(self, inv: Invoice, event_type: str) -> dict[str, Any]:
        """The invoice as the event saw it: a draft when created, open when finalized, paid when paid."""
        d = self.invoice_dict(inv)
        transitions = d["status_transitions"]
        if event_type == "invoice.created" and inv.status != "draft":
            d.update(status="draft", number=None, amount_paid=0, amount_remaining=d["amount_due"], attempted=False,
                     attempt_count=0, effective_at=None, ending_balance=None, hosted_invoice_url=None,
                     invoice_pdf=None, auto_advance=True,
                     automatically_finalizes_at=None if inv.finalized_at is None else inv.finalized_at)
            transitions.update(finalized_at=None, paid_at=None, voided_at=None)
        elif event_type in ("invoice.finalized", "invoice.payment_failed") and inv.status in ("paid", "void"):
            d.update(status="open", amount_paid=0, amount_remaining=d["amount_due"])
            transitions.update(paid_at=None, voided_at=None)
        return d


def _date(ts: int) -> str:
    return time.strftime("%d %b %Y", time.gmtime(ts))
