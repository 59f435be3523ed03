import pytest

from segflow_pipeline import config


def test_no_file_means_one_default_integration(tmp_path):
    env = {"SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "none.yaml")}
    assert config.load_integrations(env) == [config.Integration(name="default")]


def test_file_round_trip_keeps_names_env_vars_and_options(tmp_path):
    env = {"SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "integrations.yaml")}
    saved = [config.Integration("acme", "STRIPE_KEY_ACME"),
             config.Integration("globex", "STRIPE_KEY_GLOBEX", api_base="http://127.0.0.1:1",
                                options=config.MrrOptions(churn_recognition="period_end", discounts="all"))]
    config.save_integrations(saved, env)
    assert config.load_integrations(env) == saved
    assert "sk_" not in (tmp_path / "integrations.yaml").read_text()


@pytest.mark.parametrize("body, fragment", [
    ("integrations: []", "at least one account"),
    ("integrations: [", "not valid YAML"),
    ("integrations:\n  - name: Acme\n    key_env: K", "line 2: name 'Acme' must be 1-63 lowercase"),
], ids=["empty", "broken-yaml", "no-usable-entry"])
def test_files_without_any_usable_account_are_refused_with_the_fix(tmp_path, body, fragment):
    path = tmp_path / "integrations.yaml"
    path.write_text(body)
    with pytest.raises(config.ConfigError, match=fragment):
        config.load_integrations({"SEGFLOW_INTEGRATIONS_FILE": str(path)})


GOOD = "  - name: good\n    key_env: STRIPE_KEY_GOOD\n"


@pytest.mark.parametrize("entry, fragment", [
    ("  - name: acme\n    key_env: lower", "line 4: key_env 'lower' is not an environment variable name"),
    ("  - name: acme\n    key: sk_test_abc\n    key_env: K", "line 4: never put a key in this file"),
    ("  - name: acme\n    key_env: K\n    options: {discounts: some}", "discounts must be"),
    ("  - name: acme\n    key_env: K\n    options: [period_end]", "options must be a mapping"),
], ids=["bad-env-name", "key-in-file", "bad-option", "options-not-a-mapping"])
def test_a_bad_entry_fails_its_own_account_with_the_line_and_the_fix(tmp_path, entry, fragment):
    path = tmp_path / "integrations.yaml"
    path.write_text("integrations:\n" + GOOD + entry + "\n")
    integrations, unusable = config.read_integrations({"SEGFLOW_INTEGRATIONS_FILE": str(path)})
    assert unusable == []
    assert [(i.name, i.problem) for i in integrations][0] == ("good", None)
    bad = integrations[1]
    assert bad.name == "acme" and bad.problem and str(path) in bad.problem and fragment in bad.problem, bad.problem


@pytest.mark.parametrize("entry, fragment", [
    ("  - name: Acme\n    key_env: K", "line 4: name 'Acme' must be"),
    ("  - key_env: K", "line 4: each integration needs a name"),
    ("  - name: good\n    key_env: J", "line 4: a second integration named 'good'"),
    ("  - just a string", "line 4: each integration needs a name"),
], ids=["uppercase-name", "no-name", "duplicate", "not-a-mapping"])
def test_an_entry_naming_no_usable_account_is_reported_and_the_others_load(tmp_path, entry, fragment):
    path = tmp_path / "integrations.yaml"
    path.write_text("integrations:\n" + GOOD + entry + "\n")
    integrations, unusable = config.read_integrations({"SEGFLOW_INTEGRATIONS_FILE": str(path)})
    assert [(i.name, i.key_env, i.problem) for i in integrations] == [("good", "STRIPE_KEY_GOOD", None)]
    assert len(unusable) == 1 and fragment in unusable[0], unusable


@pytest.mark.parametrize("name, fix", [("key_lower", "KEY_LOWER"), ("1KEY", "_1KEY"), ("stripe-key", "STRIPE_KEY"),
                                       ("", "STRIPE_API_KEY_ACME")])
def test_one_rule_for_key_variable_names_suggests_the_fix(name, fix):
    with pytest.raises(config.ConfigError, match=f"e.g. {fix} "):
        config.check_key_env(name)
    config.check_key_env(fix)


def test_duckdb_path_default_and_override():
    assert str(config.duckdb_path({})) == "data/segflow.duckdb"
    assert str(config.duckdb_path({"SEGFLOW_DUCKDB_PATH": "/x/y.duckdb"})) == "/x/y.duckdb"
