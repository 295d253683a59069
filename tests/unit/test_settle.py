"""The settle delay: day D is read only once it is D+1 00:00 + MATOMO_SETTLE_MINUTES in the
site's timezone, whatever the run date. Fixed `now` values, several timezones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from matomo_kafka.source.days import day_end, last_closed_day, settled_day, site_timezone


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "now", "settle", "last"),
    [
        # UTC: 2024-03-10 closes at 2024-03-11 00:00 UTC, readable from 00:10.
        ("UTC", utc(2024, 3, 11, 0, 5), 10, date(2024, 3, 9)),
        ("UTC", utc(2024, 3, 11, 0, 9, 59), 10, date(2024, 3, 9)),
        ("UTC", utc(2024, 3, 11, 0, 10), 10, date(2024, 3, 10)),
        ("UTC", utc(2024, 3, 11, 0, 5), 0, date(2024, 3, 10)),
        ("UTC", utc(2024, 3, 11, 23, 59), 10, date(2024, 3, 10)),
        # Paris (UTC+1 in March before the change): midnight is 23:00 UTC the day before.
        ("Europe/Paris", utc(2024, 3, 10, 23, 5), 10, date(2024, 3, 9)),
        ("Europe/Paris", utc(2024, 3, 10, 23, 10), 10, date(2024, 3, 10)),
        # Summer time (UTC+2): midnight is 22:00 UTC.
        ("Europe/Paris", utc(2024, 7, 1, 22, 9), 10, date(2024, 6, 30)),
        ("Europe/Paris", utc(2024, 7, 1, 22, 10), 10, date(2024, 7, 1)),
        # New York (UTC-4 in July): midnight is 04:00 UTC the same day.
        ("America/New_York", utc(2024, 7, 2, 4, 9), 10, date(2024, 6, 30)),
        ("America/New_York", utc(2024, 7, 2, 4, 10), 10, date(2024, 7, 1)),
        # Tokyo (UTC+9): midnight is 15:00 UTC the day before.
        ("Asia/Tokyo", utc(2024, 3, 10, 15, 9), 10, date(2024, 3, 9)),
        ("Asia/Tokyo", utc(2024, 3, 10, 15, 10), 10, date(2024, 3, 10)),
        # Matomo's manual offsets: UTC+5.5 midnight is 18:30 UTC the day before.
        ("UTC+5.5", utc(2024, 3, 10, 18, 39), 10, date(2024, 3, 9)),
        ("UTC+5.5", utc(2024, 3, 10, 18, 40), 10, date(2024, 3, 10)),
        ("UTC-9.5", utc(2024, 3, 11, 9, 40), 10, date(2024, 3, 10)),
        # A settle delay longer than a day.
        ("UTC", utc(2024, 3, 11, 12, 0), 24 * 60 + 60, date(2024, 3, 9)),
        # America/Santiago skips 2024-09-08 00:00 (clocks jump to 01:00 at 04:00 UTC):
        # 2024-09-07 closes at 04:00 UTC.
        ("America/Santiago", utc(2024, 9, 8, 4, 9), 10, date(2024, 9, 6)),
        ("America/Santiago", utc(2024, 9, 8, 4, 10), 10, date(2024, 9, 7)),
    ],
)
def test_a_day_is_read_once_closed_and_settled(
    zone: str, now: datetime, settle: int, last: date
) -> None:
    tz = site_timezone(zone)
    assert settled_day(tz, now, settle) == last
    assert last_closed_day(tz, None, now, settle) == last
    # The boundary itself: the last readable day closed at least `settle` minutes ago, the
    # next one has not.
    assert day_end(last, tz) + timedelta(minutes=settle) <= now
    assert now < day_end(last + timedelta(days=1), tz) + timedelta(minutes=settle)


def test_a_run_date_never_reaches_an_unsettled_day() -> None:
    tz = site_timezone("Europe/Paris")
    now = utc(2024, 3, 10, 23, 5)  # 00:05 on 2024-03-11 in Paris
    # The run date asks for 2024-03-10 (today's run), too early; tomorrow's even more so.
    assert last_closed_day(tz, date(2024, 3, 11), now, 10) == date(2024, 3, 9)
    assert last_closed_day(tz, date(2024, 3, 20), now, 10) == date(2024, 3, 9)
    # Ten minutes later 2024-03-10 is settled.
    later = now + timedelta(minutes=5)
    assert last_closed_day(tz, date(2024, 3, 11), later, 10) == date(2024, 3, 10)
    # A run date in the past is kept as it is.
    assert last_closed_day(tz, date(2024, 3, 5), now, 10) == date(2024, 3, 4)


def test_no_settle_delay_is_the_previous_behaviour() -> None:
    now = utc(2024, 3, 10, 23, 30)
    assert last_closed_day(site_timezone("UTC"), None, now) == date(2024, 3, 9)
    assert last_closed_day(site_timezone("Europe/Paris"), None, now) == date(2024, 3, 10)
    assert last_closed_day(site_timezone("UTC"), date(2024, 3, 5), now) == date(2024, 3, 4)
