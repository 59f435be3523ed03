"""The true daily MRR of a sandbox account, per (currency, day), from the account's own record of what happened.

A test oracle for the rebuilt past of `metrics.mrr_daily`. It reads no API object and no warehouse table: only the
sandbox's internal truth — each subscription's `versions` (the `State` it was in from time `t` on: status, items,
cancellation fields, subscription-level discounts), its item-level discounts, its customer's discount, and the
price book and coupons. MRR_SPEC.md with the default options (churn at `canceled_at`, only `forever` coupons):

- the value of day D is the state at the end of D (23:59:59 UTC), today's the state at the account's `now`;
- a subscription counts while its status is active or past_due, and stops at `canceled_at` once a cancellation
  is scheduled (cancel_at_period_end / cancel_at);
- item value = amount per billing period for its quantity (per_unit with transform_quantity, tiered volume or
  graduated; metered 0), normalized to a month; an item-level forever coupon applies to its item;
- subscription-level discounts in effect apply to the item total (percent, then amount_off once per billing
  period normalized with the subscription's interval), never below 0; the customer's discount applies when the
  subscription has no discount of its own in effect; only `forever` coupons reduce MRR;
- per customer and currency the exact sum is rounded half-up to 0.01 major units; sums, counts and movements are
  computed from those rounded values.

Plain Python with exact fractions, deliberately independent of `segflow_pipeline.transform`.
"""

from __future__ import annotations

import bisect
import functools
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor

