"""A checkpoint offset the day cannot hold (issue 28, point 1): resuming past the day's end
would skip the rest of the day silently; the pager raises instead, for either paging, and an
offset equal to the day's visits (a run stopped after the day's last page) still goes on."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest

from matomo_kafka.errors import CheckpointError, OffsetBeyondDay
from matomo_kafka.model import Cursor
from matomo_kafka.source.paging import Batch, Pager, Request
from matomo_kafka.source.schedule import PageScheduler, drive

LIMIT = 10
FIRST = date(2024, 3, 1)


class FakeDays:
    """A day's visits by count, one per second (as in test_paging.py); records each request's
    (day, offset)."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = {FIRST + timedelta(days=i): n for i, n in enumerate(counts)}
        self.requests: list[tuple[date, int]] = []
        self.lock = threading.Lock()

    def fetch(self, request: Request) -> Batch[int]:
        with self.lock:
            self.requests.append((request.day, request.offset))
        n = self.counts.get(request.day, 0)
        ids = list(range(request.offset, min(n, request.offset + request.limit)))
        return Batch(ids, ids, [1_700_000_000 + i for i in ids])


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
