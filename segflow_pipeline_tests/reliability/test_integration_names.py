"""One rule for the name of the variable holding a key, used by `segflow integrations add` and by loading: a name
the loader would refuse is refused when added, with the fix. A bad entry written into integrations.yaml by hand
fails that account alone, naming the file, the line and the fix; the other accounts still load, refresh and
publish. Before the fix `integrations add --key-env key_lower` saved the entry, and from then on no account loaded."""

from __future__ import annotations

import duckdb
import pytest

from segflow_pipeline import cli, config
from stripe_sandbox.server import EmulatorServer
from segflow_pipeline_tests.support.reliability import make_env, run_cli

GOOD_AND_BAD = """\
integrations:
  - name: alpha
    key_env: STRIPE_KEY_ALPHA
  - name: beta
    key_env: key_lower
  - name: gamma
    key_env: STRIPE_KEY_GAMMA
  - key_env: STRIPE_KEY_NAMELESS
"""


@pytest.fixture(scope="module")
def server(reference):
    with EmulatorServer({reference.key: reference.account}) as srv:
        yield srv


def test_add_refuses_a_variable_name_that_loading_would_refuse(server, reference, tmp_path, monkeypatch, capfd):
    env = make_env(tmp_path, server.url, reference.key)
    for name, value in env.values.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "integrations.yaml"
    monkeypatch.setenv("SEGFLOW_INTEGRATIONS_FILE", str(path))
    monkeypatch.setenv("key_lower", reference.key)
    capfd.readouterr()
    assert cli.main(["integrations", "add", "acme", "--key-env", "key_lower"]) == 2
    err = capfd.readouterr().err
    assert "key_lower" in err and "KEY_LOWER" in err, err
    assert not path.exists()
    # The rule is the loader's: what `add` accepts, loading accepts.
    monkeypatch.setenv("STRIPE_KEY_ACME", reference.key)
    assert cli.main(["integrations", "add", "acme", "--key-env", "STRIPE_KEY_ACME"]) == 0
    assert [(i.name, i.key_env, i.problem) for i in config.load_integrations()] == [("acme", "STRIPE_KEY_ACME", None)]
    for bad in ("key_lower", "1KEY", "STRIPE-KEY", "", "STRIPE KEY"):
        with pytest.raises(config.ConfigError):
            config.check_key_env(bad)


def test_a_bad_entry_fails_its_account_alone_with_the_line_and_the_fix(server, reference, tmp_path):
    env = make_env(tmp_path, server.url, reference.key)
    path = tmp_path / "integrations.yaml"
    path.write_text(GOOD_AND_BAD)
    values = env.process_env(SEGFLOW_INTEGRATIONS_FILE=str(path), STRIPE_KEY_ALPHA=reference.key,
                             STRIPE_KEY_GAMMA=reference.key, key_lower=reference.key)

    listed = run_cli(["segflow", "integrations", "list"], values, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "alpha\t" in listed.stdout and "gamma\t" in listed.stdout
    assert f"{path}, line 4" in listed.stdout and "KEY_LOWER" in listed.stdout, listed.stdout
    assert f"{path}, line 8" in listed.stdout, listed.stdout

    refresh = run_cli(["segflow", "refresh", "--full"], values, cwd=tmp_path, timeout=600)
    assert refresh.returncode == 1
    assert "alpha: refreshed" in refresh.stdout and "gamma: refreshed" in refresh.stdout, refresh.stderr[-3000:]
    beta = [line for line in refresh.stderr.splitlines() if line.startswith("segflow: beta: ")]
    assert beta and f"{path}, line 4" in beta[0] and "KEY_LOWER" in beta[0], refresh.stderr[-3000:]
    nameless = [line for line in refresh.stderr.splitlines() if f"{path}, line 8" in line]
    assert nameless and "name" in nameless[0], refresh.stderr[-3000:]
    con = duckdb.connect(str(env.published), read_only=True)
    try:
        published = {r[0] for r in con.execute("select distinct integration from metrics.mrr_daily").fetchall()}
    finally:
        con.close()
    assert published == {"alpha", "gamma"}
