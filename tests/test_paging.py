"""Paging and request gating: pages in order, fetched ahead, few requests wasted, caps kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest

from matomo_kafka.checkpoint import Cursor
from matomo_kafka.matomo import RequestGate, Visit
from matomo_kafka.paging import OffsetPager

LIMIT = 10
FIRST = date(2024, 3, 1)


class FakeDays:
    """A day's visits by count; records every (day, offset) requested."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = {FIRST + timedelta(days=i): n for i, n in enumerate(counts)}
        self.requests: list[tuple[date, int]] = []
        self.lock = threading.Lock()

    def fetch(self, day: date, offset: int) -> list[Visit]:
        with self.lock:
            self.requests.append((day, offset))
        n = self.counts.get(day, 0)
        return [{"idVisit": i} for i in range(offset, min(n, offset + LIMIT))]


def read_all(days: FakeDays, start: Cursor, lookahead: int) -> list[tuple[date, int, int, bool]]:
    last = FIRST + timedelta(days=len(days.counts) - 1)
    with ThreadPoolExecutor(4) as pool:
        pager = OffsetPager(days.fetch, pool, start, last, LIMIT, lookahead)
        return [(p.day, p.offset, len(p.items), p.last) for p in pager]


@pytest.mark.parametrize("lookahead", [1, 2, 3])
def test_pages_in_order_cover_every_visit(lookahead: int) -> None:
    days = FakeDays([0, 9, 10, 11, 20, 35])
    pages = read_all(days, Cursor(FIRST, 0), lookahead)
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


def test_resume_inside_a_day() -> None:
    days = FakeDays([25, 5])
    pages = read_all(days, Cursor(FIRST, 20), 1)
    assert pages == [(FIRST, 20, 5, True), (FIRST + timedelta(days=1), 0, 5, True)]


def test_start_after_last_day_reads_nothing() -> None:
    days = FakeDays([5])
    assert read_all(days, Cursor(FIRST + timedelta(days=1), 0), 2) == []
    assert days.requests == []


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
