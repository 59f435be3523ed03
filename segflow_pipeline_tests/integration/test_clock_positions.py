"""The demo works on any day: the sandbox account built at an instant and the whole job run as of that instant,
at clock positions spread over the calendar (month and year ends, both Feb 29ths, just after UTC midnight,
mid-month). Each position must succeed with every check green, its series must end on the position's day, and the
published raw tables must hold every object the emulator lists for that account (the sync's windows follow the
run's clock, not the machine's).

Positions run in worker processes (as many as there are cores, at most 2), several per process; the emulator runs
here, serving one account per position under a key of its own. `make test` runs the positions of `EVERY_DAY`
(both Feb 29ths, a year end, a February end, just after midnight); the others are marked slow and run in
`make test-all` and CI.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
import stripe

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.integration.clock_worker import Outcome, Position, run_positions

SUBSCRIPTIONS = 60
# Position i uses the account of seed SEED + i (the first is the demo's own): one small account per position, so
# the positions cover many account shapes as well as many days.
SEED = 7
POSITIONS = [
    "2024-02-29T00:00:05Z",  # leap day, just after UTC midnight
    "2024-02-29T23:59:59Z",  # leap day, last second
    "2024-03-01T00:00:05Z",
    "2024-12-31T23:59:59Z",  # year end
    "2025-01-01T00:00:05Z",
    "2025-01-15T12:00:00Z",  # mid-month
    "2025-01-31T23:59:59Z",
    "2025-02-28T23:59:59Z",  # end of a non-leap February
    "2025-03-01T00:00:05Z",
    "2025-03-31T00:00:05Z",
    "2025-04-30T23:59:59Z",
    "2025-05-16T08:30:00Z",
    "2025-06-30T00:00:05Z",
    "2025-07-01T00:00:05Z",
    "2025-08-31T23:59:59Z",
    "2025-09-15T17:45:00Z",
    "2025-10-31T00:00:05Z",
    "2025-11-30T23:59:59Z",
    "2025-12-31T23:59:59Z",
    "2026-01-01T00:00:05Z",
    "2026-02-28T00:00:05Z",
    "2026-03-31T23:59:59Z",
    "2026-06-15T12:00:00Z",
    "2026-09-30T23:59:59Z",
    "2026-12-06T00:00:05Z",
    "2027-12-31T23:59:59Z",
    "2028-02-29T00:00:05Z",  # the next leap day
]


def epoch(instant: str) -> int:
    return int(dt.datetime.fromisoformat(instant).timestamp())


def key_for(index: int) -> str:
    return f"sk_test_clock{index:02d}_4eC39HqLyjWDarjtT1zd"


def listed(url: str, key: str) -> dict[str, int]:
    """What the emulator lists for the account, read with the official SDK (the independent side)."""
    client = stripe.StripeClient(key, base_addresses={"api": url})
    return {
        "subscriptions": sum(1 for _ in client.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter()),
        "events": sum(1 for _ in client.events.list({"limit": 100}).auto_paging_iter()),
        "invoices": sum(1 for _ in client.invoices.list({"limit": 100}).auto_paging_iter()),
    }


EVERY_DAY = ("2024-02-29T00:00:05Z", "2024-12-31T23:59:59Z", "2025-01-01T00:00:05Z", "2025-02-28T23:59:59Z",
             "2025-03-01T00:00:05Z", "2026-12-06T00:00:05Z", "2027-12-31T23:59:59Z", "2028-02-29T00:00:05Z")
CASES = [p if p in EVERY_DAY else pytest.param(p, marks=pytest.mark.slow) for p in POSITIONS]
TEST = "test_the_whole_job_is_green_as_of"


@pytest.fixture(scope="module")
def clock_runs(request, tmp_path_factory) -> tuple[dict[str, Outcome], dict[str, dict[str, int]]]:
    """Every selected position, run at once (the others are left out of this session)."""
    selected = {item.callspec.params["instant"] for item in request.session.items
                if getattr(item, "originalname", "") == TEST}
    indexed = [(i, p) for i, p in enumerate(POSITIONS) if p in selected]
    accounts = {key_for(i): build_account(n_subscriptions=SUBSCRIPTIONS, seed=SEED + i, now=epoch(p))
                for i, p in indexed}
    positions = [Position(instant=p, key=key_for(i), root=str(tmp_path_factory.mktemp(f"clock{i:02d}")))
                 for i, p in indexed]
    workers = max(1, min(2, os.cpu_count() or 1))
    with EmulatorServer(accounts) as server:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_positions, positions[w::workers], server.url) for w in range(workers)]
            outcomes = {o.instant: o for future in futures for o in future.result()}
        expected = {p.instant: listed(server.url, p.key) for p in positions}
    return outcomes, expected


@pytest.mark.parametrize("instant", CASES)
def test_the_whole_job_is_green_as_of(instant: str, clock_runs) -> None:
    outcomes, expected = clock_runs
    outcome = outcomes[instant]
    assert outcome.failed_checks == [] and outcome.success, "\n".join(
        [f"seed {SEED + POSITIONS.index(instant)}, {SUBSCRIPTIONS} subscriptions, as of {instant}:",
         *outcome.failed_checks, *outcome.errors])
    assert outcome.last_day == instant[:10]  # the series runs to the position's day, not the machine's
    assert outcome.synced == expected[instant]
