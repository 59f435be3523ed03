"""Helpers shared by the tests, imported as modules (`from segflow_pipeline_tests.support.x import ...`); the
conftest files only hold fixtures and hooks."""
