import datetime as dt
import re

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


def test_no_rates_file_means_no_reporting_currency(tmp_path):
    assert config.reporting_currency({}) is None
    assert config.reporting_currency({"SEGFLOW_REPORTING_CURRENCY": "eur"}) is None  # nothing to convert with


def test_reporting_currency_from_the_environment(tmp_path):
    rates = tmp_path / "fx.csv"
    rates.write_text("date,currency,rate\n")
    assert config.reporting_currency({"SEGFLOW_FX_RATES": str(rates)}) == config.ReportingCurrency("usd", rates)
    assert config.reporting_currency({"SEGFLOW_FX_RATES": str(rates), "SEGFLOW_REPORTING_CURRENCY": " EUR "}) == \
        config.ReportingCurrency("eur", rates)


@pytest.mark.parametrize("env, fragment", [
    ({"SEGFLOW_FX_RATES": "{tmp}/missing.csv"}, "no such file"),
    ({"SEGFLOW_FX_RATES": "{tmp}/fx.csv", "SEGFLOW_REPORTING_CURRENCY": "dollars"}, "not a currency code"),
], ids=["missing-file", "bad-currency"])
def test_bad_reporting_settings_say_what_to_fix(tmp_path, env, fragment):
    (tmp_path / "fx.csv").write_text("date,currency,rate\n")
    with pytest.raises(config.ConfigError, match=fragment):
        config.reporting_currency({k: v.format(tmp=tmp_path) for k, v in env.items()})


def test_the_demo_brings_the_sandbox_rates_unless_the_user_chose(tmp_path):
    assert config.SANDBOX_FX_RATES.is_file()
    env = {"OTHER": "1"}
    with config.sandbox_fx_rates(env):
        assert env == {"OTHER": "1", "SEGFLOW_FX_RATES": str(config.SANDBOX_FX_RATES),
                       "SEGFLOW_REPORTING_CURRENCY": "usd"}
        assert config.reporting_currency(env) == config.ReportingCurrency("usd", config.SANDBOX_FX_RATES)
    assert env == {"OTHER": "1"}
    for chosen in ({"SEGFLOW_FX_RATES": str(tmp_path / "mine.csv")}, {"SEGFLOW_REPORTING_CURRENCY": "eur"}):
        env = dict(chosen)
        with config.sandbox_fx_rates(env):
            assert env == chosen  # the sandbox's usd rates would be wrong for eur, and the user's file wins
    env = {"SEGFLOW_REPORTING_CURRENCY": "usd"}
    with config.sandbox_fx_rates(env):
        assert env["SEGFLOW_FX_RATES"] == str(config.SANDBOX_FX_RATES)
    assert env == {"SEGFLOW_REPORTING_CURRENCY": "usd"}


@pytest.mark.parametrize("text, expected", [
    ("2028-02-29T00:00:05Z", dt.datetime(2028, 2, 29, 0, 0, 5)),
    ("2026-12-06T08:00:00+01:00", dt.datetime(2026, 12, 6, 7, 0, 0)),
    ("2025-01-01T00:30:00-01:00", dt.datetime(2025, 1, 1, 1, 30, 0)),
    ("2024-12-31T23:59:59", dt.datetime(2024, 12, 31, 23, 59, 59)),
    ("2024-02-29", dt.datetime(2024, 2, 29)),
], ids=["utc-z", "offset-east", "offset-west-crosses-midnight", "naive-is-utc", "date-only"])
def test_as_of_is_read_as_naive_utc(text, expected):
    assert config.as_of({"SEGFLOW_AS_OF": text}) == expected


def test_as_of_unset_means_now_and_garbage_names_the_variable():
    assert config.as_of({}) is None and config.as_of({"SEGFLOW_AS_OF": " "}) is None
    with pytest.raises(config.ConfigError, match="SEGFLOW_AS_OF='yesterday' is not an ISO 8601 instant"):
        config.as_of({"SEGFLOW_AS_OF": "yesterday"})


def test_workspaces_default_to_default_and_round_trip(tmp_path):
    env = {"SEGFLOW_INTEGRATIONS_FILE": str(tmp_path / "integrations.yaml")}
    saved = [config.Integration("acme", "K_ACME"), config.Integration("globex", "K_GLOBEX", workspace="globex-corp")]
    config.save_integrations(saved, env)
    loaded = config.load_integrations(env)
    assert loaded == saved and [i.workspace for i in loaded] == ["default", "globex-corp"]
    assert "workspace: globex-corp" in (tmp_path / "integrations.yaml").read_text()
    assert {w: [i.name for i in its] for w, its in config.workspaces(loaded).items()} == {
        "default": ["acme"], "globex-corp": ["globex"]}


