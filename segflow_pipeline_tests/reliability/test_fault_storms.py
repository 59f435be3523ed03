"""Fault storms through the whole Dagster job, in process: 500s, 429s from a rate limit, latency spikes and broken
bodies end in exactly the tables of a fault-free run, and the sync's metadata counts every retry."""

from __future__ import annotations

import pytest

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import (
    apply_env,
    assert_same_state,
    make_env,
    materialization_metadata,
    published_state,
    run_job,
)


@pytest.mark.slow
def test_500s_429s_and_latency_spikes_end_in_the_fault_free_tables(reference, tmp_path, monkeypatch):
    # The account's budget is 4 req/s (another client uses the rest of Stripe's limit) while the reader is told it
    # may send 60: the sync's first concurrent requests alone overrun it, however slow the machine, so the emulator
    # answers 429s and the reader has to back off by itself.
    with EmulatorServer({reference.key: reference.account}, rate_limit_per_s=4, error_rate=0.05,
                        latency_spike_rate=0.05, spike_s=(0.3, 2.0), seed=5) as server:
        env = make_env(tmp_path, server.url, reference.key)
        apply_env(monkeypatch, env)
        result = run_job(max_requests_per_second=60)
        stats = server.stats()
    assert result.success
    assert_same_state(published_state(env.published), reference.state)

    by_status = stats["by_status"]
    assert by_status.get(429, 0) > 0 and by_status.get(500, 0) > 0 and stats["latency_spikes"] > 0
    meta = materialization_metadata(result, "stripe/subscriptions")
    # Every answer the emulator gave is one request of the reader; every 429 and 500 was retried and counted.
    assert meta["requests"] == stats["requests"]
    assert meta["retried_429"] == by_status[429] > 0
    assert meta["retried_5xx"] == by_status[500] > 0
    assert meta["quarantined"] == 0


@pytest.mark.slow
def test_truncated_bodies_and_html_error_pages_are_retried_to_the_same_tables(reference, tmp_path, monkeypatch):
    # 15 % of answers are broken: half a JSON body cut short with HTTP 200, half a proxy's HTML 502 page.
    with EmulatorServer({reference.key: reference.account}, bad_body_rate=0.15, seed=8) as server:
        env = make_env(tmp_path, server.url, reference.key)
        apply_env(monkeypatch, env)
        result = run_job(max_requests_per_second=500)
        stats = server.stats()
    assert result.success
    assert_same_state(published_state(env.published), reference.state)
    meta = materialization_metadata(result, "stripe/subscriptions")
    html_502 = stats["by_status"].get(502, 0)
    assert html_502 > 0 and stats["truncated_bodies"] > 0
    assert meta["retried_5xx"] == html_502
    assert meta["requests"] == stats["requests"]
