"""The `account` fixture: a fresh input builder per test (`support/mrr_inputs.py`)."""

import pytest

from segflow_pipeline_tests.support.mrr_inputs import Account


@pytest.fixture
def account() -> Account:
    return Account()
