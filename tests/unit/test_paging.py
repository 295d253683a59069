"""Paging and request gating: pages in order, fetched ahead, few requests wasted, caps kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matomo_kafka.errors import MatomoError, MatomoResponseError, PageTooHeavy
from matomo_kafka.model import Cursor
from matomo_kafka.source import paging
from matomo_kafka.source.client import RequestGate
from matomo_kafka.source.paging import Batch, Pager, Request
from matomo_kafka.source.schedule import PageScheduler, drive
from support.paging_sources import FIRST, FakeDays, TiedDays

LIMIT = 10


def read_all(
    days: FakeDays, start: Cursor, lookahead: int, keyset: bool = True
) -> list[tuple[date, int, int, bool]]:
    last = FIRST + timedelta(days=len(days.counts) - 1)
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(days.fetch, scheduler.submit, start, last, LIMIT, lookahead, keyset)
        return [(p.day, p.offset, len(p.items), p.last) for p in drive(iter(pager), scheduler)]


@pytest.mark.parametrize("keyset", [True, False])
@pytest.mark.parametrize("lookahead", [1, 2, 3])
def test_pages_in_order_cover_every_visit(lookahead: int, keyset: bool) -> None:
    days = FakeDays([0, 9, 10, 11, 20, 35])
    pages = read_all(days, Cursor(FIRST, 0), lookahead, keyset)
    for day, count in days.counts.items():
        day_pages = [p for p in pages if p[0] == day]
        assert sum(p[2] for p in day_pages) == count
        assert [p[1] for p in day_pages] == [LIMIT * k for k in range(len(day_pages))]
        assert [p[3] for p in day_pages] == [False] * (len(day_pages) - 1) + [True]
    assert [p[0] for p in pages] == sorted(p[0] for p in pages)


def test_lookahead_one_wastes_no_request() -> None:
    days = FakeDays([0, 9, 10, 11, 20, 35])
    pages = read_all(days, Cursor(FIRST, 0), 1)
    assert sorted(days.requests) == sorted((p[0], p[1]) for p in pages)


def test_speculation_wastes_at_most_lookahead_minus_one_per_day() -> None:
    days = FakeDays([0, 9, 10, 11, 20, 35])
    pages = read_all(days, Cursor(FIRST, 0), 3)
    wasted = len(days.requests) - len(pages)
    assert 0 <= wasted <= 2 * len(days.counts)
    assert len(set(days.requests)) == len(days.requests), "a page was fetched twice"


class SpreadDays(FakeDays):
    """Visits spread over the day (UTC) as Live lists them, by last action time; with a
    rush of `rush` visits in the day's last hour (a campaign), when given."""

    def __init__(self, counts: list[int], rush: int = 0) -> None:
        super().__init__(counts)
        self.rush = rush

    @staticmethod
    def start(day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())

    def end(self, day: date) -> int:
        return self.start(day) + 86_400

    def stamp(self, day: date, i: int) -> int:
        n, rush = self.counts[day] - self.rush, self.rush
        if i < n:  # over the first 23 hours
            return self.start(day) + (i + 1) * 82_800 // (n + 1)
        return self.start(day) + 82_800 + (i - n + 1) * 3_600 // (rush + 1)

    def fetch(self, request: Request) -> Batch[int]:
        batch = super().fetch(request)
        return Batch(batch.items, batch.ids, [self.stamp(request.day, i) for i in batch.ids])


def read_spread(days: SpreadDays, estimate: bool) -> list[tuple[date, int, int]]:
    last = FIRST + timedelta(days=len(days.counts) - 1)
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(days.fetch, scheduler.submit, Cursor(FIRST, 0), last, LIMIT, 8,
                      day_end=days.end if estimate else None)  # fmt: skip
        return [(p.day, p.offset, len(p.items)) for p in drive(iter(pager), scheduler)]


def test_read_ahead_stops_near_the_estimated_end_of_the_day() -> None:
    """A full page's last visit and the pace of its visits tell how many pages the day has
    left: read-ahead goes no further than one page past that (8 in this lookahead else)."""
    counts = [95, 200, 30]
    wasted = {}
    for estimate in (False, True):
        days = SpreadDays(counts)
        pages = read_spread(days, estimate)
        assert [sum(p[2] for p in pages if p[0] == day) for day in days.counts] == counts
        beyond = [(d, o) for d, o in days.requests if o >= days.counts[d] + LIMIT]
        wasted[estimate] = len(beyond)
    assert wasted[True] <= len(counts)  # at most one past each day's confirming page
    assert wasted[False] > wasted[True]


def test_a_rush_at_the_end_of_the_day_is_read_whole() -> None:
    """An estimate is only an estimate: a day whose last hour holds most of its visits is
    read to its end, every visit once, whatever the read-ahead guessed."""
    days = SpreadDays([300], rush=250)
    pages = read_spread(days, estimate=True)
    assert sum(p[2] for p in pages) == 300
    assert [p[1] for p in pages] == [LIMIT * k for k in range(len(pages))]


