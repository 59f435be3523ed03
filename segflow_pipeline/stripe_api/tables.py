"""The raw row shapes under their former path: they live in `segflow_pipeline.raw_tables`."""

from segflow_pipeline.raw_tables import BOOL, DEC, I64, PRIMARY_KEYS, STR, TABLES, TS

__all__ = ["BOOL", "DEC", "I64", "PRIMARY_KEYS", "STR", "TABLES", "TS"]
