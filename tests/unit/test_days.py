"""Closed days per site timezone, Matomo's manual UTC offsets included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from matomo_kafka.source.days import day_range, days_behind, last_closed_day, site_timezone


def test_yesterday_depends_on_the_site_timezone() -> None:
    now = datetime(2024, 3, 10, 23, 30, tzinfo=UTC)  # already 00:30 on the 11th in Paris
    assert last_closed_day(site_timezone("UTC"), None, now) == date(2024, 3, 9)
    assert last_closed_day(site_timezone("Europe/Paris"), None, now) == date(2024, 3, 10)
    assert last_closed_day(site_timezone("America/New_York"), None, now) == date(2024, 3, 9)


def test_run_date_wins() -> None:
    assert last_closed_day(site_timezone("Asia/Tokyo"), date(2024, 3, 5)) == date(2024, 3, 4)


@pytest.mark.parametrize(
    ("name", "offset"),
    [("UTC", 0), ("UTC+5.5", 330), ("UTC-3", -180), ("UTC+12.75", 765), ("UTC-9.5", -570)],
)
def test_matomo_manual_offsets(name: str, offset: int) -> None:
    tz = site_timezone(name)
    assert datetime(2024, 1, 1, tzinfo=tz).utcoffset() == timedelta(minutes=offset)


def test_unknown_timezone() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        site_timezone("Mars/Olympus")


def test_day_range_and_behind() -> None:
    assert list(day_range(date(2024, 2, 28), date(2024, 3, 1))) == [
        date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]  # fmt: skip
    assert days_behind(date(2024, 3, 2), date(2024, 3, 1)) == 0
    assert days_behind(date(2024, 3, 1), date(2024, 3, 1)) == 1
