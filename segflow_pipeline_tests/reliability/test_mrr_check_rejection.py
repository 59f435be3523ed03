"""A corrupted input makes the MRR checks fail: the run fails naming the check and why, nothing is written, and
the published file stays the previous one, byte for byte.

The corruption: one subscription item's quantity in the integration's working file turned into 10^15 (a bad
edit, a bug in an older sync), so that subscription's MRR no longer fits the contract's DECIMAL(18,2). The
following incremental refresh reads no change from Stripe for it and keeps the corrupted row."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from segflow_pipeline.runner import failure_messages
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import apply_env, check_results, make_env, run_job


@pytest.fixture(scope="module")
def corrupted_run(reference, tmp_path_factory):
    """The reference refresh's files with one quantity corrupted, then an incremental refresh."""
    root = tmp_path_factory.mktemp("corrupted")
    mp = pytest.MonkeyPatch()
    try:
        with EmulatorServer({reference.key: reference.account}) as server:
            env = make_env(root, server.url, reference.key)
            # Start from the reference refresh: its published and working files (same account, same key).
            shutil.copytree(reference.published.parent, env.published.parent,
                            ignore=shutil.ignore_patterns("*.lock", "reports"))
            working = env.working_dir / "default.duckdb"
            con = duckdb.connect(str(working))
            try:
                item = con.execute(
                    "select i.id from stripe.subscription_items i join stripe.subscriptions s "
                    "on s.id = i.subscription where s.status = 'active' and i.quantity = 1 order by i.id limit 1"
                ).fetchone()[0]
                con.execute("update stripe.subscription_items set quantity = 1000000000000000 where id = ?", [item])
                mrr_before = con.execute("select * from metrics.mrr_daily order by all").fetchall()
            finally:
                con.close()
            published_before = env.published.read_bytes()
            apply_env(mp, env)
            result = run_job(full=False, max_requests_per_second=500)
    finally:
        mp.undo()
    yield result, env, published_before, mrr_before


@pytest.mark.slow
def test_a_corrupted_quantity_fails_the_mrr_schema_check_and_keeps_the_published_file(corrupted_run):
    result, env, published_before, mrr_before = corrupted_run
    assert not result.success
    schema = check_results(result)["metrics/mrr_daily:matches_schema"]
    assert not schema.passed
    metadata = {k: getattr(v, "value", v) for k, v in schema.metadata.items()}
    assert metadata["failing_rows"] > 0
    # Why: the amounts no longer fit the contract's DECIMAL(18,2) (before the fix: a Polars cast error instead).
    assert "amounts_fit_decimal_18_2" in metadata["first_failures"]
    assert "| mrr | not_nullable |" in metadata["first_failures"]
    # Which check, in the run's failure (what `segflow refresh` prints).
    mrr_failure = [m for m in failure_messages(result) if "metrics.mrr_daily" in m]
    assert len(mrr_failure) == 1 and "fails matches_schema" in mrr_failure[0]
    assert "nothing was written and the published table is unchanged" in mrr_failure[0]

    assert env.published.read_bytes() == published_before
    con = duckdb.connect(str(env.working_dir / "default.duckdb"), read_only=True)
    try:
        assert con.execute("select * from metrics.mrr_daily order by all").fetchall() == mrr_before
    finally:
        con.close()


def test_every_failing_step_fails_on_a_named_check(corrupted_run):
    result, _, _, _ = corrupted_run
    messages = failure_messages(result)
    assert all("; nothing was written and the published table is unchanged" in m for m in messages), messages
