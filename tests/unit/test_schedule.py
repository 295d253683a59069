"""The page scheduler: slots run the most useful request first, the budget bounds memory,
needed requests are never kept waiting by speculation, the in-flight cap always holds.

Jobs here block on events the test releases, so every assertion is about order and counts,
never about durations."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

import pytest

from matomo_kafka.source.schedule import Pace, PageScheduler, Priority, Ticket, wait_for

T = TypeVar("T")

WAIT = 10.0  # seconds a test waits for something that must happen at once, before failing


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def take(ticket: Ticket[T], scheduler: PageScheduler) -> T:
    """What a pager does: waits for the ticket (promoting it) and returns its answer."""
    steps = wait_for(ticket)
    try:
        while True:
            next(steps)
            scheduler.wait(0.01)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Blocker:
    """A job that holds its slot until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        assert self.release.wait(WAIT), "never released"
        return "blocker"


def recorder(order: list[str], name: str) -> Callable[[], str]:
    def job() -> str:
        order.append(name)
        return name

    return job


def test_a_free_slot_runs_needed_then_read_ahead_then_next_days() -> None:
    order: list[str] = []
    with PageScheduler(slots=1, budget=100) as scheduler:
        blocker = Blocker()
        first = scheduler.submit(blocker, Priority.NEEDED)
        assert blocker.started.wait(WAIT)
        submitted = [
            ("next-day 2", Priority.NEXT_DAY, 2),
            ("read-ahead 2", Priority.READ_AHEAD, 2),
            ("next-day 1", Priority.NEXT_DAY, 1),
            ("read-ahead 1", Priority.READ_AHEAD, 1),
            ("needed A", Priority.NEEDED, 0),
            ("read-ahead 1 again", Priority.READ_AHEAD, 1),
            ("needed B", Priority.NEEDED, 0),
        ]
        tickets = [scheduler.submit(recorder(order, n), p, d) for n, p, d in submitted]
        blocker.release.set()
        until(lambda: all(t.done() for t in tickets), "every job")
        assert first.result() == "blocker"
    assert order == [
        "needed A", "needed B", "read-ahead 1", "read-ahead 1 again", "read-ahead 2",
        "next-day 1", "next-day 2",
    ]  # fmt: skip


def test_speculation_waits_for_the_budget_but_a_needed_request_never_does() -> None:
    with PageScheduler(slots=2, budget=2) as scheduler:
        ahead = [scheduler.submit(lambda: "ahead", Priority.READ_AHEAD, 1) for _ in range(2)]
        until(lambda: all(t.done() for t in ahead), "the first read-ahead")
        held: Ticket[str] = scheduler.submit(lambda: "held", Priority.READ_AHEAD, 1)
        needed = scheduler.submit(lambda: "needed", Priority.NEEDED)
        until(needed.done, "the needed request, past a full budget")
        assert held.state == "queued"  # two results not taken: the budget is full
        assert not scheduler.wants_work()
        assert [t.result() for t in ahead] == ["ahead", "ahead"]
        assert needed.result() == "needed"
        until(held.done, "the read-ahead, once results were taken")
        assert held.result() == "held"
        assert scheduler.max_outstanding == 3  # the budget, plus the one needed request


def test_pages_handed_to_delivery_keep_their_budget_places_until_delivered() -> None:
    with PageScheduler(slots=2, budget=2) as scheduler:
        ahead = [scheduler.submit(lambda: "ahead", Priority.READ_AHEAD, 1) for _ in range(2)]
        until(lambda: all(t.done() for t in ahead), "the read-ahead")
        assert [t.result() for t in ahead] == ["ahead", "ahead"]
        scheduler.hold(2)  # both handed over to delivery, not yet acknowledged
        assert not scheduler.wants_work()
        later: Ticket[str] = scheduler.submit(lambda: "later", Priority.READ_AHEAD, 1)
        time.sleep(0.05)  # a slot is free: only the budget keeps it from running
        assert later.state == "queued"
        scheduler.unhold(1)  # one page delivered
        until(later.done, "the read-ahead, once a delivery ended")
        assert scheduler.max_outstanding == 2  # held pages count: never over the budget


class Answer:
    """A page's stand-in that a weak reference can watch."""


def test_a_taken_result_is_not_kept_alive_by_the_scheduler() -> None:
    """A promoted ticket leaves its first heap entry behind (below a read-ahead the budget
    holds back, so it is not popped soon): that entry must not keep the page in memory."""
    with PageScheduler(slots=1, budget=1) as scheduler:
        first = scheduler.submit(Answer, Priority.READ_AHEAD, 1)
        until(first.done, "the first read-ahead")  # not taken: the budget is full
        scheduler.submit(Answer, Priority.READ_AHEAD, 0)  # held back by the budget
        later: Ticket[Answer] = scheduler.submit(Answer, Priority.READ_AHEAD, 2)
        answer = weakref.ref(take(later, scheduler))  # promoted: it runs past the budget
        del later
        gc.collect()
        assert answer() is None, "the scheduler still holds a page that was taken"


def test_a_promoted_request_passes_a_full_budget() -> None:
    with PageScheduler(slots=1, budget=1) as scheduler:
        done = scheduler.submit(lambda: 1, Priority.READ_AHEAD, 1)
        until(done.done, "the first read-ahead")
        later = scheduler.submit(lambda: 2, Priority.READ_AHEAD, 2)
        assert later.state == "queued"  # the budget is full
        assert take(later, scheduler) == 2  # a pager waits for it: promoted, it runs
        assert done.result() == 1


