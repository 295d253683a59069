"""Days in a site's timezone: which days are closed, settled, and can be read.

Matomo cuts `period=day` on the last action time in the site's own timezone, so "yesterday"
is computed per site. Matomo accepts IANA names and manual offsets such as `UTC+5.5`.

A day D closes at D+1 00:00 in the site's timezone, but the requests of its last minutes
(queued or buffered tracking, slow trackers) are recorded a little later: D is read only once
it is D+1 00:00 plus the settle delay (MATOMO_SETTLE_MINUTES) in the site's timezone, whatever
the run date says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
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


def day_end(day: date, tz: tzinfo) -> datetime:
    """The instant `day` closes: the next midnight in `tz`. A midnight that a DST change skips
    (America/Santiago, Asia/Beirut...) is read with the offset before the change, which is
    the instant the clocks jumped."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)


def settled_day(tz: tzinfo, now: datetime, settle_minutes: int = 0) -> date:
    """The newest day that is closed and settled at `now`: day D is settled once `now` is at
    least D+1 00:00 (in `tz`) plus `settle_minutes`."""
    settle = timedelta(minutes=settle_minutes)
    day = now.astimezone(tz).date() - timedelta(days=1)
    while now < day_end(day, tz) + settle:
        day -= timedelta(days=1)
    return day


def last_closed_day(
    tz: tzinfo,
    run_date: date | None,
    now: datetime | None = None,
    settle_minutes: int = 0,
) -> date:
    """The newest day to read: the day before the run date, or yesterday in the site's zone;
    never a day that is not closed and settled at `now` (default: the current time), so a run
    date in the future cannot make the tool read an open day."""
    settled = settled_day(tz, now or datetime.now(UTC), settle_minutes)
    if run_date is None:
        return settled
    return min(run_date - timedelta(days=1), settled)


def day_range(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def days_behind(next_day: date, last_closed: date) -> int:
    """How many closed days are still to read when `next_day` is the next one to read."""
    return max(0, (last_closed - next_day).days + 1)
