"""The simulation's invoices: one invoice with its lines and discounts, invoice numbers, and the events of
everything that happened in the event window.

A mixin of the simulation's `Generator` (it reads the generator's account, rng and price lookups).
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_sandbox.records import PAIRS, Customer, Event, Invoice, Line, State, Sub


class Invoicing:
    """Invoices and events of the simulation, mixed into `Generator`."""

    def _invoice(self, sub: Sub, customer: Customer, created: int, reason: str, period_start: int,
                 period_end: int, state: State, kind: str, line_period: tuple[int, int], extra: list[Line],
                 once_used: bool, metered_from: int | None = None) -> Invoice:
        a, rng = self.a, self.rng
        lines: list[Line] = []
        ids = a.ids
        inv_id = ids.long("in", created)
        # Line ids share the invoice's id body (one id draw per invoice keeps large accounts fast to build).
        stem = "il_" + inv_id[3:-2]
        new = tuple.__new__
        if kind in ("sub", "trial"):
            for k, it in enumerate(state.items):
                p = a.prices[it.price]
                if p.usage_type == "metered":
                    if metered_from is not None:
                        usage = rng.randint(0, 40000)
                        lines.append(new(Line, (stem + PAIRS[k], "metered", it.id, it.price, usage, p.amount(usage),
                                                metered_from, created, None, (), created)))
                    continue
                amount = 0 if kind == "trial" else p.amount(it.quantity or 0)
                lines.append(new(Line, (stem + PAIRS[k], kind, it.id, it.price, it.quantity, amount,
                                        line_period[0], line_period[1], None, (), created)))
        lines.extend(extra)
        if reason == "subscription_create" and kind == "sub" and self._wants_fee(sub):
            fee = self.special["Implementation fee"]
            lines.append(Line(stem + PAIRS[3000], "oneoff", None, fee.idx, 1, fee.unit_amount or 0, created,
                              created, ids.long("ii", created), (), created))
        subtotal = sum(ln.amount for ln in lines)
        # ---- discounts in effect at `created`
        dis: list[int] = []
        for di in state.discounts:
            d = a.discounts[di]
            c = self.coupon_by_id[d.coupon]
            if c.duration == "once" and (once_used or subtotal <= 0):
                continue
            if d.end is not None and created >= d.end:
                continue
            dis.append(di)
        if not dis and customer.discount is not None:
            dis.append(customer.discount)
        total_discounts: list[tuple[int, str]] = []
        if dis or sub.item_discounts:
            new_lines = []
            per_discount: dict[str, int] = {}
            for ln in lines:
                amounts: list[tuple[int, str]] = []
                item_di = sub.item_discounts.get(ln.item or "")
                for di in ([item_di] if item_di is not None else []) + dis:
                    c = self.coupon_by_id[a.discounts[di].coupon]
                    if c.percent_off and ln.kind != "oneoff":
                        amounts.append((round(ln.amount * c.percent_off / 100), a.discounts[di].id))
                for amt, did in amounts:
                    per_discount[did] = per_discount.get(did, 0) + amt
                new_lines.append(ln._replace(discount_amounts=tuple(amounts)) if amounts else ln)
            lines = new_lines
            for di in dis:
                c = self.coupon_by_id[a.discounts[di].coupon]
                if c.amount_off and subtotal > 0 and reason != "subscription_update":
                    amt = min(c.amount_off, subtotal)
                    per_discount[a.discounts[di].id] = amt
                    if lines:
                        lines[0] = lines[0]._replace(discount_amounts=lines[0].discount_amounts + (
                            (amt, a.discounts[di].id),))
            total_discounts = [(amt, did) for did, amt in per_discount.items()]
        discount_total = sum(x for x, _ in total_discounts)
        inv = Invoice()
        inv.idx = len(a.invoices)
        inv.id = inv_id
        inv.created = created
        inv.customer = customer.id
        inv.sub = sub.id
        inv.currency = sub.currency
        inv.reason = reason
        inv.period_start, inv.period_end = period_start, period_end
        inv.lines = lines
        inv.number = None
        inv.discounts = tuple(sorted({did for _, did in total_discounts})) if total_discounts else ()
        inv.total_discounts = total_discounts
        inv.subtotal = subtotal
        inv.total = subtotal - discount_total
        inv.attempts = 1 if inv.total > 0 else 0
        # Subscription invoices are finalized about an hour after creation (the first one at once).
        fin = created if reason in ("subscription_create", "subscription_update") else created + 3600
        if fin > self.now:
            inv.status, inv.finalized_at, inv.paid_at, inv.attempts = "draft", None, None, 0
        else:
            inv.status, inv.finalized_at, inv.paid_at = "paid", fin, fin + 2
        inv.voided_at = None
        a.invoices.append(inv)
        return inv

    def _wants_fee(self, sub: Sub) -> bool:
        return sub.currency == "usd" and (sub.idx % 53 == 29 or getattr(self, "_fee_for", None) == sub.idx)

    # ---------------------------------------------------------------- after generation
    def number_invoices(self, invoice_idxs: Iterable[int]) -> None:
        a = self.a
        pos = {c.id: c for c in a.customers}
        invoices = a.invoices
        created = {i: invoices[i].created for i in invoice_idxs}
        for i in sorted(created, key=created.__getitem__):
            inv = invoices[i]
            if inv.status == "draft":
                continue
            c = pos[inv.customer]
            c.seq += 1
            inv.number = f"{c.prefix}-{c.seq:04d}"

    def emit_events(self, since: int, subs: Iterable[Sub], invoices: Iterable[int],
                    customers: Iterable[int]) -> None:
        """Append the events of everything that happened from `since` (epoch seconds) to now."""
        a = self.a
        out: list[Event] = []
        ids = a.ids
        cutoff = since
        for sub in subs:
            for v, state in enumerate(sub.versions):
                if state.event is None or state.t < since or state.t > self.now:
                    continue
                out.append(Event(state.t, ids.long("evt", state.t), state.event, "sub", sub.idx, v, state.request))
        for i in invoices:
            inv = a.invoices[i]
            if inv.created < cutoff:
                continue
            req = None
            out.append(Event(inv.created, ids.long("evt", inv.created), "invoice.created", "invoice", i, 0, req))
            if inv.finalized_at is not None and inv.finalized_at <= self.now:
                out.append(Event(inv.finalized_at, ids.long("evt", inv.finalized_at), "invoice.finalized",
                                 "invoice", i, 0, req))
            if inv.paid_at is not None and inv.paid_at <= self.now:
                out.append(Event(inv.paid_at, ids.long("evt", inv.paid_at), "invoice.paid", "invoice", i, 0, req))
                out.append(Event(inv.paid_at, ids.long("evt", inv.paid_at), "invoice.payment_succeeded", "invoice",
                                 i, 0, req))
            if inv.status == "open" and inv.finalized_at is not None:
                t = inv.finalized_at + 5
                if t <= self.now:
                    out.append(Event(t, ids.long("evt", t), "invoice.payment_failed", "invoice", i, 0, req))
            if inv.voided_at is not None and inv.voided_at <= self.now:
                out.append(Event(inv.voided_at, ids.long("evt", inv.voided_at), "invoice.voided", "invoice", i, 0,
                                 req))
        for ci in customers:
            c = a.customers[ci]
            if c.created >= cutoff:
                out.append(Event(c.created, ids.long("evt", c.created), "customer.created", "customer", ci, 0,
                                 "req_" + c.id[4:]))
        a.events.extend(out)
