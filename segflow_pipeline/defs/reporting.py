"""Metadata builders for the Dagster UI: row counts, short previews, failure cases. Never a key."""

from __future__ import annotations

import dagster as dg
import polars as pl


def preview(frame: pl.DataFrame, rows: int = 10) -> dg.MetadataValue:
    head = frame.head(rows)
    if head.is_empty():
        return dg.MetadataValue.md("_no rows_")
    columns = head.columns
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def failure_metadata(bad: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    return {"failing_rows": dg.MetadataValue.int(bad.height), "first_failures": preview(bad, 20)}