def test_resume_inside_a_day_at_an_offset() -> None:
    """A cursor without a boundary (the seed's files): the day resumes at its offset."""
    days = FakeDays([25, 5])
    pages = read_all(days, Cursor(FIRST, 20), 1)
    assert pages == [(FIRST, 20, 5, True), (FIRST + timedelta(days=1), 0, 5, True)]


def test_start_after_last_day_reads_nothing() -> None:
    days = FakeDays([5])
    assert read_all(days, Cursor(FIRST + timedelta(days=1), 0), 2) == []
    assert days.requests == []


def tied_days(groups: list[list[int]]) -> dict[date, list[tuple[int, int]]]:
    """Day i holds groups[i][k] visits at second k (many ties)."""
    days = {}
    for d, sizes in enumerate(groups):
        second = 1_700_000_000 + d * 86_400
        days[FIRST + timedelta(days=d)] = [
            (second + k, (d << 20) | (k << 10) | j) for k, size in enumerate(sizes)
            for j in range(size)
        ]  # fmt: skip
    return days


def read_ids(
    source: TiedDays,
    start: Cursor,
    last: date,
    limit: int,
    lookahead: int,
    keyset: bool = True,
    stop_after: int | None = None,
) -> tuple[list[int], Cursor]:
    """The ids of the pages read, and the cursor after the last one (a checkpoint)."""
    ids: list[int] = []
    cursor = start
    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(source.fetch, scheduler.submit, start, last, limit, lookahead, keyset)
        for n, page in enumerate(drive(iter(pager), scheduler)):
            ids.extend(page.items)
            cursor = page.checkpoint
            if stop_after is not None and n + 1 >= stop_after:
                break
    return ids, cursor


group_sizes = st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=12), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(groups=group_sizes, limit=st.integers(1, 7), lookahead=st.integers(1, 3),
       seed=st.integers(0, 2**32), stops=st.lists(st.integers(1, 4), max_size=4))  # fmt: skip
def test_keyset_reads_every_visit_once_despite_unstable_ties(
    groups: list[list[int]], limit: int, lookahead: int, seed: int, stops: list[int]
) -> None:
    """Whatever the tie order of each request, page size, read-ahead, and wherever the run
    stops and resumes from its checkpoint: every visit exactly once."""
    days = tied_days(groups)
    source = TiedDays(days, seed)
    last = FIRST + timedelta(days=len(groups) - 1)
    got: list[int] = []
    cursor = Cursor(FIRST, 0)
    for stop in [*stops, None]:
        ids, cursor = read_ids(source, cursor, last, limit, lookahead, stop_after=stop)
        got.extend(ids)
        if cursor.day > last:
            break
    expected = sorted(idvisit for visits in days.values() for _, idvisit in visits)
    assert sorted(got) == expected


def test_offset_paging_skips_and_repeats_on_unstable_ties() -> None:
    """The failure keyset paging exists for (so the test above can fail)."""
    days = tied_days([[7] * 6])
    expected = sorted(idvisit for _, idvisit in days[FIRST])
    outcomes = set()
    for seed in range(20):
        ids, _ = read_ids(TiedDays(days, seed), Cursor(FIRST, 0), FIRST, 5, 1, keyset=False)
        outcomes.add(sorted(ids) == expected)
    assert False in outcomes


def test_a_second_larger_than_a_page_is_read_whole() -> None:
    """One second holding 50 visits with pages of 7: the repair request grows until the
    second ends, and nothing is skipped or repeated."""
    days = tied_days([[3, 50, 4]])
    source = TiedDays(days, 1)
    ids, _ = read_ids(source, Cursor(FIRST, 0), FIRST, 7, 2)
    assert sorted(ids) == sorted(idvisit for _, idvisit in days[FIRST])
    assert max(r.limit for r in source.requests) >= 50


def test_resume_from_a_boundary_anchors_with_min_timestamp() -> None:
    days = tied_days([[4, 4, 4]])
    source = TiedDays(days, 3)
    ids, cursor = read_ids(source, Cursor(FIRST, 0), FIRST, 6, 1, stop_after=1)
    assert len(ids) == 6 and cursor.last_action is not None and cursor.offset == 6
    assert len(cursor.ids) == 2  # 4 visits at the first second, 2 of the second
    source.requests.clear()
    rest, _ = read_ids(source, cursor, FIRST, 6, 1)
    first = source.requests[0]
    assert (first.after, first.limit, first.offset) == (cursor.last_action - 1, 6 + 2, 0)
    assert sorted(ids + rest) == sorted(idvisit for _, idvisit in days[FIRST])


def test_gate_caps_requests_in_flight() -> None:
    gate = RequestGate(max_in_flight=2)
    in_flight, peak, lock = 0, 0, threading.Lock()

    def request() -> None:
        nonlocal in_flight, peak
        with gate.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(request) for _ in range(24)]:
            future.result()
    assert peak == 2


