"""The production deployment end to end: 20 Stripe accounts on a PostgreSQL-backed instance, one schedule tick,
the daemon's run queue with at most 4 runs at once and at most one per account.

PostgreSQL is started with deploy/postgres.sh, the instance is deploy/dagster.yaml (only the queue's size and poll
interval lowered), the tick is Dagster's scheduler iteration, and `dagster-daemon run` launches the queued runs in
their own processes. Every figure below is read back from PostgreSQL.
"""

import datetime as dt
import json

import duckdb
import pytest
from dagster import DagsterEventType

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.keys import mask
from segflow_pipeline_tests.deploy import harness

N_ACCOUNTS = 20
SUBSCRIPTIONS = 40
MAX_CONCURRENT_RUNS = 4
BAD = "acct13"
DUPLICATE = "acct02"  # also started by hand just before the tick: the per-account limit must keep them apart

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    """One tick of the schedule over 20 accounts, run to completion by the daemon; yields what the checks read."""
    sandbox = harness.sandbox_module()
    root = tmp_path_factory.mktemp("stack")
    integrations = [sandbox.sandbox_integration(i) for i in range(1, N_ACCOUNTS + 1)]
    keys = {s.name: s.key for s in integrations}
    keys[BAD] = f"sk_test_{BAD}_revoked7Hq2LmZx9Wc4Rt"  # a key the emulator (like Stripe) does not know: 401
    served = {keys[s.name]: account for s, account in
              zip(integrations, sandbox.build_accounts(N_ACCOUNTS, SUBSCRIPTIONS).values()) if s.name != BAD}
    sandbox.write_integrations(root / "integrations.yaml", integrations)
    cron, tick = harness.far_cron()
    home = harness.write_dagster_home(root / "dagster_home", max_concurrent_runs=MAX_CONCURRENT_RUNS,
                                      dequeue_interval_seconds=1)
    published = root / "data" / "segflow.duckdb"

    mp = pytest.MonkeyPatch()
    with EmulatorServer(served, latency_s=0.02) as emulator:
        env = {**postgres, "DAGSTER_HOME": str(home), "SEGFLOW_INTEGRATIONS_FILE": str(root / "integrations.yaml"),
               "SEGFLOW_DUCKDB_PATH": str(published), "STRIPE_API_BASE": emulator.url,
               "SEGFLOW_REFRESH_CRON": cron, "SEGFLOW_REFRESH_TIMEZONE": "UTC",
               **{s.key_env: keys[s.name] for s in integrations}}
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("STRIPE_API_KEY", raising=False)
        try:
            harness.launch_run({"segflow/integration": DUPLICATE, "dagster/partition": DUPLICATE,
                                "segflow/trigger": "manual"})
            harness.tick_schedule(tick)
            queued = harness.run_rows(postgres)
            with harness.daemon(root / "daemon.log") as proc:
                runs = harness.wait_for_runs(postgres, N_ACCOUNTS + 1, timeout_s=900, proc=proc)
                # The retry daemon looks at the failed run; wait (bounded) until it has said why it does not retry.
                bad_run = next(r["run_id"] for r in runs if r["tags"].get("segflow/integration") == BAD)
                retry_note = _wait_for_event(postgres, bad_run, "Not retrying run", timeout_s=30)
        finally:
            mp.undo()
        runs = harness.run_rows(postgres)
        yield {"queued": queued, "runs": runs, "keys": keys, "published": published, "tick": tick,
               "retry_note": retry_note, "why": harness.explain(postgres, runs, root / "daemon.log")}


