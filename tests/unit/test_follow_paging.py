"""Paging up to a horizon (issue 15, `follow`): the open day is read up to a Unix second, the
checkpoint keeps the day (offset, keyset boundary) and never ends it, and the next read resumes
from the boundary. Modelled against a Matomo whose clock shows visits past the horizon (visits
still going on), with same-second ties ordered anew by every request."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matomo_kafka.model import Cursor, Page
from matomo_kafka.source.paging import Pager
from matomo_kafka.source.schedule import PageScheduler, drive
from support.paging_sources import FIRST, TiedDays

BASE = 1_709_251_200  # 2024-03-01 00:00 UTC: day d is [BASE + d * 86400, BASE + (d + 1) * 86400)
DAY_S = 86_400
STEP = 2_800  # seconds between the groups of a day (30 groups fill it)


class ClockDays(TiedDays):
    """TiedDays whose Matomo clock starts at 0: a test moves `now` along the day."""

    def __init__(self, days: dict[date, list[tuple[int, int]]], seed: int) -> None:
        super().__init__(days, seed, now=0)

    def stamp_of(self) -> dict[int, int]:
        return {idvisit: stamp for visits in self.days.values() for stamp, idvisit in visits}


def clock_days(groups: list[list[int]]) -> dict[date, list[tuple[int, int]]]:
    """Day d holds groups[d][k] visits ending at second BASE + d * DAY_S + k * STEP."""
    days = {}
    for d, sizes in enumerate(groups):
        days[FIRST + timedelta(days=d)] = [
            (BASE + d * DAY_S + k * STEP, (d << 20) | (k << 10) | j)
            for k, size in enumerate(sizes) for j in range(size)
        ]  # fmt: skip
    return days


def last_closed(horizon: int) -> date:
    """The newest day whose end is at or before the horizon."""
    return FIRST + timedelta(days=(horizon - BASE) // DAY_S - 1)


def read_cycle(
    source: ClockDays,
    start: Cursor,
    horizon: int,
    limit: int,
    lookahead: int,
    keyset: bool = True,
    stop_after: int | None = None,
) -> tuple[list[Page[int]], Cursor]:
    """One cycle of follow: the pages read up to the horizon, and the checkpoint after them."""
    pages: list[Page[int]] = []
    cursor = start
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(source.fetch, scheduler.submit, start, last_closed(horizon), limit,
                      lookahead, keyset, horizon=horizon)  # fmt: skip
        for page in drive(iter(pager), scheduler):
            pages.append(page)
            cursor = page.checkpoint
            if stop_after is not None and len(pages) >= stop_after:
                break
    return pages, cursor


group_sizes = st.lists(st.lists(st.integers(0, 6), max_size=30), min_size=1, max_size=3)


@settings(max_examples=120, deadline=None)
@given(groups=group_sizes, limit=st.integers(1, 7), lookahead=st.integers(1, 3),
       seed=st.integers(0, 2**32), steps=st.lists(st.integers(1, 40_000), max_size=12),
       first=st.integers(0, DAY_S), ahead=st.integers(0, 5_000),
       stops=st.lists(st.none() | st.integers(1, 3), max_size=12),
       keyset=st.booleans())  # fmt: skip
def test_cycles_up_to_moving_horizons_send_each_visit_once_and_never_early(
    groups: list[list[int]],
    limit: int,
    lookahead: int,
    seed: int,
    steps: list[int],
    first: int,
    ahead: int,
    stops: list[int | None],
    keyset: bool,
) -> None:
    """Horizons move forward through the days by random steps; Matomo's clock is ahead of
    each horizon (visits past it are served); a cycle may stop after any page (a kill) and the
    next resumes from the checkpoint. No visit is ever sent past its cycle's horizon, none
    twice, and once the horizon passes the last day every visit has been sent. Offset paging
    only without ties (it is not safe with them anyway)."""
    if not keyset:
        groups = [[min(size, 1) for size in day] for day in groups]
    days = clock_days(groups)
    source = ClockDays(days, seed)
    stamps = source.stamp_of()
    horizon = BASE + first
    cursor = Cursor(FIRST, 0)
    got: list[int] = []
    end = BASE + (len(groups) + 1) * DAY_S  # past the last day's end
    for n, step in enumerate([0, *steps, end]):
        horizon = min(horizon + step, end) if n <= len(steps) else end
        source.now = horizon + ahead
        stop = stops[n] if n < len(stops) else None
        pages, cursor = read_cycle(source, cursor, horizon, limit, lookahead, keyset, stop)
        for page in pages:
            assert all(stamps[i] <= horizon for i in page.items), "a visit sent early"
            is_open = page.day > last_closed(horizon)
            if page.items and (keyset or is_open):
                assert page.newest == max(stamps[i] for i in page.items)
            if is_open:
                assert not page.last, "the open day was ended"
                assert page.checkpoint.day == page.day
            got.extend(page.items)
        assert len(got) == len(set(got)), "a visit sent twice"
    ids = sorted(stamps)
    if len(got) < len(ids):  # the last cycle may have stopped: one more without a stop
        pages, cursor = read_cycle(source, cursor, end, limit, lookahead, keyset)
        got.extend(i for page in pages for i in page.items)
    assert sorted(got) == ids


def test_the_open_day_is_read_up_to_the_horizon_and_not_ended() -> None:
    """Closed days are read to their end as `run` does; the open day stops at the horizon and
    its checkpoint keeps the day with the visits sent and the boundary."""
    days = clock_days([[2, 2], [1, 1, 3, 2, 1]])
    source = ClockDays(days, 1)
    open_day = FIRST + timedelta(days=1)
    horizon = BASE + DAY_S + 2 * STEP  # the open day's first three groups
    source.now = horizon + 3 * STEP  # Matomo shows more
    pages, cursor = read_cycle(source, Cursor(FIRST, 0), horizon, 3, 2)
    assert [(p.day, p.last) for p in pages] == [(FIRST, False), (FIRST, True),
                                                (open_day, False), (open_day, False)]  # fmt: skip
    assert [len(p.items) for p in pages] == [3, 1, 3, 2]
    assert cursor.day == open_day and cursor.offset == 5
    assert cursor.last_action == horizon and len(cursor.ids) == 3

    # Nothing new: no page at all (no empty delivery every cycle), the checkpoint stays.
    pages, again = read_cycle(source, cursor, horizon + 10, 3, 2)
    assert pages == [] and again == cursor

    # A cycle later the day resumes from the boundary with minTimestamp.
    source.requests.clear()
    pages, cursor = read_cycle(source, cursor, horizon + 2 * STEP, 3, 2)
    first = source.requests[0]
    assert (first.day, first.after, first.offset) == (open_day, horizon - 1, 0)
    assert [len(p.items) for p in pages] == [3] and not pages[0].last
    assert cursor.day == open_day and cursor.offset == 8

    # The horizon passes midnight: the day ends (its last page is empty), the next is empty.
    pages, cursor = read_cycle(source, cursor, BASE + 2 * DAY_S + 60, 3, 2)
    assert [(p.day, len(p.items), p.last) for p in pages] == [(open_day, 0, True)]
    assert cursor == Cursor(open_day + timedelta(days=1), 0)


def test_offset_paging_up_to_a_horizon_resumes_at_the_offset() -> None:
    days = clock_days([[1] * 9])
    source = ClockDays(days, 1)
    horizon = BASE + 4 * STEP
    source.now = BASE + DAY_S // 2
    pages, cursor = read_cycle(source, Cursor(FIRST, 0), horizon, 2, 1, keyset=False)
    assert [len(p.items) for p in pages] == [2, 2, 1] and not any(p.last for p in pages)
    assert cursor == Cursor(FIRST, 5)
    source.requests.clear()
    pages, cursor = read_cycle(source, cursor, horizon + 2 * STEP, 2, 1, keyset=False)
    assert (source.requests[0].offset, source.requests[0].after) == (5, None)
    assert [len(p.items) for p in pages] == [2] and cursor == Cursor(FIRST, 7)


@pytest.mark.parametrize("keyset", [True, False])
def test_a_horizon_before_the_checkpoint_reads_nothing(keyset: bool) -> None:
    """A clock that went back (a restart on another host): nothing is sent, nothing moves."""
    days = clock_days([[3, 3, 3]])
    source = ClockDays(days, 1)
    source.now = BASE + DAY_S // 2
    _, cursor = read_cycle(source, Cursor(FIRST, 0), BASE + 2 * STEP, 10, 1, keyset)
    assert cursor.offset == 9
    pages, again = read_cycle(source, cursor, BASE + STEP, 10, 1, keyset)
    assert [len(p.items) for p in pages] == [] and again == cursor
    # And a day after the open one (a checkpoint written by a clock ahead) is not read.
    later = Cursor(FIRST + timedelta(days=2), 0)
    pages, again = read_cycle(source, later, BASE + 2 * STEP, 10, 1, keyset)
    assert pages == [] and again == later


def test_without_a_horizon_nothing_changes() -> None:
    """`run`: the open day does not exist, the last day ends with its short page."""
    days = clock_days([[2, 2]])
    source = ClockDays(days, 1)
    source.now = BASE + DAY_S
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(source.fetch, scheduler.submit, Cursor(FIRST, 0), FIRST, 10, 2)
        pages = list(drive(iter(pager), scheduler))
    assert [(len(p.items), p.last) for p in pages] == [(4, True)]
    assert {r.day for r in source.requests} == {FIRST}