DAY = 86400
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
PER_MONTH = {"month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12), "day": Fraction(365, 12)}
COUNTING = ("active", "past_due")
MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")


@dataclass(frozen=True)
class DayRow:
    """The truth for one (currency, day): amounts in cents, counts as integers."""

    mrr: int
    active_subscriptions: int
    paying_customers: int
    new_mrr: int
    expansion_mrr: int
    reactivation_mrr: int
    contraction_mrr: int
    churned_mrr: int


def minor_per_major(currency: str) -> int:
    return 1 if currency in ZERO_DECIMAL else 1000 if currency in THREE_DECIMAL else 100


def per_month(price) -> Fraction:
    """Monthly factor of a recurring price (MRR_SPEC.md section 3)."""
    return PER_MONTH[price.interval] / price.interval_count


def period_amount(price, quantity: int | None) -> int:
    """Amount per billing period in minor units, as Stripe bills it; metered items are worth 0."""
    if price.usage_type == "metered" or price.interval is None:
        return 0
    q = quantity or 0
    if price.billing_scheme == "tiered":
        total, below = 0, 0
        for up_to, unit, flat in price.tiers:
            top = q if up_to is None else up_to
            if price.tiers_mode == "volume":
                if q <= top:
                    return (unit or 0) * q + (flat or 0)
                continue
            if q > below:
                total += (unit or 0) * (min(q, top) - below) + (flat or 0)
            below = top
        return total
    if price.transform is not None:
        divide_by, rounding = price.transform
        q = ceil(Fraction(q, divide_by)) if rounding == "up" else floor(Fraction(q, divide_by))
    return (price.unit_amount or 0) * q


class HistoryTruth:
    """Exact MRR of every subscription at any moment, and the daily series built from it."""

    def __init__(self, account) -> None:
        self.a = account
        self.prices = {p.idx: p for p in account.prices}
        self.coupons = {c.id: c for c in account.coupons}
        self.customers = {c.id: c for c in account.customers}
        self._times = {sub.idx: [v.t for v in sub.versions] for sub in account.subs}
        self._values: dict[dt.date, dict[int, dict[dt.date, Fraction]]] = {}
        self._memo: dict[tuple, Fraction] = {}

    # ---------------------------------------------------------------- one subscription at one moment
    def state_at(self, sub, t: int):
        """The subscription's State at time t (the last version starting at or before t), None before it began."""
        k = bisect.bisect_right(self._times[sub.idx], t) - 1
        return sub.versions[k] if k >= 0 else None

    def counts(self, sub, state, t: int) -> bool:
        if state is None or state.status not in COUNTING:
            return False
        if sub.trial_end is not None and t < sub.trial_end:
            return False
        scheduled = state.cancel_at_period_end or state.cancel_at is not None
        if scheduled and state.canceled_at is not None and state.canceled_at <= t:
            return False  # default churn recognition: at the moment the cancellation was requested
        return True

    def _in_effect(self, di: int, t: int) -> bool:
        d = self.a.discounts[di]
        return d.start <= t and (d.end is None or t < d.end)

    def _forever(self, di: int) -> object | None:
        coupon = self.coupons[self.a.discounts[di].coupon]
        return coupon if coupon.duration == "forever" else None

    def own_discounts(self, sub, state, t: int) -> list[int]:
        """The subscription's own (subscription-level) discounts in effect at t, any duration."""
        return [di for di in state.discounts if self._in_effect(di, t)]

    def items_at(self, sub, state, t: int):
        """The items the subscription had at t."""
        return state.items

    def subscription_discounts(self, sub, state, t: int) -> list:
        """Forever coupons reducing the whole subscription at t: its own discounts in effect, else its
        customer's (a customer discount applies to subscriptions without a discount of their own)."""
        own = self.own_discounts(sub, state, t)
        if not own:
            customer = self.customers[sub.customer]
            if customer.discount is not None and self._in_effect(customer.discount, t):
                own = [customer.discount]
        return [c for c in (self._forever(di) for di in own) if c is not None]

    @staticmethod
    def _discounted(amount: Fraction, coupon, factor: Fraction, currency: str) -> Fraction:
        if coupon.percent_off is not None:
            amount = amount * (1 - Fraction(Decimal(str(coupon.percent_off))) / 100)
        if coupon.amount_off is not None and coupon.currency == currency:
            amount = amount - coupon.amount_off * factor
        return max(Fraction(0), amount)

    def value(self, sub, t: int) -> Fraction:
        """Exact MRR of the subscription at time t, in major units of its currency."""
        state = self.state_at(sub, t)
        if not self.counts(sub, state, t):
            return Fraction(0)
        items = self.items_at(sub, state, t)
        item_coupons = tuple(self._item_coupon(sub, item, t) for item in items)
        coupons = tuple(self.subscription_discounts(sub, state, t))
        key = (sub.currency, items, tuple(c and c.id for c in item_coupons), tuple(c.id for c in coupons))
        if key not in self._memo:  # the same inputs give the same value: compute each combination once
            self._memo[key] = self._value(sub.currency, items, item_coupons, coupons)
        return self._memo[key]

    def _item_coupon(self, sub, item, t: int):
        di = sub.item_discounts.get(item.id)
        return self._forever(di) if di is not None and self._in_effect(di, t) else None

    def _value(self, currency: str, items, item_coupons, coupons) -> Fraction:
        total, factor = Fraction(0), None
        for item, coupon in zip(items, item_coupons):
            price = self.prices[item.price]
            f = per_month(price)
            factor = factor or f
            amount = period_amount(price, item.quantity) * f
            if coupon is not None:
                amount = self._discounted(amount, coupon, f, currency)
            total += amount
        for coupon in coupons:
            total = self._discounted(total, coupon, factor or Fraction(1), currency)
        return max(Fraction(0), total) / minor_per_major(currency)

    # ---------------------------------------------------------------- the daily series
    def day_moment(self, day: dt.date) -> int:
        """The moment whose state is day's value: 23:59:59 UTC, or the account's `now` for today."""
        end = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()) + DAY - 1
        return min(end, self.a.now)

    def subscription_values(self, today: dt.date) -> dict[int, dict[dt.date, Fraction]]:
        """Subscription index -> day -> its exact MRR (major units), for the days up to `today` with MRR > 0."""
        if today in self._values:
            return self._values[today]
        out: dict[int, dict[dt.date, Fraction]] = self._values.setdefault(today, {})
        for sub in self.a.subs:
            values, day = {}, dt.datetime.fromtimestamp(sub.versions[0].t, dt.timezone.utc).date()
            while day <= today:
                v = self.value(sub, self.day_moment(day))
                if v > 0:
                    values[day] = v
                day += dt.timedelta(days=1)
            out[sub.idx] = values
        return out

    def daily(self, today: dt.date) -> dict[str, dict[dt.date, DayRow]]:
        """currency -> day -> DayRow, from the first day with MRR to `today`, no gaps."""
        per_customer: dict[tuple[str, str], dict[dt.date, Fraction]] = defaultdict(dict)
        active_subs: dict[tuple[str, dt.date], int] = defaultdict(int)
        for idx, values in self.subscription_values(today).items():
            sub = self.a.subs[idx]
            days = per_customer[(sub.currency, sub.customer)]
            for day, v in values.items():
                days[day] = days[day] + v if day in days else v
                active_subs[(sub.currency, day)] += 1
        cents: dict[tuple[str, dt.date], int] = defaultdict(int)
        paying: dict[tuple[str, dt.date], int] = defaultdict(int)
        moves: dict[tuple[str, dt.date], dict[str, int]] = defaultdict(lambda: dict.fromkeys(MOVEMENTS, 0))
        for (currency, _customer), days in per_customer.items():
            if not days:
                continue
            rounded = {d: half_up_cents(v) for d, v in days.items()}
            had_before, prev = False, 0
            day, last = min(rounded), max(rounded) + dt.timedelta(days=1)
            while day <= min(last, today):
                now_c = rounded.get(day, 0)
                m = moves[(currency, day)]
                if prev == 0 and now_c > 0:
                    m["reactivation_mrr" if had_before else "new_mrr"] += now_c
                elif prev > 0 and now_c > prev:
                    m["expansion_mrr"] += now_c - prev
                elif prev > 0 and 0 < now_c < prev:
                    m["contraction_mrr"] += prev - now_c
                elif prev > 0 and now_c == 0:
                    m["churned_mrr"] += prev
                if now_c > 0:
                    cents[(currency, day)] += now_c
                    paying[(currency, day)] += 1
                    had_before = True
                prev = now_c
                day += dt.timedelta(days=1)
        out: dict[str, dict[dt.date, DayRow]] = {}
        for currency in sorted({c for c, _ in cents}):
            start = min(d for c, d in cents if c == currency and cents[(c, d)] > 0)
            series, day = {}, start
            while day <= today:
                key = (currency, day)
                m = moves.get(key) or dict.fromkeys(MOVEMENTS, 0)
                series[day] = DayRow(cents.get(key, 0), active_subs.get(key, 0), paying.get(key, 0), **m)
                day += dt.timedelta(days=1)
            out[currency] = series
        return out


