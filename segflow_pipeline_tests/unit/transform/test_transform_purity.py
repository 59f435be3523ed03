"""transform/ stays pure: no Dagster, no DuckDB (STYLE.md imports point one way)."""

from __future__ import annotations

import re
from pathlib import Path

import segflow_pipeline.transform as transform

FORBIDDEN = re.compile(r"^\s*(import|from)\s+(dagster|duckdb)\b", re.MULTILINE)


def test_transform_modules_import_neither_dagster_nor_duckdb() -> None:
    modules = sorted(Path(transform.__file__).parent.glob("*.py"))
    assert len(modules) >= 5
    offenders = [path.name for path in modules if FORBIDDEN.search(path.read_text())]
    assert offenders == []
