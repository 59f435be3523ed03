"""What `segflow refresh` prints when a step fails without a failed check: the live log says a step failed in one
line, and the summary at the end gives the message, plus the stack trace once when the error is unexpected."""

from __future__ import annotations

import dagster as dg
import pytest

from segflow_pipeline import runner


@dg.asset
def upstream() -> None:
    """Fails in a way nobody planned for: a bug."""
    raise ZeroDivisionError("a bug deep in a transform")


@dg.asset(deps=[upstream])
def downstream() -> None:
    """Never runs."""


@dg.asset
def needs_a_key() -> None:
    """Fails on purpose with what to do."""
    raise dg.Failure("Stripe rejected the API key sk_test_…wxyz (401): create a new key and set STRIPE_API_KEY")


def run(assets: list[dg.AssetsDefinition]) -> tuple[dg.ExecuteInProcessResult, dg.Definitions]:
    defs = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("daily_refresh_job")])
    job = defs.resolve_job_def("daily_refresh_job").with_logger_defs({"segflow": runner.one_line_logger})
    result = job.execute_in_process(raise_on_error=False,
                                    run_config={"loggers": {"segflow": {"config": {"log_level": "INFO"}}}})
    return result, defs


def test_an_unexpected_error_shows_its_stack_trace_once(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    result, defs = run([upstream, downstream])
    live = capsys.readouterr().err
    assert not result.success
    assert "upstream" in live and "error: failed (details at the end)" in live
    assert "downstream" in live and "skipped: a step it depends on failed" in live
    assert 'File "' not in live and "ZeroDivisionError" not in live  # no stack trace while the run goes
    failure = runner.run_failure(result, "default", defs)
    assert failure.checks == [] and [step for step, _, _ in failure.errors] == ["upstream"]
    summary = runner.failure_summary(failure, tmp_path / "segflow.duckdb", dagster_home=str(tmp_path / "home"))
    assert "segflow: default: upstream: ZeroDivisionError: a bug deep in a transform" in summary
    assert summary.count("Stack trace:") == 1
    assert summary.count('raise ZeroDivisionError("a bug deep in a transform")') == 1
    assert "nothing has been published yet" in " ".join(summary.split()) and f"runs are kept in {tmp_path / 'home'}" in " ".join(summary.split())


def test_a_failure_raised_on_purpose_shows_its_message_without_a_stack_trace(tmp_path, capsys) -> None:
    result, defs = run([needs_a_key])
    live = capsys.readouterr().err
    failure = runner.run_failure(result, "default", defs)
    summary = runner.failure_summary(failure, tmp_path / "segflow.duckdb", dagster_home=None)
    assert "segflow: default: needs_a_key: Stripe rejected the API key sk_test_…wxyz (401): create a new key and "\
           "set STRIPE_API_KEY" in summary
    assert "Stack trace" not in summary and 'File "' not in summary + live
    assert "make ui" not in summary  # no kept runs to point at
