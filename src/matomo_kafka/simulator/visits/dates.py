"""Matomo's dates and times as it prints them: days cut in the site's timezone, pretty
strings in site-local time."""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DATE_CACHE: dict[int, tuple[str, str, str]] = {}
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _dates(day_number: int) -> tuple[str, str, str]:
    """(ISO date, "Sunday, March 10, 2024", "Mar 10, 2024") for days since 1970, cached."""
    got = _DATE_CACHE.get(day_number)
    if got is None:
        d = date.fromordinal(day_number + _UNIX_EPOCH_ORDINAL)
        month = _MONTHS[d.month - 1]
        got = (
            d.isoformat(),
            f"{_WEEKDAYS[d.weekday()]}, {month} {d.day}, {d.year}",
            f"{month[:3]} {d.day}, {d.year}",
        )
        _DATE_CACHE[day_number] = got
    return got


_HHMM = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(1440))
_SS = tuple(f":{s:02d}" for s in range(60))


def _hms(ts: int) -> str:
    """HH:MM:SS of a (shifted) timestamp; table lookups beat f-strings in the hot path."""
    s = ts % 86400
    return _HHMM[s // 60] + _SS[s % 60]


def _pretty_duration(sec: int) -> str:
    """Matomo's getPrettyTimeFromSeconds ("1 min 35s", "0s", "1 hours 5 min")."""
    if sec >= 3600:
        return f"{sec // 3600} hours {sec // 60 % 60} min"
    if sec >= 60:
        return f"{sec // 60} min {sec % 60}s"
    return f"{sec}s"


def _day_bounds(tz: tzinfo, day: date) -> tuple[int, int]:
    """UTC [start, end) of a site-local day; 23 or 25 hours long on DST days."""
    nxt = day + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    return int(start), int(end)
