"""Rendering for people: charts and HTML reports from metric frames. No Dagster, no DuckDB."""