def test_gate_spaces_request_starts() -> None:
    gate = RequestGate(max_in_flight=4, per_minute=600)  # one start every 0.1 s
    started = time.monotonic()
    for _ in range(5):
        with gate.slot():
            pass
    assert time.monotonic() - started >= 0.39


def test_a_second_beyond_the_cap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paging, "MAX_VISITS_IN_ONE_SECOND", 40)
    days = tied_days([[3, 50, 4]])
    with pytest.raises(MatomoResponseError, match="more than 40 visits end in the same second"):
        read_ids(TiedDays(days, 1), Cursor(FIRST, 0), FIRST, 7, 2)


class HeavyDays(TiedDays):
    """Like TiedDays, but an answer of more than `heavy` visits fails as a real Matomo does
    when a page exceeds its PHP memory limit."""

    def __init__(self, days: dict[date, list[tuple[int, int]]], seed: int, heavy: int) -> None:
        super().__init__(days, seed)
        self.heavy = heavy

    def fetch(self, request: Request) -> Batch[int]:
        batch = super().fetch(request)
        if len(batch.items) > self.heavy:
            raise PageTooHeavy("Live.getLastVisitsDetails: HTTP 500: Matomo ran out of memory")
        return batch


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(groups=group_sizes, limit=st.integers(4, 9), heavy=st.integers(2, 5),
       seed=st.integers(0, 2**32), stops=st.lists(st.integers(1, 4), max_size=3),
       keyset=st.booleans())  # fmt: skip
def test_pages_too_heavy_are_split_and_every_visit_comes_once(
    monkeypatch: pytest.MonkeyPatch,
    groups: list[list[int]],
    limit: int,
    heavy: int,
    seed: int,
    stops: list[int],
    keyset: bool,
) -> None:
    """Pages of more than `heavy` visits fail; each is asked for again in halves (down to
    the floor), the next pages at the configured size again; resumed from the checkpoints
    anywhere: every visit exactly once. Ties only with keyset paging (offset paging is not
    safe with them anyway), and fewer visits in one second than the server can answer at
    once: keyset paging reads a boundary second whole, with one more visit to see its end."""
    monkeypatch.setattr(paging, "MIN_SPLIT_LIMIT", 2)  # the same for every example
    most = heavy - 1 if keyset else 1
    groups = [[min(size, most) for size in day] for day in groups]
    days = tied_days(groups)
    source = HeavyDays(days, seed, heavy)
    last = FIRST + timedelta(days=len(groups) - 1)
    got: list[int] = []
    cursor = Cursor(FIRST, 0)
    for stop in [*stops, None]:
        ids, cursor = read_ids(source, cursor, last, limit, 2, keyset, stop_after=stop)
        got.extend(ids)
        if cursor.day > last:
            break
    assert sorted(got) == sorted(idvisit for visits in days.values() for _, idvisit in visits)


def test_a_page_too_heavy_even_at_the_floor_fails_with_its_day_and_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paging, "MIN_SPLIT_LIMIT", 2)
    days = tied_days([[1] * 12])
    with pytest.raises(MatomoError, match=r"even a page of 2 visits fails on 2024-03-01 after"):
        read_ids(HeavyDays(days, 1, heavy=1), Cursor(FIRST, 0), FIRST, 8, 1)


def test_after_a_split_the_next_pages_are_full_size_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A day whose first second holds a heavy group: only the page that hit the limit is cut."""
    monkeypatch.setattr(paging, "MIN_SPLIT_LIMIT", 2)
    source = HeavyDays(tied_days([[1] * 40]), 1, heavy=10)
    ids, _ = read_ids(source, Cursor(FIRST, 0), FIRST, 16, 1, keyset=False)
    assert sorted(ids) == sorted(idvisit for _, idvisit in tied_days([[1] * 40])[FIRST])
    assert [r.limit for r in source.requests][:4] == [16, 8, 16, 8]


def test_a_repair_abandoned_when_its_site_closes_frees_its_budget_place() -> None:
    """A boundary-second repair still running when its site closed (failed, stopped) kept
    one place of the run's page budget for good: a run with many such sites read ahead less
    and less. Closing the site's pages gives it back."""
    source = TiedDays(tied_days([[3, 50, 4]]), 1)
    repairing, release = threading.Event(), threading.Event()

    def fetch(request: Request) -> Batch[int]:
        if request.after is not None:  # the repair: a read of the boundary second
            repairing.set()
            release.wait(10)
        return source.fetch(request)

    with PageScheduler(slots=4, budget=8) as scheduler:
        pager = Pager(fetch, scheduler.submit, Cursor(FIRST, 0), FIRST, 7, 2, True)
        steps = iter(pager)
        while not repairing.is_set():
            if next(steps) is None:
                scheduler.wait(0.05)
        steps.close()  # the site closes while its repair runs
        release.set()
        deadline = time.monotonic() + 10
        while scheduler._running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler._running == 0
        assert scheduler._outstanding == 0, "a budget place is never given back"