def _wait_for_event(pg, run_id: str, text: str, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if harness.query(pg, "select count(*) from event_logs where run_id = %s and event like %s",
                         (run_id, f"%{text}%"))[0][0]:
            return True
        time.sleep(1.0)
    return False


def _scheduled(runs):
    return [r for r in runs if r["tags"].get("dagster/schedule_name") == harness.SCHEDULE]


def test_the_tick_queued_one_run_per_account(stack):
    scheduled = _scheduled(stack["queued"])
    assert len(scheduled) == N_ACCOUNTS
    assert {r["status"] for r in scheduled} == {"QUEUED"}
    assert sorted(r["partition"] for r in scheduled) == [f"acct{i:02d}" for i in range(1, N_ACCOUNTS + 1)]
    day = stack["tick"].strftime("%Y-%m-%d")
    for r in scheduled:
        assert r["tags"]["segflow/integration"] == r["partition"]
        assert r["tags"]["dagster/run_key"] == f"{day}:{r['partition']}"


def test_every_account_ran_exactly_once_and_only_the_bad_key_failed(stack):
    scheduled = _scheduled(stack["runs"])
    assert sorted(r["partition"] for r in scheduled) == [f"acct{i:02d}" for i in range(1, N_ACCOUNTS + 1)]
    status = {r["partition"]: r["status"] for r in scheduled}
    assert status.pop(BAD) == "FAILURE"
    assert set(status.values()) == {"SUCCESS"}, stack["why"]
    # Nothing else ran: the manual duplicate succeeded, and no run was retried.
    others = [r for r in stack["runs"] if r not in scheduled]
    assert [(r["tags"].get("segflow/trigger"), r["partition"], r["status"]) for r in others] == [
        ("manual", DUPLICATE, "SUCCESS")], stack["why"]
    assert not [r for r in stack["runs"] if "dagster/parent_run_id" in r["tags"]]


def test_at_most_four_runs_at_once_and_never_two_on_one_account(stack):
    runs = stack["runs"]
    assert all(r["start"] and r["end"] and r["end"] >= r["start"] for r in runs), stack["why"]
    peak = harness.max_overlap([(r["start"], r["end"]) for r in runs])
    assert 2 <= peak <= MAX_CONCURRENT_RUNS, peak
    by_account: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_account.setdefault(r["partition"], []).append((r["start"], r["end"]))
    assert len(by_account[DUPLICATE]) == 2
    for account, intervals in by_account.items():
        assert harness.max_overlap(intervals) == 1, account
    # The scheduled run of the duplicate account was held back while the manual one ran, not merely queued late.
    (manual,) = [r for r in runs if r["tags"].get("segflow/trigger") == "manual"]
    (scheduled_dup,) = [r for r in _scheduled(runs) if r["partition"] == DUPLICATE]
    started_before = [r for r in _scheduled(runs) if r["start"] < manual["end"]]
    assert scheduled_dup["start"] >= manual["end"]
    assert started_before, "no other account started while the manual run was in progress"


def test_the_bad_key_fails_with_its_masked_key_and_a_clear_message(postgres, stack):
    (bad,) = [r for r in _scheduled(stack["runs"]) if r["partition"] == BAD]
    failures = [e for (e,) in harness.query(
        postgres, "select event from event_logs where run_id = %s and dagster_event_type = 'STEP_FAILURE'",
        (bad["run_id"],))]
    assert failures
    text = " ".join(json.dumps(json.loads(e), ensure_ascii=False) for e in failures)  # the mask has a "…"
    assert "Stripe rejected the API key" in text
    assert mask(stack["keys"][BAD]) in text
    assert stack["retry_note"], "the retry daemon did not record why the failed run is not retried"


def test_no_key_reaches_postgres(postgres, stack):
    for key in stack["keys"].values():
        for table, column in (("event_logs", "event"), ("runs", "run_body"), ("run_tags", "value")):
            (n,) = harness.query(postgres, f"select count(*) from {table} where {column} like %s", (f"%{key}%",))[0]
            assert n == 0, (table, mask(key))


def test_runs_and_their_event_logs_are_in_postgres(postgres, stack):
    run_ids = [r["run_id"] for r in stack["runs"]]
    counts = dict(harness.query(
        postgres, "select run_id, count(*) from event_logs where run_id = any(%s) group by run_id", (run_ids,)))
    assert set(counts) == set(run_ids)
    success, failure = DagsterEventType.RUN_SUCCESS.value, DagsterEventType.RUN_FAILURE.value  # PIPELINE_* in the table
    ends = dict(harness.query(
        postgres, "select run_id, dagster_event_type from event_logs where run_id = any(%s) and dagster_event_type "
                  "in (%s, %s)", (run_ids, success, failure)))
    assert ends == {r["run_id"]: {"SUCCESS": success, "FAILURE": failure}[r["status"]] for r in stack["runs"]}
    materialized = harness.query(
        postgres, "select count(distinct partition) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
                  " and partition is not null")[0][0]
    assert materialized == N_ACCOUNTS - 1
    # The schedule's tick is in the schedule storage, with the runs it requested.
    (ticks,) = harness.query(postgres, "select count(*) from job_ticks where status = 'SUCCESS'")[0]
    assert ticks == 1


def test_the_published_file_holds_every_good_account(stack):
    con = duckdb.connect(str(stack["published"]), read_only=True)
    try:
        names = {n for (n,) in con.execute("select distinct integration from metrics.mrr_daily").fetchall()}
        today = con.execute("select count(*) from metrics.mrr_daily where date = ?",
                            [dt.datetime.now(dt.timezone.utc).date()]).fetchone()[0]
    finally:
        con.close()
    assert names == {f"acct{i:02d}" for i in range(1, N_ACCOUNTS + 1)} - {BAD}
    assert today >= N_ACCOUNTS - 1
