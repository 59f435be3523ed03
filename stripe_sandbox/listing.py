"""Stripe's list order and cursor paging over in-memory records, in O(log n) per page.

A `Table` keeps one resource's records in Stripe's list order: newest `created` first, ties broken by id
descending (a stable order, so a cursor inside a run of equal `created` seconds is exact). Secondary indexes map a
filter value (status, customer, subscription, ...) to the ascending list of positions in that order, so a filtered
page is two bisects and a slice. `created[...]` filters become a position range by bisecting the created column.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterable, Sequence


class Table:
    """One resource in list order. `rows[p]` is the record index at position p (0 = newest)."""

    __slots__ = ("rows", "ids", "neg_created", "pos_of", "indexes")

    def __init__(
        self,
        ids: Sequence[str],
        created: Sequence[int],
        keys: dict[str, Callable[[int], Iterable[Hashable]]] | None = None,
        columns: dict[str, Sequence[Hashable]] | None = None,
    ) -> None:
        """`keys` index a record under each value its function returns; `columns` under its single value."""
        # Two stable C-level sorts (id desc, then created desc) are faster than sorting (created, id) tuples.
        order = sorted(range(len(ids)), key=ids.__getitem__, reverse=True)
        order.sort(key=created.__getitem__, reverse=True)
        self.rows: list[int] = order
        self.ids: list[str] = [ids[r] for r in order]
        self.neg_created: list[int] = [-created[r] for r in order]
        self.pos_of: dict[str, int] = {i: p for p, i in enumerate(self.ids)}
        self.indexes: dict[str, dict[Hashable, list[int]]] = {}
        for name, key_fn in (keys or {}).items():
            index: dict[Hashable, list[int]] = {}
            for p, r in enumerate(order):
                for value in key_fn(r):
                    index.setdefault(value, []).append(p)
            self.indexes[name] = index
        for name, column in (columns or {}).items():
            index = {}
            for p, r in enumerate(order):
                value = column[r]
                bucket = index.get(value)
                if bucket is None:
                    index[value] = [p]
                else:
                    bucket.append(p)
            self.indexes[name] = index

    def __len__(self) -> int:
        return len(self.rows)

    def created_range(self, gt: int | None, gte: int | None, lt: int | None, lte: int | None) -> tuple[int, int]:
        """Positions [lo, hi) whose created satisfies the filters (whole seconds, combined with AND)."""
        neg = self.neg_created
        lo, hi = 0, len(neg)
        # Newest first: an upper bound on created cuts the front of the list, a lower bound its tail.
        if lt is not None:
            lo = max(lo, bisect_right(neg, -lt))
        if lte is not None:
            lo = max(lo, bisect_left(neg, -lte))
        if gt is not None:
            hi = min(hi, bisect_left(neg, -gt))
        if gte is not None:
            hi = min(hi, bisect_right(neg, -gte))
        return lo, max(lo, hi)


def page(
    candidates: Sequence[int] | None,
    lo: int,
    hi: int,
    limit: int,
    backwards: bool,
    predicate: Callable[[int], bool] | None = None,
    total: int = 0,
) -> tuple[list[int], bool]:
    """Pick one page of positions in [lo, hi).

    `candidates` is an ascending position index (None = every position < total). Forward pages start at lo;
    backward pages (`ending_before`) end at hi and are still returned newest first, with `has_more` telling whether
    more objects exist in the backward direction, as Stripe does.
    """
    if candidates is None:
        a, b = lo, min(hi, total)
    else:
        a, b = bisect_left(candidates, lo), bisect_left(candidates, hi)
    if predicate is None:
        if backwards:
            start = max(a, b - limit)
            chosen = range(start, b)
            more = start > a
        else:
            end = min(b, a + limit)
            chosen = range(a, end)
            more = end < b
        if candidates is None:
            return list(chosen), more
        return [candidates[i] for i in chosen], more
    found: list[int] = []
    span = range(a, b)
    for i in (reversed(span) if backwards else span):
        p = i if candidates is None else candidates[i]
        if predicate(p):
            if len(found) == limit:
                return (found[::-1] if backwards else found), True
            found.append(p)
    return (found[::-1] if backwards else found), False
