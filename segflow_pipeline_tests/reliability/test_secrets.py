"""A distinctive key never leaves the process unmasked: not in the DuckDB files (published and working), not in
DAGSTER_HOME (run storage, event logs, compute logs: every file, sqlite included), not in the output of any CLI
command (success and 401/403 failures), exception texts or asset metadata. Where a key is shown, it is the masked
form `sk_test_…abcd`."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from segflow_pipeline.runner import failure_messages
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
from segflow_pipeline.stripe_api.keys import StripeSetupError, classify, mask
from segflow_pipeline_tests.support.reliability import (
    apply_env,
    distinctive_key,
    make_env,
    run_cli,
    run_job,
)

SECRET = distinctive_key("sk_test_")
REVOKED = distinctive_key("sk_test_")
RESTRICTED = distinctive_key("rk_test_")
KEYS = (SECRET, REVOKED, RESTRICTED)


def needles(key: str) -> list[bytes]:
    """The key, and its secret part without the four characters the masked form shows."""
    prefix = key[:8]
    return [key.encode(), key[len(prefix):-4].encode()]


def leaks(data: bytes) -> list[str]:
    return [key for key in KEYS if any(n in data for n in needles(key))]


def duckdb_leaks(path: Path) -> list[str]:
    """Every text column of every table: DuckDB compresses strings, so a byte search of the file is not enough."""
    found: list[str] = []
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute("select table_schema, table_name, column_name from information_schema.columns "
                              "where data_type = 'VARCHAR'").fetchall()
        for schema, table, column in columns:
            for key in KEYS:
                middle = key[8:-4]
                hits = con.execute(f'select count(*) from "{schema}"."{table}" where contains("{column}", ?)',
                                   [middle]).fetchone()[0]
                if hits:
                    found.append(f"{schema}.{table}.{column}: {key[:8]}…")
    finally:
        con.close()
    return found


def sqlite_text(path: Path) -> bytes:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump()).encode()
    finally:
        con.close()


class _WebPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        # A proxy that echoes the request headers back, key included, in an HTML error page.
        body = f"<html><body>502 Bad Gateway {self.headers.get('Authorization')}</body></html>".encode()
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(reference):
    with EmulatorServer({SECRET: reference.account, RESTRICTED: reference.account},
                        restricted={RESTRICTED: {"rak_subscription_read"}}) as srv:
        yield srv


@pytest.mark.slow
def test_no_key_on_disk_in_logs_or_in_any_command_output(server, tmp_path):
    env = make_env(tmp_path, server.url, SECRET)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    materialize = ["dagster", "asset", "materialize", "-m", "segflow_pipeline.definitions", "--select", "*"]
    commands = [
        (SECRET, ["segflow", "check"], 0),
        (SECRET, ["segflow", "refresh", "--full"], 0),
        (SECRET, materialize, 0),
        (SECRET, ["segflow", "integrations", "add", "acme", "--key-env", "STRIPE_KEY_ACME"], 0),
        (REVOKED, ["segflow", "check"], 2),
        (REVOKED, materialize, 1),
        (RESTRICTED, ["segflow", "check"], 2),
    ]
    outputs: dict[str, str] = {}
    for key, args, code in commands:
        extra = {"DAGSTER_HOME": str(dagster_home), "STRIPE_API_KEY": key}
        if args[1] == "integrations":
            extra |= {"STRIPE_KEY_ACME": key, "SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "saved" / "integrations.yaml")}
        out = run_cli(args, env.process_env(**extra), cwd=tmp_path, timeout=300)
        name = f"{' '.join(args[:3])} ({key[:8]}…{key[-4:]})"
        assert out.returncode == code, f"{name}: {out.stderr[-2000:]}"
        outputs[name] = out.stdout + out.stderr
        assert not leaks((out.stdout + out.stderr).encode()), name

    # Where a key shows, it is masked: the check and the run logs name it so the user knows which key is in use.
    assert f"key: {mask(SECRET)} (secret, test mode)" in outputs[f"segflow check ({SECRET[:8]}…{SECRET[-4:]})"]
    assert f"Stripe rejected the API key {mask(REVOKED)} (401)" in outputs[
        f"dagster asset materialize ({REVOKED[:8]}…{REVOKED[-4:]})"]
    assert f"The restricted key {mask(RESTRICTED)} may not read subscriptions" in outputs[
        f"segflow check ({RESTRICTED[:8]}…{RESTRICTED[-4:]})"]
    assert (tmp_path / "saved" / "integrations.yaml").read_text().count("STRIPE_KEY_ACME") == 1

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    databases = [p for p in files if p.suffix == ".duckdb"]
    assert env.published in databases and env.working_dir / "default.duckdb" in databases
    run_dbs = [p for p in (dagster_home / "history" / "runs").glob("*.db") if p.name != "index.db"]
    assert len(run_dbs) == 3  # every refresh and materialize is recorded
    for path in files:
        assert not leaks(path.read_bytes()), path
    for path in files:
        if path.suffix == ".db":
            assert not leaks(sqlite_text(path)), path
    for path in databases:
        assert not duckdb_leaks(path), path
    # The run storage does hold the masked form: the logs say which key was used.
    masked = (mask(SECRET).encode(), json.dumps(mask(SECRET))[1:-1].encode())  # as text, or escaped in JSON
    assert any(form in sqlite_text(p) for p in run_dbs for form in masked)


def test_exception_texts_reprs_and_metadata_show_only_the_masked_key(server, reference, tmp_path, monkeypatch):
    texts: list[str] = []
    reader = StripeReader(SECRET, api_base=server.url)
    texts.append(repr(reader))
    for key, expected in ((REVOKED, "(401)"), (RESTRICTED, "(403)")):
        with pytest.raises(StripeSetupError, match=expected) as info:
            StripeReader(key, api_base=server.url).get("/v1/subscriptions", {"limit": 1}, resource="subscriptions")
        texts.append(str(info.value))
    for malformed in (SECRET + " trailing", "pk_test_" + SECRET[8:]):
        with pytest.raises(StripeSetupError) as info:
            classify(malformed)
        texts.append(str(info.value))
    # A proxy that echoes the Authorization header into its error page: the failure quotes the page, redacted.
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        echo = StripeReader(SECRET, api_base=f"http://127.0.0.1:{httpd.server_address[1]}", max_retries=1,
                            backoff_base=0.01)
        with pytest.raises(StripeAPIFailure) as info:
            echo.get("/v1/customers")
        texts.append(str(info.value))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "502" in texts[-1] and mask(SECRET) in texts[-1]

    # A whole run in process: every metadata value of every event, and the failure texts of a 401 run.
    env = make_env(tmp_path, server.url, SECRET)
    apply_env(monkeypatch, env)
    result = run_job(max_requests_per_second=500)
    assert result.success
    for event in result.all_events:
        texts.append(repr(event))
    monkeypatch.setenv("STRIPE_API_KEY", REVOKED)
    failed = run_job()
    assert not failed.success
    texts += failure_messages(failed)
    texts += [repr(event) for event in failed.all_events]
    assert any(mask(REVOKED) in text for text in texts)
    for text in texts:
        assert not leaks(text.encode()), text[:500]
