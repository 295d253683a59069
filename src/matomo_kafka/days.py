"""Days in a site's timezone: which days are closed and can be read.

Matomo cuts `period=day` on the last action time in the site's own timezone, so "yesterday"
is computed per site. Matomo accepts IANA names and manual offsets such as `UTC+5.5`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MANUAL_OFFSET = re.compile(r"^UTC(?:([+-])(\d{1,2})(?:\.(\d+))?)?$")


def site_timezone(name: str) -> tzinfo:
    """The tzinfo of a Matomo timezone setting; ValueError when it is neither form."""
    match = _MANUAL_OFFSET.match(name)
    if match:
        sign, hours, fraction = match.groups()
        if sign is None:
            return UTC
        minutes = int(hours) * 60 + round(float(f"0.{fraction or 0}") * 60)
        return timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def last_closed_day(tz: tzinfo, run_date: date | None, now: datetime | None = None) -> date:
    """The newest day to read: the day before the run date, or yesterday in the site's zone."""
    if run_date is not None:
        return run_date - timedelta(days=1)
    current = (now or datetime.now(UTC)).astimezone(tz)
    return current.date() - timedelta(days=1)


def day_range(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def days_behind(next_day: date, last_closed: date) -> int:
    """How many closed days are still to read when `next_day` is the next one to read."""
    return max(0, (last_closed - next_day).days + 1)