@pytest.mark.parametrize("workspace, shown", [
    ("../other", "'../other'"), ("a/b", "'a/b'"), ("..", "'..'"), (".hidden", "'.hidden'"), ('""', "''"),
    ("café", "'café'"), ("Acme", "'Acme'"), ("\"a\\nb\"", "'a\\nb'"), ("5", "'5'"), ("[x]", "\"['x']\""),
], ids=["dotdot-slash", "slash", "dotdot", "leading-dot", "empty", "unicode", "capital", "newline", "number", "list"])
def test_a_refused_workspace_fails_its_own_account_with_the_line_and_the_fix(tmp_path, workspace, shown):
    path = tmp_path / "integrations.yaml"
    path.write_text("integrations:\n" + GOOD + f"  - name: acme\n    key_env: K\n    workspace: {workspace}\n")
    integrations, unusable = config.read_integrations({"SEGFLOW_INTEGRATIONS_FILE": str(path)})
    assert unusable == [] and [(i.name, i.problem, i.workspace) for i in integrations][0] == ("good", None, "default")
    bad = integrations[1]
    assert bad.name == "acme" and bad.workspace == ""  # published in no workspace
    assert f"{path}, line 4: workspace {shown} is refused" in bad.problem, bad.problem
    assert "lowercase letters (a-z), digits, '_' or '-'" in bad.problem and "e.g. workspace: " in bad.problem
    assert config.workspaces(integrations) == {"default": [integrations[0]]}


def test_a_refused_workspace_suggests_a_name_that_follows_the_rule():
    with pytest.raises(config.ConfigError, match="e.g. workspace: acme-corp$"):
        config.check_workspace("../Acme Corp/", "--workspace")
    with pytest.raises(config.ConfigError, match="^workspace 'x/y' is refused"):
        config.add_integration(config.Integration("acme", "K", workspace="x/y"),
                               {"SEGFLOW_INTEGRATIONS_FILE": "/nonexistent/i.yaml"})


def test_integrations_add_refuses_a_bad_workspace_before_checking_the_key(tmp_path, monkeypatch, capsys):
    from segflow_pipeline import cli

    monkeypatch.setenv("SEGFLOW_INTEGRATIONS_FILE", str(tmp_path / "integrations.yaml"))
    assert cli.main(["integrations", "add", "acme", "--key-env", "K_ACME", "--workspace", "../globex"]) == 2
    assert "segflow: --workspace '../globex' is refused" in capsys.readouterr().err
    assert not (tmp_path / "integrations.yaml").exists()


def test_default_workspace_publishes_to_segflow_duckdb_path_and_others_to_the_template(tmp_path):
    env = {"SEGFLOW_DUCKDB_PATH": str(tmp_path / "data" / "segflow.duckdb")}
    assert config.workspace_path("default", env) == tmp_path / "data" / "segflow.duckdb"
    assert config.workspace_path("acme", env) == tmp_path / "data" / "workspaces" / "acme" / "segflow.duckdb"
    env[config.WORKSPACE_PATH_TEMPLATE_ENV] = str(tmp_path / "bi" / "{workspace}.duckdb")
    assert config.workspace_path("acme", env) == tmp_path / "bi" / "acme.duckdb"
    assert config.workspace_path("default", env) == tmp_path / "data" / "segflow.duckdb"


@pytest.mark.parametrize("template, workspace, fragment", [
    ("{base}/bi/segflow.duckdb", "acme", "does not contain {workspace}"),
    ("{base}/bi/{workspace}/../../../x.duckdb", "acme", "would lie outside"),
    ("{base}/data/{workspace}.duckdb", "segflow", "is the default workspace's file"),
    ("{base}/bi/{workspace}/f.duckdb", "../x", "is refused"),
], ids=["no-placeholder", "template-escapes", "collides-with-default", "bad-name"])
def test_a_workspace_file_never_leaves_its_directory(tmp_path, template, workspace, fragment):
    env = {"SEGFLOW_DUCKDB_PATH": str(tmp_path / "data" / "segflow.duckdb"),
           config.WORKSPACE_PATH_TEMPLATE_ENV: template.replace("{base}", str(tmp_path))}
    with pytest.raises(config.ConfigError, match=re.escape(fragment)):
        config.workspace_path(workspace, env)


@pytest.mark.parametrize("check", [config.check_name, config.check_workspace])
def test_a_name_with_a_trailing_newline_is_refused(check):
    # `$` also matches before a final newline: the rule must hold for the whole name
    with pytest.raises(config.ConfigError, match=r"'acme\\n'"):
        check("acme\n")
