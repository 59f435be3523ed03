"""A server (Stripe, or a proxy in front of it) that echoes the key back in its errors, whole, without its
`sk_test_` prefix and as slices of its middle and its end: no 12 consecutive characters of the key leave the process,
not in the errors, the CLI's output, the Dagster event log and compute logs (every file of DAGSTER_HOME) or the
run's events and metadata. Before the fix, masking knew only the whole key and `sk_…`-shaped strings, so the key
without its prefix reached stderr and the run database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from segflow_pipeline.runner import failure_messages
from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
from segflow_pipeline.stripe_api.keys import mask, redact
from segflow_pipeline_tests.support.reliability import (
    FakeStripe,
    Request,
    apply_env,
    distinctive_key,
    json_answer,
    make_env,
    run_cli,
    run_job,
)

KEY = distinctive_key("sk_test_") + distinctive_key("")  # 56 characters, like Stripe's live keys
SHORTEST = 12


def forms(key: str) -> dict[str, str]:
    return {"whole": key, "without prefix": key[8:], "middle": key[20:20 + SHORTEST], "end": key[-SHORTEST - 6:],
            "bearer": f"Bearer {key}"}


def fragments(key: str) -> set[str]:
    """Every run of SHORTEST consecutive characters of the key."""
    return {key[i:i + SHORTEST] for i in range(len(key) - SHORTEST + 1)}


def leaks(text: str) -> list[str]:
    return sorted(f for f in fragments(KEY) if f in text)


def echo(kind: str):
    def answer(fake: FakeStripe, request: Request):
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        said = "; ".join(f"{name}: {value}" for name, value in forms(key).items())
        if kind == "json":
            return json_answer({"error": {"type": "invalid_request_error",
                                          "message": f"Request refused for this key ({said})."}}, 400)
        return 400, f"<html><body><h1>400 Bad Request</h1><p>{said}</p></body></html>".encode(), "text/html"
    return answer


def test_redact_masks_every_form_of_a_known_key():
    text = " | ".join(forms(KEY).values()) + " | " + KEY[3:3 + SHORTEST - 1]
    redacted = redact(text, KEY)
    assert leaks(redacted) == []
    assert mask(KEY) in redacted  # the whole key still says which key it was
    assert KEY[3:3 + SHORTEST - 1] in redacted  # 11 characters are not a secret: left as they are
    # A key the process uses is masked even where the caller does not name it.
    StripeReader(KEY, api_base="http://127.0.0.1:9")
    assert leaks(redact(text)) == []


def dagster_home_text(home: Path) -> str:
    parts: list[str] = []
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        parts.append(path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".db":
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                parts.append("\n".join(con.iterdump()))
            finally:
                con.close()
    return "\n".join(parts)


@pytest.mark.parametrize("kind", ["json", "html"])
def test_an_echoed_key_never_leaves_the_process(kind, tmp_path, monkeypatch):
    with FakeStripe(echo(kind)) as fake:
        # The reader's error.
        with pytest.raises(StripeAPIFailure) as info:
            StripeReader(KEY, api_base=fake.url, max_retries=0).get("/v1/customers", resource="customers")
        assert "HTTP 400" in str(info.value) and leaks(str(info.value)) == []

        # The CLI, recorded in a DAGSTER_HOME: its output and every file it wrote.
        env = make_env(tmp_path, fake.url, KEY)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("")
        outputs = []
        for args in (["segflow", "check"], ["segflow", "refresh", "--full"]):
            out = run_cli(args, env.process_env(DAGSTER_HOME=str(home)), cwd=tmp_path, timeout=300)
            assert out.returncode != 0
            outputs.append(out.stdout + out.stderr)
        assert "HTTP 400" in outputs[1]
        assert [leaks(text) for text in outputs] == [[], []]
        assert leaks(dagster_home_text(home)) == []

        # In process: every event (metadata included) and the failure messages.
        apply_env(monkeypatch, env)
        result = run_job()
    assert not result.success
    texts = [repr(event) for event in result.all_events] + failure_messages(result)
    assert any("HTTP 400" in text for text in texts)
    assert [text[:300] for text in texts if leaks(text)] == []
