"""A checkpoint offset the day cannot hold (issue 28, point 1): resuming past the day's end
would skip the rest of the day silently; the pager raises instead, for either paging, and an
offset equal to the day's visits (a run stopped after the day's last page) still goes on."""

from __future__ import annotations

from datetime import timedelta

import pytest

from matomo_kafka.errors import CheckpointError, OffsetBeyondDay
from matomo_kafka.model import Cursor
from matomo_kafka.source.paging import Pager
from matomo_kafka.source.schedule import PageScheduler, drive
from support.paging_sources import FIRST, FakeDays

LIMIT = 10


def pages(days: FakeDays, start: Cursor, keyset: bool) -> list[tuple[object, int, int]]:
    last = FIRST + timedelta(days=len(days.counts) - 1)
    with PageScheduler(slots=2, budget=4) as scheduler:
        pager = Pager(days.fetch, scheduler.submit, start, last, LIMIT, 2, keyset)
        return [(p.day, p.offset, len(p.items)) for p in drive(iter(pager), scheduler)]


@pytest.mark.parametrize("keyset", [True, False])
@pytest.mark.parametrize("offset", [26, 251, 9999])
def test_an_offset_beyond_the_day_is_a_corrupt_checkpoint(keyset: bool, offset: int) -> None:
    days = FakeDays([25, 7])
    with pytest.raises(OffsetBeyondDay) as raised:
        pages(days, Cursor(FIRST, offset), keyset)
    assert isinstance(raised.value, CheckpointError)
    assert (raised.value.day, raised.value.offset) == (FIRST, offset)


@pytest.mark.parametrize("keyset", [True, False])
def test_an_offset_at_the_days_end_goes_on(keyset: bool) -> None:
    days = FakeDays([25, 7])
    got = pages(days, Cursor(FIRST, 25), keyset)
    assert got[-1] == (FIRST + timedelta(days=1), 0, 7)
    assert sum(count for _, _, count in got) == 7


def test_an_empty_day_at_offset_zero_asks_nothing_more() -> None:
    days = FakeDays([0, 3])
    assert sum(count for _, _, count in pages(days, Cursor(FIRST, 0), True)) == 3
    assert all(offset == 0 for _, offset in days.requests)
