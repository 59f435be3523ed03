"""Errors about what Stripe sent that the pure modules raise too (no SDK, no I/O), so that the row-building helper
process, which imports `objects` only, can raise them without loading the Stripe SDK.

Whether a failure can heal by trying again is decided in one place, `client.heals_on_retry`.
"""

from __future__ import annotations


class UnexpectedBody(ValueError):
    """A response body that parses but is not what Stripe sends there (a JSON array, a list without `data`).
    Another attempt gets the same: the message says what came back."""


def json_kind(value: object) -> str:
    """How a parsed JSON value reads in a message: 'a JSON array', 'a JSON string', 'JSON null'..."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    return {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}.get(type(value), "JSON")

