"""`segflow ui` (what `make ui` runs) after a demo, as a person uses it: the UI answers on 127.0.0.1, shows the demo's
materializations and checks, runs the whole job on the sandbox, and a plain `kill PID` stops every process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from segflow_pipeline_tests.integration.test_demo import BIN, segflow, user_env

pytestmark = pytest.mark.slow

INSTANT = "2025-06-30T00:00:05Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(1)
    return False


def group_members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, group in (line.split() for line in out.splitlines()) if int(group) == pgid]


def test_ui_shows_the_demo_runs_the_job_and_stops_on_kill(tmp_path: Path) -> None:
    demo = segflow(["demo", "--subscriptions", "60", "--sandbox-now", INSTANT], tmp_path, user_env())
    assert demo.returncode == 0, demo.stderr[-3000:]
    port = free_port()
    # The UI's output (and its runs' logs) go to a file: a pipe nobody reads fills up and blocks the run's logging.
    log = (tmp_path / "ui.log").open("w")
    ui = subprocess.Popen([str(BIN / "segflow"), "ui", "--port", str(port)], cwd=tmp_path, env=user_env(),
                          stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).status
                          == 200, 180), "the UI did not answer"
        nodes = graphql(port, """{ assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId }
            assetChecksOrError { ... on AssetChecks { checks { name description
                executionForLatestMaterialization { status } } } } } }""")["assetNodes"]
        shown = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert all(n["assetMaterializations"] for n in nodes), [k for k, n in shown.items()
                                                                 if not n["assetMaterializations"]]
        checks = [c for n in nodes for c in n["assetChecksOrError"]["checks"]]
        assert checks and all(c["description"] for c in checks)
        assert {(c["executionForLatestMaterialization"] or {}).get("status") for c in checks} == {"SUCCEEDED"}
        # "Materialize all": the whole job, launched from the UI, against the sandbox the demo synced.
        launched = graphql(port, """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
            __typename ... on LaunchRunSuccess { run { runId } } } }""", {"p": {
            "selector": {"repositoryLocationName": "segflow_pipeline.definitions", "repositoryName": "__repository__",
                         "jobName": "daily_refresh_job"}, "runConfigData": {}}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def status() -> str:
            return graphql(port, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}'
                           )["runOrError"]["status"]

        assert wait_until(lambda: status() in ("SUCCESS", "FAILURE", "CANCELED"), 300)
        assert status() == "SUCCESS"
    finally:
        os.kill(ui.pid, 15)  # what a person or a service manager does: SIGTERM to the command it started
        try:
            ui.wait(timeout=90)
        except subprocess.TimeoutExpired:
            for pid in group_members(ui.pid):
                os.kill(pid, 9)
            raise
        finally:
            log.close()
    assert wait_until(lambda: group_members(ui.pid) == [], 30), "processes of the UI outlived it"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
