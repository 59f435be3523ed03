"""Paths inside the repository that tests use (never a path outside it)."""

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT / "segflow_pipeline_tests" / "fixtures"
STRIPE_FIXTURES = FIXTURES / "stripe_fixtures3.json"  # Stripe's example objects (fixtures/README.md)


def python() -> str:
    """The Python running the tests (the project's environment), for subprocesses."""
    return sys.executable
