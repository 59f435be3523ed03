"""Changes after the account is built (`SandboxAccount.mutate`): a customer's upgrade, downgrade, quantity change or
cancellation at a later time, the renewals that happened since, and new subscriptions.

A mixin of the simulation's `Generator`.
"""

from __future__ import annotations

from stripe_sandbox import plans
from stripe_sandbox.records import Customer, Line, Segment, Sub


class LiveChanges:
    """Later changes to a built account, mixed into `Generator`."""

    def apply_live_change(self, sub: Sub, kind: str, t: int, since: int) -> bool:
        a = self.a
        state = sub.versions[-1]
        customer = a.customers[a._customer_pos[sub.customer]]
        if state.status == "trialing" and kind not in ("cancel_now", "cancel_end"):
            kind = "cancel_end"
        # Renewals that happened since the last simulated time.
        self._catch_up(sub, customer, t, since)
        state = sub.versions[-1]
        period = a.sub_period(sub, state, t)
        hist = a.history[sub.id]
        req = "req_" + a.ids.short("x", t)[2:]
        if kind in ("upgrade", "downgrade", "qty_up", "qty_down"):
            new_items = self._changed_items(state.items, kind, t)
            if new_items is None or new_items == state.items:
                return False
            ps, pe = period
            frac = (pe - t) / max(1, pe - ps)
            lines: list[Line] = []
            old = {it.id: it for it in state.items}
            new = {it.id: it for it in new_items}
            for iid in list(old) + [i for i in new if i not in old]:
                o, n = old.get(iid), new.get(iid)
                if o == n:
                    continue
                if o is not None:
                    for k, seg in enumerate(hist):
                        if seg.item == iid and seg.end is None:
                            hist[k] = seg._replace(end=t)
                    if a.prices[o.price].usage_type == "licensed":
                        lines.append(Line(a.ids.long("il", t), "proration_credit", o.id, o.price, o.quantity,
                                          -round(self._amount(o) * frac), t, pe, a.ids.long("ii", t), (), t))
                if n is not None:
                    hist.append(Segment(sub.id, iid, a.prices[n.price].id, n.quantity, t, None))
                    if a.prices[n.price].usage_type == "licensed":
                        lines.append(Line(a.ids.long("il", t), "proration_charge", n.id, n.price, n.quantity,
                                          round(self._amount(n) * frac), t, pe, a.ids.long("ii", t), (), t))
            inv = self._invoice(sub, customer, t, "subscription_update", t, t, state._replace(items=new_items),
                                "none", (t, pe), lines, True)
            sub.versions.append(state._replace(t=t, event="customer.subscription.updated",
                                               changed=("items", "latest_invoice"), items=new_items,
                                               latest_invoice=inv.id, request=req))
            return True
        if kind == "cancel_end":
            cancel_at = period[1]
            if state.status == "trialing" and sub.trial_end:
                cancel_at = sub.trial_end
            sub.versions.append(state._replace(
                t=t, event="customer.subscription.updated",
                changed=("cancel_at", "cancel_at_period_end", "canceled_at", "cancellation_details"),
                cancel_at_period_end=True, cancel_at=cancel_at, canceled_at=t, reason="cancellation_requested",
                request=req))
            return True
        if kind == "cancel_now":
            sub.versions.append(state._replace(t=t, event="customer.subscription.deleted",
                                               changed=("status", "ended_at", "canceled_at"), status="canceled",
                                               ended_at=t, canceled_at=t, reason="cancellation_requested",
                                               request=req))
            a.status_history[sub.id].append((t, "canceled"))
            for k, seg in enumerate(hist):
                if seg.end is None:
                    hist[k] = seg._replace(end=t)
            return True
        return False

    def _catch_up(self, sub: Sub, customer: Customer, t: int, since: int) -> None:
        """Create the cycle invoices of periods that began between `since` (the account's previous time) and `t`."""
        state = sub.versions[-1]
        if state.status not in ("active", "past_due") or sub.trial_end and t < sub.trial_end:
            return
        k = sub.clock.index_at(since - 1) + 1
        while True:
            b = sub.clock.boundary(k)
            if b > t:
                break
            inv = self._invoice(sub, customer, b, "subscription_cycle", sub.clock.boundary(k - 1), b, state, "sub",
                                (b, sub.clock.boundary(k + 1)), [], True, metered_from=sub.clock.boundary(k - 1))
            state = state._replace(t=b, event="customer.subscription.updated", changed=("items", "latest_invoice"),
                                   latest_invoice=inv.id, request=None)
            sub.versions.append(state)
            k += 1

    def new_subscription(self, t: int) -> Sub:
        plan = plans.random_plan(self.rng, bool(self.ended_customers))
        plan.update(start=t, outcome="active", changes=[], imported=False, fresh=True)
        plan.pop("reactivate", None)
        plan["trial"] = self.rng.random() < 0.3
        return self.simulate(plan, len(self.a.subs))
