"""The simulation: every subscription of the sandbox company walked through its life before the account's `now`.

`Generator.simulate` turns a plan (`plans.py`) into a subscription: its customer, items, trial, cycle invoices,
upgrades and downgrades with prorations, schedule phases, discounts, past_due / unpaid / paused / incomplete
states and cancellations, writing the versions, history segments and invoices to the account. `_run` is one long
walk over the subscription's timeline (about 290 lines): its branches share the walk's state (open segments,
pending prorations, the latest invoice), which is clearer read in one place than threaded through helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_sandbox import catalog as cat
from stripe_sandbox._time import DAY, Clock, add_months
from stripe_sandbox.invoicing import Invoicing
from stripe_sandbox.live import LiveChanges
from stripe_sandbox.plans import COMPANY, FIRST, LAST, PLACES, SUFFIX
from stripe_sandbox.records import EVENT_WINDOW_S, Customer, Discount, Invoice, Item, Line, Segment, State, Sub

if TYPE_CHECKING:
    import random

    from stripe_sandbox.account import SandboxAccount


class Generator(Invoicing, LiveChanges):
    """Simulates subscriptions over time and writes their invoices, discounts, history and versions."""

    def __init__(self, acct: SandboxAccount, rng: random.Random) -> None:
        self.a = acct
        self.rng = rng
        self.now = acct.now
        self.origin = acct.now - 730 * DAY
        self.import_at = self.origin + 30 * DAY + 4321  # one second in which a migration created many objects
        self.new_customers: list[int] = []
        self.ended_customers: list[tuple[int, int]] = []  # (customer idx, ended_at) for reactivations
        # price lookups
        self.base: dict[tuple[str, str, int], list[cat.Price]] = {}
        self.addons: dict[tuple[str, str, int], list[cat.Price]] = {}
        self.special: dict[str, cat.Price] = {}
        for p in acct.prices:
            fam = (p.currency, p.interval or "", p.interval_count)
            if p.family == "base" and p.active and p.billing_scheme == "per_unit":
                self.base.setdefault(fam, []).append(p)
            elif p.family == "addon":
                self.addons.setdefault(fam, []).append(p)
        for p in acct.prices:
            if p.nickname:
                self.special[p.nickname] = p
        for v in self.base.values():
            v.sort(key=lambda p: p.tier_rank)
        self.coupon_by_id = {c.id: c for c in acct.coupons}

    # ---------------------------------------------------------------- customers
    def new_customer(self, created: int, currency: str, discount_coupon: str | None = None) -> Customer:
        a, rng = self.a, self.rng
        c = Customer()
        c.idx = len(a.customers)
        c.id = a.ids.short("cus", created)
        c.created = created
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if rng.random() < 0.6:
            company = f"{rng.choice(COMPANY)} {rng.choice(SUFFIX)}"
            c.name = company
            domain = company.split()[0].lower()
        else:
            c.name = f"{first} {last}"
            domain = "example.com"
        c.email = f"{first.lower()}.{last.lower().replace('ü', 'ue')}{c.idx}@{domain.replace(' ', '')}" + (
            "" if "." in domain else ".example")
        c.country, c.city = rng.choice(PLACES[currency])
        c.currency = None
        c.discount = None
        c.prefix = f"{rng.randrange(16**8):08X}"
        c.seq = 0
        c.delinquent = False
        c.pm = None
        c.phone = None if rng.random() < 0.7 else f"+1 555 {rng.randrange(10**7):07d}"
        a.customers.append(c)
        if discount_coupon:
            di = self.new_discount(discount_coupon, c.id, None, None, created)
            c.discount = di
        if created >= self.now - EVENT_WINDOW_S:
            self.new_customers.append(c.idx)
        return c

    def new_discount(self, coupon: str, customer: str, sub: str | None, item: str | None, start: int) -> int:
        c = self.coupon_by_id[coupon]
        end = None
        if c.duration == "repeating":
            end = add_months(start, c.duration_in_months or 1)
        d = Discount(self.a.ids.long("di", start), coupon, customer, sub, item, start, end)
        self.a.discounts.append(d)
        c.times_redeemed += 1
        return len(self.a.discounts) - 1

    # ---------------------------------------------------------------- one subscription
    def simulate(self, plan: dict[str, Any], sub_index: int) -> Sub:
        a, rng, now = self.a, self.rng, self.now
        cur, unit, count = plan["family"]
        outcome = plan.get("outcome", "active")
        trial = bool(plan.get("trial"))
        if outcome in ("trialing", "paused"):
            trial = True
        if outcome in ("incomplete", "incomplete_expired"):
            trial = False
        # ---- start time
        customer: Customer | None = None
        if "start" in plan:
            start = int(plan["start"])
        elif plan.get("imported"):
            start = self.import_at
        else:
            u = rng.random()
            start = int(self.origin + (now - 3600 - self.origin) * (u ** 0.7))
        if plan.get("reactivate_of") is not None and plan["reactivate_of"] < len(a.subs):
            prev = a.subs[plan["reactivate_of"]]
            customer = a.customers[a._customer_pos[prev.customer]] if a._customer_pos else next(
                c for c in a.customers if c.id == prev.customer)
            start = max(start, (prev.versions[-1].ended_at or start) + 3 * DAY)
        elif plan.get("reactivate") and self.ended_customers:
            cidx, ended = self.ended_customers.pop(rng.randrange(len(self.ended_customers)))
            if ended + 7 * DAY < now - 3600:
                start = rng.randint(ended + 7 * DAY, now - 3600)
                customer = a.customers[cidx]
                cur = customer.currency or cur
                if (cur, unit, count) not in self.base:
                    unit, count = "month", 1
        if outcome == "incomplete":
            start = max(start, now - 20 * 3600)
        if outcome == "trialing":
            start = max(start, now - 13 * DAY)
        if outcome == "paused":
            start = min(start, now - 20 * DAY)
        if outcome == "incomplete_expired":
            start = min(start, now - 2 * DAY)
        # ---- customer
        if customer is None:
            created = start if plan.get("imported") or plan.get("fresh") else start - rng.randint(0, 3 * DAY)
            customer = self.new_customer(created, cur, plan.get("customer_coupon"))
        if customer.currency is None:
            customer.currency = cur
        # ---- items
        fam = (cur, unit, count)
        bases = self.base.get(fam) or self.base[("usd", "month", 1)]
        base_name = plan.get("base")
        if base_name in self.special:
            base = self.special[base_name]
        elif base_name:
            base = next((p for p in bases if p.product_name == base_name), bases[0])
        else:
            base = rng.choices(bases, [40, 40, 20][: len(bases)])[0]
        if base.currency != cur or base.interval != unit:
            cur, unit, count = base.currency, base.interval or "month", base.interval_count
        qty = plan.get("qty") or (rng.choice([2, 3, 5, 8, 10, 12, 20, 35]) if base.seats else 1)
        item_specs: list[tuple[cat.Price, int | None]] = [(base, qty)]
        n_addons = plan.get("addons", 0)
        available = list(self.addons.get((cur, unit, count), []))
        if n_addons and available:
            for p in rng.sample(available, min(n_addons, len(available))):
                item_specs.append((p, qty if p.product_name == "Extra seat" and base.seats else rng.randint(1, 3)))
        if plan.get("metered") and (cur, unit) == ("usd", "month"):
            item_specs.append((self.special["API calls"], None))
        if plan.get("sms") and (cur, unit) == ("usd", "month"):
            item_specs.append((self.special["SMS packs"], rng.choice([250, 1000, 2400, 5000])))
        # ---- subscription record
        sub = Sub()
        sub.idx = sub_index
        sub.id = a.ids.long("sub", start)
        sub.customer = customer.id
        sub.currency = cur
        sub.start = sub.created = start
        sub.trial_start = start if trial else None
        sub.trial_end = start + 14 * DAY if trial else None
        sub.end_behavior = "pause" if outcome == "paused" else "create_invoice"
        sub.pm = None if outcome == "paused" else "pm_" + sub.id[4:]
        sub.feedback = rng.choice([None, "too_expensive", "missing_features", "switched_service", "unused"])
        anchor = sub.trial_end if trial else start
        sub.clock = Clock(anchor, unit, count)
        items = tuple(Item(a.ids.short("si", start), p.idx, q, start) for p, q in item_specs)
        if plan.get("item_coupon") and len(items) > 1:
            sub.item_discounts[items[1].id] = self.new_discount(plan["item_coupon"], customer.id, sub.id,
                                                                items[1].id, start)
        sub_discounts: tuple[int, ...] = ()
        if plan.get("coupon"):
            coupon = self.coupon_by_id[plan["coupon"]]
            if coupon.currency in (None, cur):
                sub_discounts = (self.new_discount(coupon.id, customer.id, sub.id, None, start),)
        status0 = "trialing" if trial else ("incomplete" if outcome.startswith("incomplete") else "active")
        req = "req_" + sub.id[4:18]
        sub.versions = [State(start, "customer.subscription.created", (), status0, items, False, None, None, None,
                              None, None, sub_discounts, req)]
        a.subs.append(sub)
        self._run(sub, plan, outcome, customer)
        return sub

    def _run(self, sub: Sub, plan: dict[str, Any], outcome: str, customer: Customer) -> None:
        """Walk the subscription's timeline: cycle invoices, changes, status transitions, cancellation."""
        a, rng, now = self.a, self.rng, self.now
        clock = sub.clock
        start = sub.start
        first_b = clock.anchor
        # ---- when does it stop, and how
        stop = now  # cycle invoices are generated for boundaries <= stop
        transitions: list[tuple[int, int, str, Any]] = []  # (t, order, action, payload)
        if sub.trial_end is not None and outcome not in ("paused",):
            if sub.trial_end - 3 * DAY <= now:
                transitions.append((sub.trial_end - 3 * DAY, 0, "trial_will_end", None))
        if outcome == "trialing":
            stop = -1
        elif outcome == "paused":
            stop = -1
            transitions.append((sub.trial_end, 1, "paused", None))
        elif outcome == "incomplete":
            stop = start
        elif outcome == "incomplete_expired":
            stop = start
            transitions.append((start + 23 * 3600, 1, "expire", None))
        else:
            k_now = clock.index_at(now) if now >= first_b else -1
            if outcome == "canceled_now":
                lo = first_b + DAY
                hi = plan.get("end_before", now - 3600)
                t_end = plan.get("end_at") or (rng.randint(lo, hi) if hi > lo else None)
                if t_end is not None and t_end <= now:
                    transitions.append((t_end, 5, "cancel_now", None))
                    stop = t_end
            elif outcome in ("canceled_end", "cancel_pending"):
                if outcome == "cancel_pending" and k_now >= 0:
                    ps, pe = clock.boundary(k_now), clock.boundary(k_now + 1)
                    t_req = plan.get("cancel_request") or rng.randint(ps, max(ps, now - 60))
                    t_req = max(t_req, ps)
                    transitions.append((t_req, 4, "cancel_request", pe))
                elif k_now >= 1:
                    j = rng.randint(1, k_now)
                    ps, pe = clock.boundary(j - 1), clock.boundary(j)
                    t_req = rng.randint(ps + 60, pe - 60)
                    transitions.append((t_req, 4, "cancel_request", pe))
                    transitions.append((pe, -1, "cancel_end", None))
                    stop = pe - 1
            elif outcome in ("past_due", "unpaid") and k_now >= 0:
                k_fail = k_now
                if outcome == "unpaid":
                    while k_fail > 0 and clock.boundary(k_fail) + 15 * DAY > now:
                        k_fail -= 1
                    # Stripe leaves a subscription unpaid once its payment retries are exhausted, so the failed
                    # renewal may lie in any period of its life, not only in the latest one.
                    first_charge = 0 if sub.trial_end is not None else 1
                    if k_fail > first_charge:
                        k_fail = rng.randint(first_charge, k_fail)
                b = clock.boundary(k_fail)
                if b + 3600 <= now and (k_fail > 0 or sub.trial_end is not None or b > start):
                    transitions.append((b + 3600, 3, "past_due", k_fail))
                    if outcome == "unpaid" and b + 15 * DAY <= now:
                        transitions.append((b + 15 * DAY, 3, "unpaid", k_fail))
                        stop = b
        # ---- cycle boundaries
        boundaries: list[int] = []
        if stop >= first_b:
            k = 0
            while True:
                b = clock.boundary(k)
                if b > stop:
                    break
                boundaries.append(b)
                k += 1
        for k, b in enumerate(boundaries):
            transitions.append((b, 2, "cycle", k))
        # ---- changes (upgrades, downgrades, quantity) strictly inside active periods
        active_until = min([t for t, _, act, _ in transitions if act in ("cancel_now", "past_due", "cancel_end",
                                                                          "cancel_request")] + [now - 3600])
        changes = plan.get("changes", [])
        phases: dict[int, str] = {}  # renewal time -> schedule phase change (upgrade / downgrade) starting then
        if outcome in ("trialing", "paused", "incomplete", "incomplete_expired"):
            changes = []  # never paid: nothing to upgrade or downgrade
        for change in changes:
            kind, t = change if isinstance(change, tuple) else (None, None)
            if t is None:
                lo = first_b + DAY
                if active_until - lo < 2 * DAY:
                    continue
                t = rng.randint(lo, active_until - DAY)
            if t <= first_b:
                continue
            kind = kind or rng.choice(["upgrade", "downgrade", "qty_up", "qty_down", "add_addon"])
            if kind.startswith("phase:"):
                # A subscription schedule's next phase starts at a renewal: the new price is billed by that
                # renewal's invoice, with no proration, and the renewal's own update reports it.
                b = clock.boundary(clock.index_at(t) + 1)
                if b <= now - 3600 and b < active_until:
                    phases[b] = kind.split(":", 1)[1]
                continue
            transitions.append((t, 3, "change", kind))
        transitions.sort(key=lambda x: (x[0], x[1]))

        # ---- walk
        seg_open: dict[str, tuple[int, int | None, int]] = {}  # item id -> (price, qty, since)
        history: list[Segment] = []
        st = sub.versions[0]
        for it in st.items:
            seg_open[it.id] = (it.price, it.quantity, start)
        status_hist = [(start, st.status)]
        latest: str | None = None
        pending: list[Line] = []  # proration lines waiting for the next cycle invoice
        once_used = False
        cutoff = now - EVENT_WINDOW_S
        state = st
        if sub.trial_end is not None or outcome.startswith("incomplete"):
            # The first invoice: $0 for a trial, unpaid for an incomplete subscription.
            inv = self._invoice(sub, customer, start, "subscription_create", start, start,
                                state, "trial" if sub.trial_end is not None else "sub",
                                (start, sub.trial_end or clock.boundary(1)), pending, once_used)
            if outcome == "incomplete":
                inv.status, inv.paid_at, inv.attempts = "open", None, 1
                inv.finalized_at = start
            elif outcome == "incomplete_expired":
                inv.status, inv.paid_at, inv.voided_at = "void", None, start + 23 * 3600
                inv.attempts = 1
            latest = inv.id
            state = state._replace(latest_invoice=latest)
            sub.versions[0] = state
        period = (start, sub.trial_end or clock.boundary(1))

        before = latest

        def push(t: int, event: str | None, changed: tuple[str, ...], **kw: Any) -> None:
            nonlocal state
            if t >= cutoff and sub.versions[-1].t < cutoff:
                # A silent baseline at the window start so the first event's previous_attributes are exact.
                sub.versions.append(state._replace(t=cutoff, event=None, changed=(), latest_invoice=before))
            kw.setdefault("latest_invoice", latest)
            state = state._replace(t=t, event=event, changed=changed, **kw)
            sub.versions.append(state)
            if "status" in kw:
                status_hist.append((t, kw["status"]))

        bounds = boundaries + [clock.boundary(len(boundaries)), clock.boundary(len(boundaries) + 1)]
        for t, _, action, payload in transitions:
            before = latest
            if action == "cycle":
                k = payload
                ps, pe = bounds[k], bounds[k + 1]
                period = (ps, pe)
                first = k == 0 and sub.trial_end is None
                reason = "subscription_create" if first else "subscription_cycle"
                prev_ps = bounds[k - 1] if k > 0 else None
                inv_period = (ps, ps) if first else ((prev_ps, ps) if prev_ps is not None else (sub.trial_start, ps))
                phase_items = self._changed_items(state.items, phases[t], t) if t in phases else None
                if phase_items is not None:
                    for o, n in zip(state.items, phase_items):
                        if o != n:
                            p0, q0, since = seg_open.pop(o.id)
                            history.append(Segment(sub.id, o.id, a.prices[p0].id, q0, since, t))
                            seg_open[n.id] = (n.price, n.quantity, t)
                    if t < cutoff:  # no event is kept for it: record the new phase's items now
                        push(t, "customer.subscription.updated", ("items",), items=phase_items)
                inv = self._invoice(sub, customer, ps, reason, inv_period[0], inv_period[1],
                                    state._replace(items=phase_items) if phase_items else state, "sub",
                                    (ps, pe), pending, once_used, metered_from=prev_ps)
                pending = []
                if inv.subtotal > 0:
                    once_used = True
                latest = inv.id
                if state.status == "trialing":
                    push(t, "customer.subscription.updated", ("status", "items", "latest_invoice"),
                         status="active", latest_invoice=latest)
                elif t >= cutoff and k > 0:
                    push(t, "customer.subscription.updated", ("items", "latest_invoice"), latest_invoice=latest,
                         **({"items": phase_items} if phase_items else {}))
                elif k == 0 and len(sub.versions) == 1:
                    state = sub.versions[0] = state._replace(latest_invoice=latest)
                if once_used and state.discounts and any(
                        self.coupon_by_id[a.discounts[di].coupon].duration == "once" for di in state.discounts):
                    # A `once` coupon is removed from the subscription after its first invoice.
                    kept = tuple(di for di in state.discounts
                                 if self.coupon_by_id[a.discounts[di].coupon].duration != "once")
                    if t >= cutoff:
                        push(t + 1, "customer.subscription.updated", ("discounts",), discounts=kept)
                    else:
                        state = state._replace(discounts=kept)
                        sub.versions[-1] = sub.versions[-1]._replace(discounts=kept)
            elif action == "change":
                behavior, _, change_kind = payload.rpartition(":")
                new_items = self._changed_items(state.items, change_kind, t)
                if new_items is None:
                    continue
                if behavior == "none":
                    # proration_behavior=none: the items change with no proration line; only the event (30 days)
                    # and the next renewal's invoice show it.
                    for iid in {it.id for it in state.items} | {it.id for it in new_items}:
                        o = next((it for it in state.items if it.id == iid), None)
                        n = next((it for it in new_items if it.id == iid), None)
                        if o == n:
                            continue
                        if o is not None:
                            p0, q0, since = seg_open.pop(iid)
                            history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, t))
                        if n is not None:
                            seg_open[iid] = (n.price, n.quantity, t)
                    push(t, "customer.subscription.updated", ("items",), items=new_items)
                    continue
                ps, pe = period
                in_item_details = rng.random() < 0.5 if "parent" not in plan else \
                    plan["parent"] == "invoice_item_details"
                credit_charge: list[Line] = []
                old_by_id = {it.id: it for it in state.items}
                new_by_id = {it.id: it for it in new_items}
                frac = (pe - t) / max(1, pe - ps)
                old_total = sum(self._amount(it) for it in state.items)
                new_total = sum(self._amount(it) for it in new_items)
                for iid in list(old_by_id) + [i for i in new_by_id if i not in old_by_id]:
                    o, n = old_by_id.get(iid), new_by_id.get(iid)
                    if o == n:
                        continue
                    ii = a.ids.long("ii", t)
                    if o is not None and a.prices[o.price].usage_type == "licensed":
                        credit_charge.append(Line(a.ids.long("il", t), "proration_credit", o.id, o.price,
                                                  o.quantity, -round(self._amount(o) * frac), t, pe, ii, (), t))
                    if n is not None and a.prices[n.price].usage_type == "licensed":
                        credit_charge.append(Line(a.ids.long("il", t), "proration_charge", n.id, n.price,
                                                  n.quantity, round(self._amount(n) * frac), t, pe,
                                                  a.ids.long("ii", t), (), t))
                    if o is not None:
                        p0, q0, since = seg_open.pop(iid)
                        history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, t))
                    if n is not None:
                        seg_open[iid] = (n.price, n.quantity, t)
                if in_item_details:
                    a.item_details_parent.update(ln.invoice_item for ln in credit_charge)
                if new_total > old_total:
                    # Upgrades are invoiced at once (proration_behavior=always_invoice).
                    inv = self._invoice(sub, customer, t, "subscription_update", t, t, state._replace(
                        items=new_items), "none", (t, pe), credit_charge, True)
                    latest = inv.id
                    push(t, "customer.subscription.updated", ("items", "latest_invoice"), items=new_items,
                         latest_invoice=latest)
                else:
                    # Downgrades leave proration items for the next invoice (create_prorations).
                    pending.extend(credit_charge)
                    push(t, "customer.subscription.updated", ("items",), items=new_items)
            elif action == "trial_will_end":
                if t >= cutoff:
                    push(t, "customer.subscription.trial_will_end", ())
            elif action == "paused":
                push(t, "customer.subscription.paused", ("status",), status="paused")
            elif action == "expire":
                push(t, "customer.subscription.updated", ("status", "ended_at"), status="incomplete_expired",
                     ended_at=t)
            elif action == "past_due":
                inv = self._find_cycle_invoice(sub, clock.boundary(payload))
                if inv is not None:
                    inv.status, inv.paid_at, inv.attempts = "open", None, 1
                customer.delinquent = True
                push(t, "customer.subscription.updated", ("status",), status="past_due")
            elif action == "unpaid":
                inv = self._find_cycle_invoice(sub, clock.boundary(payload))
                if inv is not None:
                    inv.attempts = 4
                push(t, "customer.subscription.updated", ("status",), status="unpaid")
            elif action == "cancel_request":
                push(t, "customer.subscription.updated",
                     ("cancel_at", "cancel_at_period_end", "canceled_at", "cancellation_details"),
                     cancel_at_period_end=True, cancel_at=payload, canceled_at=t, reason="cancellation_requested",
                     request="req_" + a.ids.short("x", t)[2:])
            elif action == "cancel_end":
                push(t, "customer.subscription.deleted", ("status", "ended_at"), status="canceled", ended_at=t)
            elif action == "cancel_now":
                push(t, "customer.subscription.deleted", ("status", "ended_at", "canceled_at"), status="canceled",
                     ended_at=t, canceled_at=t, reason="cancellation_requested",
                     request="req_" + a.ids.short("x", t)[2:])
        # Prorations still waiting for a renewal stay pending invoice items (also once the subscription ended).
        a.pending_items.extend((sub.idx, ln) for ln in pending)
        end = state.ended_at
        if state.status == "canceled" or state.status == "incomplete_expired":
            self.ended_customers.append((self.a._customer_pos.get(customer.id, customer.idx), end or now))
        for iid, (p0, q0, since) in seg_open.items():
            history.append(Segment(sub.id, iid, a.prices[p0].id, q0, since, end))
        a.history[sub.id] = history
        a.status_history[sub.id] = status_hist
        sub.versions[-1] = sub.versions[-1]._replace(latest_invoice=latest)

    def _amount(self, it: Item) -> int:
        p = self.a.prices[it.price]
        if p.usage_type == "metered":
            return 0
        return p.amount(it.quantity or 0)

    def _changed_items(self, items: tuple[Item, ...], kind: str, t: int) -> tuple[Item, ...] | None:
        a, rng = self.a, self.rng
        base = items[0]
        bp = a.prices[base.price]
        fam = (bp.currency, bp.interval or "", bp.interval_count)
        if kind in ("upgrade", "downgrade"):
            options = [p for p in self.base.get(fam, []) if (p.tier_rank > bp.tier_rank if kind == "upgrade"
                                                             else p.tier_rank < bp.tier_rank)]
            if not options:
                kind = "qty_up" if kind == "upgrade" else "qty_down"
            else:
                p = options[0] if kind == "upgrade" else options[-1]
                q = base.quantity if p.seats and bp.seats else (3 if p.seats else 1)
                # Changing the price keeps the subscription item (same si_ id), as Stripe does.
                return (Item(base.id, p.idx, q, base.created),) + items[1:]
        if kind in ("qty_up", "qty_down"):
            idx = next((i for i, it in enumerate(items) if a.prices[it.price].seats
                        or a.prices[it.price].transform), None)
            if idx is None:
                return self._changed_items(items, "add_addon" if kind == "qty_up" else "remove_addon", t)
            it = items[idx]
            q = it.quantity or 1
            step = max(1, q // 4)
            q2 = q + step if kind == "qty_up" else max(1, q - step)
            if q2 == q:
                return None
            return items[:idx] + (it._replace(quantity=q2),) + items[idx + 1:]
        if kind == "add_addon":
            used = {it.price for it in items}
            options = [p for p in self.addons.get(fam, []) if p.idx not in used]
            if not options or len(items) >= 20:
                return None
            p = rng.choice(options)
            return items + (Item(a.ids.short("si", t), p.idx, 1, t),)
        if kind == "remove_addon":
            if len(items) < 2:
                return None
            return items[:-1]
        return None

    def _find_cycle_invoice(self, sub: Sub, created: int) -> Invoice | None:
        for inv in reversed(self.a.invoices):
            if inv.sub == sub.id and inv.created == created:
                return inv
            if inv.sub == sub.id and inv.created < created:
                break
        return None
