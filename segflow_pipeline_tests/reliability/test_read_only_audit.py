"""The session-wide read-only audit (segflow_pipeline_tests/conftest.py) fails a session whose tests sent anything
but GET to an emulator, naming the test, and lets tests marked `emulator_write_probe` probe the refusal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from segflow_pipeline_tests.support.reliability import PROJECT

PROBE = textwrap.dedent('''
    import urllib.error
    import urllib.request

    import pytest

    from stripe_sandbox.account import build_account
    from stripe_sandbox.server import EmulatorServer

    KEY = "sk_test_audit_0123456789abcdef"


    def send(method):
        with EmulatorServer({KEY: build_account(n_subscriptions=0, seed=1)}) as server:
            body = b"a=1" if method != "GET" else None
            request = urllib.request.Request(server.url + "/v1/customers", method=method, data=body,
                                             headers={"Authorization": "Bearer " + KEY})
            try:
                urllib.request.urlopen(request).read()
            except urllib.error.HTTPError:
                pass


    def test_reads():
        send("GET")


    WRITE_TEST
''')


def run_session(tmp_path, write_test: str) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(PROBE.replace("WRITE_TEST", textwrap.dedent(write_test)))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "segflow_pipeline_tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-q", str(tmp_path / "test_probe.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"})


def test_a_post_to_an_emulator_fails_the_session_and_names_the_test(tmp_path):
    out = run_session(tmp_path, '''
        def test_writes():
            send("POST")
    ''')
    assert out.returncode == 1, out.stdout[-2000:]
    assert "2 passed" in out.stdout  # the tests themselves pass: the audit fails the session
    assert "READ-ONLY AUDIT FAILED" in out.stdout
    assert "test_probe.py::test_writes: 1 POST to http://127.0.0.1:" in out.stdout
    assert "test_probe.py::test_reads" not in out.stdout.split("READ-ONLY AUDIT FAILED")[1]


def test_write_probes_are_allowed_when_marked(tmp_path):
    out = run_session(tmp_path, '''
        @pytest.mark.emulator_write_probe
        def test_writes():
            send("DELETE")
    ''')
    assert out.returncode == 0, out.stdout[-2000:]
    assert "read-only audit: 2 emulator(s), 1 GET request(s)" in out.stdout
