"""The scheduler's byte budget: pages fetched and not yet delivered are counted in bytes too
(a page's size follows its visits), read-ahead stops when the budget is full, a needed page
always goes, and a page bigger than the budget runs alone rather than never.

Jobs block until the test lets them go, so assertions are about order and counts, never
about durations."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from matomo_kafka.source.schedule import PageScheduler, Priority

WAIT = 10.0  # seconds a test waits for something that must happen at once, before failing


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def measured(value: object) -> int | None:
    """The test's results are their own size in bytes."""
    return value if isinstance(value, int) else None


def test_read_ahead_stops_when_the_byte_budget_is_full() -> None:
    """Pages of 400 bytes, a budget of 1000 bytes and 100 pages: two run, the third waits
    until one is taken, however many slots and page places are free."""
    with PageScheduler(slots=4, budget=100, budget_bytes=1000, measure=measured) as scheduler:
        ahead = [scheduler.submit(lambda: 400, Priority.READ_AHEAD, 1, cost=400) for _ in range(3)]
        until(lambda: sum(t.done() for t in ahead) == 2, "two read-ahead pages")
        time.sleep(0.05)  # slots are free: only the byte budget keeps the third from running
        assert [t.state for t in ahead].count("queued") == 1
        assert not scheduler.wants_work()
        taken = next(t for t in ahead if t.done())
        assert taken.result() == 400
        until(lambda: all(t.done() for t in ahead), "the third page, once one was taken")
        assert scheduler.max_bytes == 800


def test_a_needed_page_goes_past_the_byte_budget() -> None:
    with PageScheduler(slots=2, budget=100, budget_bytes=1000, measure=measured) as scheduler:
        full = scheduler.submit(lambda: 1000, Priority.READ_AHEAD, 1, cost=1000)
        until(full.done, "the read-ahead page")
        needed = scheduler.submit(lambda: 500, Priority.NEEDED, cost=500)
        until(needed.done, "the needed page, past a full byte budget")
        assert scheduler.max_bytes == 1500


def test_the_measured_size_replaces_the_estimate() -> None:
    """A page estimated at 100 bytes that holds 900: the next one (200) waits for it."""
    with PageScheduler(slots=2, budget=100, budget_bytes=1000, measure=measured) as scheduler:
        heavy = scheduler.submit(lambda: 900, Priority.READ_AHEAD, 1, cost=100)
        until(heavy.done, "the heavy page")
        later = scheduler.submit(lambda: 200, Priority.READ_AHEAD, 1, cost=200)
        time.sleep(0.05)
        assert later.state == "queued"
        heavy.cancel()  # dropped: its bytes go back to the budget
        until(later.done, "the next page, once the heavy one was dropped")


def test_pages_handed_to_delivery_keep_their_bytes_until_delivered() -> None:
    with PageScheduler(slots=2, budget=100, budget_bytes=1000, measure=measured) as scheduler:
        scheduler.hold(1, 900)  # a page of 900 bytes handed over, not yet acknowledged
        later = scheduler.submit(lambda: 200, Priority.READ_AHEAD, 1, cost=200)
        time.sleep(0.05)
        assert later.state == "queued"
        assert not scheduler.wants_work()
        scheduler.unhold(1, 900)
        until(later.done, "the read-ahead, once the delivery ended")


def test_a_page_bigger_than_the_byte_budget_runs_alone() -> None:
    with PageScheduler(slots=2, budget=100, budget_bytes=1000, measure=measured) as scheduler:
        huge = scheduler.submit(lambda: 5000, Priority.READ_AHEAD, 1, cost=5000)
        until(huge.done, "a page bigger than the whole budget, with nothing else in memory")
        small = scheduler.submit(lambda: 10, Priority.READ_AHEAD, 1, cost=10)
        time.sleep(0.05)
        assert small.state == "queued"
        assert huge.result() == 5000
        until(small.done, "the next page")
