"""The sandbox's churn is spread over its history, as in a real account: the most recent month is not special.

A generator that draws each subscription's *current* status and then dates the way there in the latest period
piles every pending cancellation and every unpaid subscription into the last weeks: the demo's churned MRR then
jumped in its most recent month (10 % of MRR against 2-4 % before), which looked like a stitching bug between
event-based and invoice-based history although the pipeline reproduced the sandbox's truth exactly.
"""

from __future__ import annotations

from stripe_sandbox._time import DAY
from stripe_sandbox.account import build_account

NOW = 1767225600  # 2026-01-01T00:00:00Z


def churn_moments(account) -> dict[str, list[int]]:
    """Per cause, the moments subscriptions stopped counting: a cancellation requested (at period end or at once),
    or a subscription turned unpaid."""
    out: dict[str, list[int]] = {"request": [], "now": [], "unpaid": []}
    for sub in account.subs:
        for before, after in zip(sub.versions, sub.versions[1:]):
            if after.cancel_at_period_end and not before.cancel_at_period_end:
                out["request"].append(after.t)
            elif after.status == "canceled" and before.status in ("active", "past_due"):
                out["now"].append(after.t)
            elif after.status == "unpaid" and before.status != "unpaid":
                out["unpaid"].append(after.t)
    return out


def test_cancellations_requested_last_month_are_not_a_pile_of_pending_ones():
    account = build_account(n_subscriptions=2000, seed=3, now=NOW)
    requests = churn_moments(account)["request"]
    last_month = sum(1 for t in requests if t >= NOW - 30 * DAY)
    # the six months before, per 30 days (the account grows, so a recent month may see somewhat more)
    before = sum(1 for t in requests if NOW - 210 * DAY <= t < NOW - 30 * DAY) / 6
    assert last_month <= 2 * before, (last_month, before)


def test_unpaid_subscriptions_went_unpaid_at_any_time_not_only_lately():
    account = build_account(n_subscriptions=2000, seed=3, now=NOW)
    unpaid = churn_moments(account)["unpaid"]
    assert len(unpaid) >= 20
    assert sum(1 for t in unpaid if t < NOW - 90 * DAY) >= len(unpaid) / 3