@functools.lru_cache(maxsize=None)
def half_up_cents(value: Fraction) -> int:
    """A non-negative exact amount of major units, rounded half-up to 0.01, as integer cents."""
    return floor(value * 100 + Fraction(1, 2))


class ApiVisibleHistory(HistoryTruth):
    """The same history as far as Stripe's API can still show it on the day of the run.

    The API returns current objects, 30 days of events and every invoice with its lines; it keeps no record of
    these three facts once they are older than the event window (`window_start`, the first event's time):

    A. An item change that nothing dates: no event (older than the window), no proration line of either parent
       shape, no pending proration invoice item (/v1/invoiceitems), no renewal starting at it. Only
       `proration_behavior=none` changes are like that. The API shows the items as last invoiced until the next
       renewal's invoice (or the window, whichever comes first). When no renewal came since (the change lies in
       the current period) the current items differ from the last invoiced ones, and MRR_SPEC section 5 counts
       them from the start of the current period, or from the latest dated change after it: the new state
       shows from then on, possibly before the change really happened.
    B. A subscription-level discount that is no longer listed (a `repeating` coupon that ended, a `once` coupon
       removed after its invoice): while it ran, it kept the customer's discount off the subscription, but the
       API no longer shows it, so the customer's forever discount seems to apply from the start. (Inside the
       event window the events' `data.object.discounts` would still show it; the transform does not read them,
       and the sandbox emits no event when a repeating discount ends. The test's account has no such case in
       the window.)
    C. The moment a subscription became unpaid, when the event is older than the window: the spec's fallback is
       the end of the period of its last paid invoice's subscription lines (Stripe retries for days after that,
       during which the subscription is past_due and still counts).
    """

    def __init__(self, account) -> None:
        super().__init__(account)
        self.window_start = min((e.created for e in account.events), default=account.now)
        lines = defaultdict(list)  # subscription id -> (invoice status, Line)
        for inv in account.invoices:
            for ln in inv.lines:
                lines[inv.sub].append((inv.status, ln))
        pending = defaultdict(list)  # subscription id -> pending proration lines (listed by /v1/invoiceitems)
        for sub_idx, ln in account.pending_items:
            pending[account.subs[sub_idx].id].append(ln)
        window = self.window_start
        # (A) per subscription: (from, until, item id, the item as shown, or None) where the API shows the item
        # otherwise than it was
        self.hidden_changes: dict[int, list[tuple[int, int, str, object]]] = {}
        self.paid_until: dict[int, int] = {}
        for sub in account.subs:
            sub_lines = lines.get(sub.id, [])
            renewals = sorted({ln.start for _, ln in sub_lines if ln.kind in ("sub", "trial")})
            prorated = {ln.start for _, ln in sub_lines if ln.kind.startswith("proration")}
            prorated |= {ln.start for ln in pending.get(sub.id, [])}
            dated = prorated | set(renewals)
            current_start = account.sub_period(sub, sub.versions[-1], account.now)[0]
            at_window = {it.id: it for it in self.state_at(sub, window).items} if self.state_at(sub, window) else {}
            hidden = []
            for k in range(1, len(sub.versions)):
                before, after = sub.versions[k - 1], sub.versions[k]
                if after.items == before.items or after.t >= window or after.t in dated:
                    continue
                old = {it.id: it for it in before.items}
                new = {it.id: it for it in after.items}
                renewal = next((r for r in renewals if r > after.t), None)
                for iid in set(old) | set(new):
                    if old.get(iid) == new.get(iid):
                        continue
                    if renewal is not None and renewal < window:
                        # the next renewal's invoice shows it
                        hidden.append((after.t, renewal, iid, old.get(iid)))
                    elif current_start <= after.t:
                        # in the current period: the current items count from its start or the latest dated
                        # change after it (before the window)
                        since = max([current_start, *(d for d in prorated if d < window)])
                        if since <= after.t:
                            hidden.append((since, after.t, iid, at_window.get(iid)))
                        else:
                            hidden.append((after.t, since, iid, old.get(iid)))
                    else:
                        # the window's events show it
                        hidden.append((after.t, window, iid, old.get(iid)))
            if hidden:
                self.hidden_changes[sub.idx] = sorted(hidden, key=lambda h: h[0], reverse=True)
            went_unpaid = [after.t for before, after in zip(sub.versions, sub.versions[1:])
                           if after.status == "unpaid" and before.status in COUNTING]
            if went_unpaid and went_unpaid[-1] < self.window_start:  # (C)
                self.paid_until[sub.idx] = max(
                    (ln.end for status, ln in sub_lines if status == "paid" and ln.kind in ("sub", "trial")),
                    default=sub.start)
        self._listed_now = {sub.idx: {di for di in sub.versions[-1].discounts if self._in_effect(di, account.now)}
                            for sub in account.subs}

    def items_at(self, sub, state, t: int):
        items = {it.id: it for it in state.items}
        for since, until, iid, shown in self.hidden_changes.get(sub.idx, ()):  # latest first
            if since <= t < until:  # (A) the item as the API shows it then
                if shown is None:
                    items.pop(iid, None)
                else:
                    items[iid] = shown
        return tuple(items.values())

    def own_discounts(self, sub, state, t: int) -> list[int]:
        listed = self._listed_now[sub.idx]
        return [di for di in super().own_discounts(sub, state, t) if di in listed]  # (B)

    def counts(self, sub, state, t: int) -> bool:
        if sub.idx in self.paid_until and t >= self.paid_until[sub.idx]:
            return False  # (C)
        return super().counts(sub, state, t)


COLUMNS = ("mrr", "active_subscriptions", "paying_customers", *MOVEMENTS)
ZERO = DayRow(0, 0, 0, 0, 0, 0, 0, 0)


def as_rows(series: dict[str, dict[dt.date, DayRow]]) -> dict[tuple[str, dt.date], DayRow]:
    """currency -> day -> DayRow as one mapping keyed by (currency, day)."""
    return {(currency, day): row for currency, days in series.items() for day, row in days.items()}


def differences(got: dict, expected: dict, days=lambda day: True) -> list[tuple[str, dt.date, dict]]:
    """(currency, day, {column: (published, expected)}) where they differ; a missing row counts as zeros."""
    out = []
    for currency, day in sorted(set(got) | set(expected)):
        if not days(day):
            continue
        a, b = got.get((currency, day), ZERO), expected.get((currency, day), ZERO)
        diff = {c: (getattr(a, c), getattr(b, c)) for c in COLUMNS if getattr(a, c) != getattr(b, c)}
        if diff:
            out.append((currency, day, diff))
    return out
