"""The reliability suite's fault-free reference run: the whole Dagster job, in process, against an emulator without
faults. Every test that says "equal to a fault-free run" compares with it: the same account object is served by
each test's own emulator. Helpers: `support/reliability.py`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import (
    N_SUBSCRIPTIONS,
    SEED,
    Reference,
    apply_env,
    distinctive_key,
    make_env,
    published_state,
    run_job,
)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    account = build_account(n_subscriptions=N_SUBSCRIPTIONS, seed=SEED)
    key = distinctive_key()
    root = tmp_path_factory.mktemp("reference")
    mp = pytest.MonkeyPatch()
    try:
        with EmulatorServer({key: account}) as server:
            env = make_env(root, server.url, key)
            apply_env(mp, env)
            result = run_job(max_requests_per_second=500)
            assert result.success
        state = published_state(env.published)
    finally:
        mp.undo()
    assert state["stripe.subscriptions"] and state["metrics.mrr_daily"]
    assert not state["stripe.quarantine"]
    yield Reference(account=account, key=key, state=state, published=env.published)
