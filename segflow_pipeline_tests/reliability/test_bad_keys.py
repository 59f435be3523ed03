"""Bad keys, each through `segflow check` (the real command, a subprocess) and through a refresh (`segflow refresh`
in process): empty, publishable, revoked (401), restricted without a permission (403), and a live key on an empty
account. Each gets its own message naming the fix, the key only masked, and a failing refresh leaves the published
file byte for byte as it was."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from segflow_pipeline import cli
from stripe_sandbox.account import build_account
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.keys import mask
from segflow_pipeline_tests.support.reliability import (
    apply_env,
    assert_same_state,
    distinctive_key,
    make_env,
    published_state,
    run_cli,
    run_job,
)

RESTRICTED = distinctive_key("rk_test_")
LIVE_EMPTY = distinctive_key("sk_live_")
REVOKED = distinctive_key("sk_test_")  # well formed, unknown to the account: Stripe answers 401
PUBLISHABLE = distinctive_key("pk_test_")
SEED_EMPTY = 22

CASES = {
    "empty": ("", ["No Stripe API key: set STRIPE_API_KEY", "segflow demo"]),
    "publishable": (PUBLISHABLE, [f"STRIPE_API_KEY holds a publishable key ({mask(PUBLISHABLE)})",
                                  "use a secret or restricted key"]),
    "revoked": (REVOKED, [f"Stripe rejected the API key {mask(REVOKED)} (401)", "invalid, expired or was revoked",
                          "Create or roll a test-mode key"]),
    "restricted_without_permission": (RESTRICTED, [
        f"The restricted key {mask(RESTRICTED)} may not read subscriptions (missing permission "
        "rak_subscription_read) (403)", "give it Read access to: subscriptions"]),
}


@pytest.fixture(scope="module")
def server(reference):
    empty = build_account(n_subscriptions=0, seed=SEED_EMPTY, now=reference.account.now, livemode=True)
    accounts = {reference.key: reference.account, RESTRICTED: reference.account, LIVE_EMPTY: empty}
    with EmulatorServer(accounts, restricted={RESTRICTED: {"rak_subscription_read"}}) as srv:
        yield srv


@pytest.mark.parametrize("case", list(CASES))
def test_segflow_check_names_the_problem_and_the_fix(case, server, tmp_path):
    key, messages = CASES[case]
    env = make_env(tmp_path, server.url, key)
    out = run_cli(["segflow", "check"], env.process_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    text = out.stdout + out.stderr
    for message in messages:
        assert message in text
    assert "Traceback" not in out.stderr
    if key:
        assert key not in text
    if case == "restricted_without_permission":
        # Everything else is readable and said so; only the missing permission is reported.
        assert "read subscriptions: MISSING" in out.stdout and "read invoices: ok" in out.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_refresh_fails_once_with_the_message_and_keeps_the_published_file(case, server, reference, tmp_path,
                                                                          monkeypatch, capfd):
    key, messages = CASES[case]
    env = make_env(tmp_path, server.url, key)
    env.published.parent.mkdir(parents=True)
    shutil.copyfile(reference.published, env.published)
    before = env.published.read_bytes()
    apply_env(monkeypatch, env)
    monkeypatch.chdir(tmp_path)  # the CLI keeps its runs in ./.dagster_home
    capfd.readouterr()
    assert cli.main(["refresh", "--full"]) == 1
    captured = capfd.readouterr()
    failure = [line for line in captured.err.splitlines() if line.startswith("segflow: default: stripe_sync: ")]
    assert len(failure) == 1, captured.err[-3000:]
    for message in messages:
        assert message in failure[0]
    assert "the published file keeps its previous data" in captured.err
    if key:
        assert key not in captured.out + captured.err
    assert env.published.read_bytes() == before
    assert_same_state(published_state(env.published), reference.state)


def test_live_key_on_an_empty_account_warns_to_use_the_other_mode(server, tmp_path, monkeypatch, capfd):
    env = make_env(tmp_path, server.url, LIVE_EMPTY)
    warning = (f"The live-mode key {mask(LIVE_EMPTY)} sees no subscriptions at all. If your customers are in test "
               "mode, use the test-mode key (sk_test_… or rk_test_…) instead.")
    out = run_cli(["segflow", "check"], env.process_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 0
    assert f"key: {mask(LIVE_EMPTY)} (secret, live mode)" in out.stdout
    assert "subscriptions visible: 0" in out.stdout and f"warning: {warning}" in out.stdout

    apply_env(monkeypatch, env)
    monkeypatch.chdir(tmp_path)  # the CLI keeps its runs in ./.dagster_home
    capfd.readouterr()
    assert cli.main(["refresh", "--full"]) == 0
    captured = capfd.readouterr()
    assert warning in captured.err
    assert LIVE_EMPTY not in captured.out + captured.err


def test_after_fixing_a_wrong_mode_key_the_next_refresh_equals_a_full_sync(server, reference, tmp_path, monkeypatch):
    # Found here while 6c28dd4 fixed it in the sync: the next auto run used to be an incremental sync of the right
    # account from the wrong account's cursor (no prices read, MRR published empty).
    env = make_env(tmp_path, server.url, LIVE_EMPTY)
    apply_env(monkeypatch, env)
    assert run_job(full=False).success
    monkeypatch.setenv("STRIPE_API_KEY", reference.key)  # the user follows the warning and sets the test key
    assert run_job(full=False).success
    assert_same_state(published_state(env.published), reference.state)


class _WebPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_check_against_a_web_page_instead_of_stripe_is_one_readable_line(reference, tmp_path):
    # Before the fix: a traceback ending in StripeAPIFailure (the check only handled key errors).
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        env = make_env(tmp_path, url, reference.key)
        out = run_cli(["segflow", "check"], env.process_env(), cwd=tmp_path, timeout=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segflow: Stripe GET /v1/")
    assert f"STRIPE_API_BASE ({url})" in lines[0] and "Invalid response body" in lines[0]
    assert reference.key not in out.stdout + out.stderr