def test_a_cancelled_request_never_runs_and_frees_its_place() -> None:
    ran: list[str] = []
    with PageScheduler(slots=1, budget=1) as scheduler:
        blocker = Blocker()
        running = scheduler.submit(blocker, Priority.READ_AHEAD, 1)
        assert blocker.started.wait(WAIT)
        dropped = scheduler.submit(recorder(ran, "dropped"), Priority.NEEDED)
        dropped.cancel()
        running.cancel()  # while it runs: its result is dropped, its budget place freed
        blocker.release.set()
        after = scheduler.submit(recorder(ran, "after"), Priority.READ_AHEAD, 1)
        until(after.done, "the request after the cancelled ones")
        assert ran == ["after"] and dropped.state == "cancelled"


def test_a_failed_request_raises_where_it_is_taken() -> None:
    def boom() -> None:
        raise ValueError("matomo said no")

    with PageScheduler(slots=1, budget=1) as scheduler:
        ticket = scheduler.submit(boom, Priority.NEEDED)
        with pytest.raises(ValueError, match="matomo said no"):
            take(ticket, scheduler)


def test_never_more_requests_in_flight_than_slots() -> None:
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def job() -> None:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.001)
        with lock:
            in_flight[0] -= 1

    with PageScheduler(slots=3, budget=6) as scheduler:
        tickets = [
            scheduler.submit(job, Priority.READ_AHEAD if k % 2 else Priority.NEXT_DAY, k % 5)
            for k in range(120)
        ]
        taken: set[int] = set()
        deadline = time.monotonic() + WAIT
        while len(taken) < len(tickets):  # results taken as they come, as the pipeline does
            assert time.monotonic() < deadline, "the jobs did not all run"
            for k, ticket in enumerate(tickets):
                if k not in taken and ticket.done():
                    ticket.result()
                    taken.add(k)
            scheduler.wait(0.01)
    assert peak[0] <= 3 and scheduler.max_running <= 3
    assert scheduler.max_outstanding <= 6


def test_wants_work_only_when_a_slot_would_idle() -> None:
    with PageScheduler(slots=1, budget=4) as scheduler:
        assert scheduler.wants_work()
        blocker = Blocker()
        scheduler.submit(blocker, Priority.NEEDED)
        assert blocker.started.wait(WAIT)
        assert not scheduler.wants_work()  # the only slot is busy
        blocker.release.set()
        until(scheduler.wants_work, "the slot to be free again")


def test_a_slot_goes_back_to_matomo_while_the_answer_is_parsed() -> None:
    """The `then` step (parsing a page) runs on the parse thread: the slot that fetched the
    page runs the next request meanwhile."""
    parsing, release = threading.Event(), threading.Event()

    def slow_parse(raw: str) -> str:
        parsing.set()
        assert release.wait(WAIT), "never released"
        return raw.upper()

    with PageScheduler(slots=1, budget=4) as scheduler:
        first: Ticket[str] = scheduler.submit(lambda: "page", Priority.NEEDED, then=slow_parse)
        assert parsing.wait(WAIT)
        second = scheduler.submit(lambda: "next", Priority.READ_AHEAD, 1)
        until(second.done, "the next request, while the first answer is parsed")
        assert not first.done()
        release.set()
        assert take(first, scheduler) == "PAGE" and second.result() == "next"


# -- the pace: requests in flight under the cap, following Matomo's strain -----------------


def test_the_pace_halves_on_strain_once_per_window() -> None:
    pace = Pace(cap=8)
    pace.strained("HTTP 503")
    assert pace.level == 4
    pace.strained("HTTP 503")  # the same burst: not judged at the new level yet
    assert pace.level == 4
    for _ in range(4):
        pace.answered(0.2, full_page=True)
    pace.strained("HTTP 429")
    assert pace.level == 2 and pace.lowest == 2
    for _ in range(2):
        pace.answered(0.2, full_page=True)
    pace.strained("timed out")
    pace.answered(0.2, full_page=True)
    pace.strained("timed out")
    assert pace.level == 1  # never below one


def test_the_pace_backs_off_when_pages_queue_and_recovers_slowly() -> None:
    """Full pages taking twice the fastest time (requests queued behind Matomo's workers):
    one less at a time; back at the fastest: one more, after 4 x level answers."""
    pace = Pace(cap=4)
    for _ in range(4):
        pace.answered(0.2, full_page=True)
    assert pace.level == 4
    slow = 0
    while pace.level == 4 and slow < 50:
        pace.answered(0.45, full_page=True)  # twice the fastest, and 0.25 s more
        slow += 1
    assert pace.level == 3 and slow > 4  # judged on several answers, not on one
    fast = 0
    while pace.level == 3 and fast < 100:
        pace.answered(0.2, full_page=True)
        fast += 1
    assert pace.level == 4 and fast >= 4 * 3  # slowly: after 4 x level answers
    for _ in range(100):
        pace.answered(0.2, full_page=True)
    assert pace.level == 4  # never above the cap
    short_only = Pace(cap=4)
    for _ in range(40):
        short_only.answered(5.0, full_page=False)  # short pages say nothing of the speed
    assert short_only.level == 4


def test_the_scheduler_keeps_to_the_pace() -> None:
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def job() -> None:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.002)
        with lock:
            in_flight[0] -= 1

    pace = Pace(cap=4)
    pace.strained("HTTP 503")  # 4 -> 2
    with PageScheduler(slots=4, budget=8, pace=pace) as scheduler:
        tickets = [scheduler.submit(job, Priority.NEEDED) for _ in range(40)]
        for ticket in tickets:
            until(ticket.done, "every job")
            ticket.result()
    assert peak[0] <= 2 and scheduler.max_running <= 2
