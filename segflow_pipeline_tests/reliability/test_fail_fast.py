"""Failures that no retry can fix fail the run at once, with their own message, instead of being retried twice by
Dagster (30 s, then 60 s: about 125 s before the fix): a web page instead of Stripe's JSON, a deterministic 400, a
directory the pipeline cannot write, another process holding the working file. `segflow refresh` says the
published file keeps its previous data only when there is one.

Each case counts what was tried (requests, step events) rather than timing it: the seconds to fail are measured
in the report of this change, not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segflow_pipeline import cli
from segflow_pipeline_tests.support.reliability import (
    FakeStripe,
    Request,
    apply_env,
    distinctive_key,
    empty_list,
    json_answer,
    make_env,
    run_job,
    step_events,
)

KEY = distinctive_key()
HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"


def web_page(fake: FakeStripe, request: Request):
    return 200, HTML, "text/html"


def cannot_expand(fake: FakeStripe, request: Request):
    if request.path == "/v1/subscriptions":
        return json_answer({"error": {"type": "invalid_request_error", "message": "This property cannot be expanded "
                                      "(data.items.data.price.tiers).", "param": "expand[0]"}}, 400)
    return empty_list(request.path)


def nothing(fake: FakeStripe, request: Request):
    return empty_list(request.path)


def unwritable(root: Path) -> Path:
    """A directory the pipeline cannot create files in. root ignores permission bits, so for root it is a path
    under a regular file (the directory can never be created); for anyone else a directory without write access."""
    if os.geteuid() == 0:
        blocker = root / "not-a-directory"
        blocker.write_text("")
        return blocker / "data"
    data = root / "read-only"
    data.mkdir()
    data.chmod(0o555)
    return data


def sync_failure(result) -> str:
    """The only failed step must be the sync, failed once: its description (what `segflow refresh` prints)."""
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    failures = step_events(result, "STEP_FAILURE")
    assert [e.step_key for e in failures] == ["stripe_sync"]
    user = failures[0].step_failure_data.user_failure_data
    assert user is not None and user.description
    return user.description


def test_a_web_page_instead_of_stripe_fails_once(tmp_path, monkeypatch):
    with FakeStripe(web_page) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        apply_env(monkeypatch, env)
        result = run_job()
        asked = [r.target for r in fake.requests]
    description = sync_failure(result)
    assert "Invalid response body" in description and f"STRIPE_API_BASE ({fake.url})" in description, description
    assert "Not retried" in description
    # The sync's first lists, once each: nothing was asked twice (how many lists had started when the first answer
    # came back depends on the machine's load, so their number is not fixed).
    assert asked and len(asked) == len(set(asked)), asked


def test_a_deterministic_400_fails_once_with_stripes_message(tmp_path, monkeypatch):
    with FakeStripe(cannot_expand) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        apply_env(monkeypatch, env)
        result = run_job()
        subscriptions = fake.count("/v1/subscriptions")
    description = sync_failure(result)
    assert "HTTP 400" in description and "This property cannot be expanded" in description, description
    assert subscriptions == 1


def test_a_directory_that_cannot_be_written_fails_once_naming_it(tmp_path, monkeypatch):
    with FakeStripe(nothing) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        env.published = unwritable(tmp_path) / "segflow.duckdb"
        env.values["SEGFLOW_DUCKDB_PATH"] = str(env.published)
        apply_env(monkeypatch, env)
        result = run_job()
    description = sync_failure(result)
    assert str(env.published.parent) in description and "SEGFLOW_DUCKDB_PATH" in description, description


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists outside as select 1 as x")
print("holding", flush=True)
time.sleep(600)
"""


def test_another_process_holding_the_working_file_fails_once_naming_it(tmp_path, monkeypatch):
    with FakeStripe(nothing) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        env.working_dir.mkdir(parents=True)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(env.working_dir / "default.duckdb")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "holding"
            apply_env(monkeypatch, env)
            result = run_job()
        finally:
            holder.kill()
            holder.wait()
    description = sync_failure(result)
    assert f"PID {holder.pid}" in description and "default.duckdb" in description, description
    assert "Close that connection" in description


@pytest.mark.parametrize("previous", [False, True], ids=["first-refresh", "after-a-good-one"])
def test_refresh_says_the_published_file_keeps_its_data_only_when_there_is_one(previous, tmp_path, monkeypatch,
                                                                              capfd):
    with FakeStripe(cannot_expand) as fake:
        env = make_env(tmp_path, fake.url, KEY)
        if previous:
            env.published.parent.mkdir(parents=True)
            env.published.write_bytes(b"the last good refresh")
        apply_env(monkeypatch, env)
        capfd.readouterr()
        assert cli.main(["refresh", "--full"]) == 1
        err = capfd.readouterr().err
    assert ("the published file keeps its previous data" in err) == previous, err
    if not previous:
        assert "nothing has been published yet" in err, err
