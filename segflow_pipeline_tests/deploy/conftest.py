"""Fixtures of the deployment tests: one PostgreSQL server per test module (skipped where PostgreSQL is missing)."""

import pytest

from segflow_pipeline_tests.deploy import harness


@pytest.fixture(scope="module")
def postgres():
    reason = harness.postgres_missing()
    if reason:
        pytest.skip(reason)
    with harness.postgres_server() as pg:
        yield pg
