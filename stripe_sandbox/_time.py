"""Calendar arithmetic for billing periods, on integer epoch seconds (UTC), fast enough for millions of periods.

Stripe advances a monthly or yearly period to the same day of month as the billing cycle anchor, clamped to the
last day of shorter months (an anchor on the 31st bills on Feb 28/29, then on Mar 31 again).
"""

from __future__ import annotations

DAY = 86400
_MDAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def days_from_civil(y: int, m: int, d: int) -> int:
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def month_days(y: int, m: int) -> int:
    if m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        return 29
    return _MDAYS[m - 1]


def add_months(ts: int, months: int) -> int:
    days, sod = divmod(ts, DAY)
    y, m, d = civil_from_days(days)
    mm = m - 1 + months
    y2, m2 = y + mm // 12, mm % 12 + 1
    return days_from_civil(y2, m2, min(d, month_days(y2, m2))) * DAY + sod


class Clock:
    """The period boundaries of one subscription: boundary(k) is the start of its k-th billing period."""

    __slots__ = ("anchor", "unit", "count", "_y", "_m", "_d", "_sod", "_approx")

    def __init__(self, anchor: int, unit: str, count: int) -> None:
        self.anchor, self.unit, self.count = anchor, unit, count
        days, self._sod = divmod(anchor, DAY)
        self._y, self._m, self._d = civil_from_days(days)
        self._approx = {"day": DAY, "week": 7 * DAY, "month": 2629746, "year": 31556952}[unit] * count

    def boundary(self, k: int) -> int:
        unit = self.unit
        if unit == "week":
            return self.anchor + k * 7 * DAY * self.count
        if unit == "day":
            return self.anchor + k * DAY * self.count
        mm = self._m - 1 + k * self.count * (12 if unit == "year" else 1)
        y2, m2 = self._y + mm // 12, mm % 12 + 1
        d = self._d
        if d > 28:
            d = min(d, month_days(y2, m2))
        return days_from_civil(y2, m2, d) * DAY + self._sod

    def index_at(self, t: int) -> int:
        """The k of the period containing t (k >= 0; t before the anchor gives 0)."""
        if t <= self.anchor:
            return 0
        k = int((t - self.anchor) // self._approx)
        while k > 0 and self.boundary(k) > t:
            k -= 1
        while self.boundary(k + 1) <= t:
            k += 1
        return k

    def period_at(self, t: int) -> tuple[int, int]:
        k = self.index_at(t)
        return self.boundary(k), self.boundary(k + 1)
