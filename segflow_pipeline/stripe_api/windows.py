"""`created` windows of a list: how a full sync splits one Stripe list into parts read at once. Pure.

Every list is split into half-open windows [a, b) (`created[gte]=a&created[lt]=b`), so objects sharing one second
at a boundary fall in exactly one window. A window pages with `starting_after`; what is left of it after a page can
be split again (`split_remaining`).
"""

from __future__ import annotations

from typing import Any

from segflow_pipeline.stripe_api.lists import PAGE_SIZE


def remaining_window(lo: int, last_created: int) -> tuple[int, int]:
    """After a page whose last (oldest) object was created at `last_created`, what is left of [lo, hi).

    Lists are newest first, so the rest is older than or as old as that object: [lo, last_created + 1), paged on
    with `starting_after` (objects of the same second not yet returned come after the cursor).
    """
    return lo, last_created + 1


def split_remaining(lo: int, last_created: int, newest_created: int, parts: int,
                    pages_per_part: int = 4) -> list[tuple[int, int]]:
    """Split what is left of a window after a page, [lo, last_created + 1), into at most `parts` windows.

    Newest first; the first window holds `last_created`, so it goes on with the cursor. Sizes grow geometrically
    back in time from the span one page just covered (newest_created - last_created): recent windows hold about
    `pages_per_part`, 2×, 4×... pages at the density just seen, the last one reaches `lo`, however far back
    (accounts grow, so history is sparser, and an empty window costs one request).
    """
    hi = last_created + 1
    span = max(1, newest_created - last_created) * pages_per_part
    windows: list[tuple[int, int]] = []
    while hi > lo and len(windows) < max(1, parts) - 1:
        a = max(lo, hi - span)
        windows.append((a, hi))
        hi, span = a, span * 2
    if hi > lo:
        windows.append((lo, hi))
    return windows


def window_params(base: dict[str, Any], lo: int, hi: int, cursor: str | None) -> dict[str, Any]:
    params = {**base, "limit": PAGE_SIZE, "created": {"gte": lo, "lt": hi}}
    if cursor:
        params["starting_after"] = cursor
    return params

