"""The page scheduler: MATOMO_MAX_CONCURRENCY request slots shared by every site of the run.

Wall time comes from keeping Matomo usefully busy. Each site's pager says which requests it
wants (see paging.py) and how much it needs them; a free slot always runs the most useful
queued request of ANY site:
1. NEEDED: the request a site's delivery is waiting for (its metadata, its next page in
   order, a boundary repair), oldest first;
2. READ_AHEAD: the next pages of a day whose last page came back full (a short page ends the
   day: at most the pages already asked for beyond its end are wasted), nearest first;
3. NEXT_DAY: the first page of a site's following days, nearest first.
When nothing is queued and a slot is free, the pipeline opens the next site (`wants_work`).

A request may come with a `then` step (parsing a page): it runs on one parse thread once the
answer is in, so a slot goes back to Matomo at once instead of parsing (a page of 1000
visits is ~25 ms of parsing: idle Matomo time if a slot did it).

Memory stays bounded whatever the sites and days: tickets running or holding a result not
yet taken (`outstanding`), and results taken but not yet delivered (`hold`), stay under
`budget` pages and, with `budget_bytes`, under that many bytes (a page's size follows its
visits: 1000 visits of 500 actions are 200 MB): a ticket counts its estimated `cost` while it
runs, then its answer's measured size. NEEDED ones go past both: each site waits for at most
one (a request becomes NEEDED when its pager waits for it), so a budget full of read-ahead can
never keep a site's next page from being read; and a ticket runs when nothing else is in
memory, so a page bigger than the byte budget never waits for ever.
Results are taken by one consumer (the pipeline's loop); slots only run requests.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from enum import IntEnum
from typing import Any, Generic, TypeVar, overload

log = logging.getLogger(__name__)

T = TypeVar("T")


class Priority(IntEnum):
    """How useful a request is; lower runs first (see the module docstring)."""

    NEEDED = 0
    READ_AHEAD = 1
    NEXT_DAY = 2


#: A heap entry: [priority, depth, sequence, ticket]; the ticket slot is emptied (None) when the
#: ticket is promoted (pushed again) or cancelled, as in heapq's documented recipe, so an
#: entry left in the heap never keeps a ticket, nor the page it will hold, alive.
_Entry = list[Any]


class Ticket(Generic[T]):
    """One queued request and, once a slot ran it, its result (or its exception)."""

    __slots__ = (
        "_entry", "_error", "_released", "_scheduler", "_value", "cost", "depth", "fn",
        "priority", "state", "then",
    )  # fmt: skip

    def __init__(
        self,
        scheduler: PageScheduler,
        fn: Callable[[], object],
        priority: Priority,
        depth: int,
        then: Callable[[object], T] | None = None,
        cost: int = 0,
    ) -> None:
        self._scheduler = scheduler
        self.fn = fn
        self.then = then
        self.priority = priority
        self.depth = depth
        self.cost = cost  # bytes in memory: estimated until the answer is in, then measured
        self.state = "queued"  # queued | running | parsing | done | cancelled
        self._value: T | None = None
        self._entry: _Entry | None = None  # its place in the scheduler's heap, while queued
        self._error: BaseException | None = None
        self._released = False

    def done(self) -> bool:
        return self.state == "done"

    def result(self) -> T:
        """The request's answer (raises its exception); taking it frees its budget place."""
        assert self.state == "done", "result() of a ticket that is not done"
        self._scheduler._release(self)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def promote(self) -> None:
        """The consumer now waits for this request: it runs before any speculation."""
        self._scheduler._promote(self)

    def cancel(self) -> None:
        """Not needed any more: dropped if queued, its result dropped if running or done."""
        self._scheduler._cancel(self)


class Pace:
    """How many Matomo requests may be in flight now, under the cap (MATOMO_MAX_CONCURRENCY).

    The server's health comes first, so the level follows its signs of strain the way TCP
    follows congestion: halved when Matomo refuses or fails requests (429, 503 and other
    5xx, timeouts, pages too heavy), one less when its time for a full page grows well above
    the fastest seen in the run (requests queue behind its workers), one more, slowly, while
    full pages come back about as fast as the fastest. At most one change per `level`
    answers, so each change is judged on answers given at the level it set.
    """

    SLOWER = 2.0  # time for a full page above this x the fastest: requests queue at Matomo
    MARGIN = 0.1  # ...and by at least this many seconds: not the jitter of quick answers
    FAST = 1.2  # below this x the fastest: there is room for one more request
    EWMA = 0.25  # weight of the newest full page in the recent time for one

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self.level = self.cap
        self.lowest = self.cap
        self.changes: list[tuple[int, str]] = []  # (new level, why), for logs and tests
        self._fastest: float | None = None
        self._recent: float | None = None
        self._answers = 0  # since the last change
        self._lock = threading.Lock()
        self.on_change: Callable[[int, str], None] | None = None  # the scheduler's
        self.watchers: list[Callable[[int], None]] = []  # progress displays, told each level

    def strained(self, reason: str) -> None:
        """Matomo refused or failed a request: halve the level (once per window)."""
        with self._lock:
            if self._answers < self.level and self.changes:
                return  # the last change is not judged yet
            self._set(max(1, self.level // 2), f"Matomo strained: {reason}")

    def answered(self, seconds: float, full_page: bool) -> None:
        """A Live answer came back; full pages tell how long Matomo takes for one."""
        with self._lock:
            self._answers += 1
            if not full_page:
                return
            if self._fastest is None or seconds < self._fastest:
                self._fastest = seconds
            recent = self._recent = (
                seconds
                if self._recent is None
                else self.EWMA * seconds + (1 - self.EWMA) * self._recent
            )
            fastest = self._fastest
            if self._answers < self.level:
                return
            slower = recent > max(self.SLOWER * fastest, fastest + self.MARGIN)
            if slower and self.level > 1:
                self._set(
                    self.level - 1,
                    f"a full page takes {recent:.2f} s, the fastest took {fastest:.2f} s",
                )
            elif (
                recent < self.FAST * fastest
                and self.level < self.cap
                and self._answers >= 4 * self.level
            ):
                self._set(
                    self.level + 1, f"Matomo answers as fast as at its fastest ({recent:.2f} s)"
                )

    def _set(self, level: int, reason: str) -> None:
        if level == self.level:
            return
        before, self.level = self.level, level
        self.lowest = min(self.lowest, level)
        self._answers = 0
        self._recent = None  # judged afresh at the new level
        self.changes.append((level, reason))
        (log.warning if level < before else log.info)(
            "Matomo requests in flight: %d -> %d (%s)", before, level, reason
        )
        if self.on_change is not None:
            self.on_change(level, reason)
        for watcher in self.watchers:
            watcher(level)


class PageScheduler:
    """`slots` threads running queued tickets by priority, `budget` tickets (and, if given,
    `budget_bytes` bytes) outstanding, at most `pace.level` requests in flight. `measure`
    tells the bytes a result holds (None: its estimated cost stays)."""

    def __init__(
        self,
        slots: int,
        budget: int,
        wake: threading.Event | None = None,
        name: str = "matomo",
        pace: Pace | None = None,
        budget_bytes: int | None = None,
        measure: Callable[[object], int | None] | None = None,
    ) -> None:
        self.slots = max(1, slots)
        self.budget = max(self.slots, budget)
        self.budget_bytes = budget_bytes
        self.measure = measure
        self.pace = pace or Pace(self.slots)
        self.pace.on_change = self._pace_changed
        self.wake = wake or threading.Event()  # set on every completion, for the consumer
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._queued = 0
        self._running = 0
        self._outstanding = 0  # running, or done with a result not taken yet
        self._held = 0  # taken, and not yet delivered (see hold)
        self._bytes = 0  # the cost of the outstanding tickets and of the held results
        self._closed = False
        self.max_outstanding = 0
        self.max_bytes = 0  # the most bytes outstanding and held at once
        self.max_running = 0
        self.runs = 0
        self._parsing: deque[tuple[Ticket[object], object]] = deque()
        self._threads = [
            threading.Thread(target=self._slot, name=f"{name}-{i}", daemon=True)
            for i in range(self.slots)
        ]
        self._threads.append(
            threading.Thread(target=self._parse, name=f"{name}-parse", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> PageScheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- for the consumer ---------------------------------------------------------------

    @overload
    def submit(
        self,
        fn: Callable[[], T],
        priority: Priority = ...,
        depth: int = ...,
        then: None = ...,
        cost: int = ...,
    ) -> Ticket[T]: ...

    @overload
    def submit(
        self,
        fn: Callable[[], Any],
        priority: Priority = ...,
        depth: int = ...,
        then: Callable[[Any], T] = ...,
        cost: int = ...,
    ) -> Ticket[T]: ...

    def submit(
        self,
        fn: Callable[[], Any],
        priority: Priority = Priority.NEEDED,
        depth: int = 0,
        then: Callable[[Any], Any] | None = None,
        cost: int = 0,
    ) -> Ticket[Any]:
        """Queues `fn` (one Matomo request); `then`, if given, turns its answer into the
        ticket's result on the parse thread; `cost`: the bytes its answer is expected to
        hold (the byte budget)."""
        ticket: Ticket[Any] = Ticket(self, fn, priority, depth, then, cost)
        with self._cond:
            if self._closed:
                ticket.state = "cancelled"
                return ticket
            self._push(ticket)
            self._queued += 1
            self._cond.notify_all()  # slots and the parse thread share the condition
        return ticket

    def wants_work(self) -> bool:
        """A slot would idle: nothing runnable is queued and the budget has room."""
        with self._cond:
            return (
                self._running < self.pace.level
                and self._queued == 0
                and self._outstanding + self._held < self.budget
                and (self.budget_bytes is None or self._bytes < self.budget_bytes)
            )

    def hold(self, pages: int, nbytes: int = 0) -> None:
        """`pages` taken results (`nbytes` bytes) are still in memory (handed over to
        delivery): they keep their budget places until `unhold`, so the budget bounds what is
        fetched and not yet delivered, not only what waits to be taken."""
        with self._cond:
            self._held += pages
            self._bytes += nbytes
            self.max_outstanding = max(self.max_outstanding, self._outstanding + self._held)
            self.max_bytes = max(self.max_bytes, self._bytes)

    def unhold(self, pages: int, nbytes: int = 0) -> None:
        """Their delivery ended: their places go back to the budget."""
        with self._cond:
            self._held -= pages
            self._bytes -= nbytes
            self._cond.notify_all()

    def _pace_changed(self, level: int, reason: str) -> None:
        with self._cond:
            self._cond.notify_all()  # a higher level lets waiting slots go

    def wait(self, timeout: float) -> None:
        """Blocks until a request completes (or `wake` is set by anyone), at most `timeout`."""
        self.wake.wait(timeout)
        self.wake.clear()

    def close(self, join_timeout: float = 0.0) -> None:
        """Drops what is queued; requests in flight finish in their (daemon) threads, whose
        results nobody takes: a run that ends does not wait for a speculative page past a
        day's end, nor a run that stops for Matomo's retries."""
        with self._cond:
            self._closed = True
            for *_, ticket in self._heap:
                if ticket is not None and ticket.state == "queued":
                    ticket.state = "cancelled"
            self._heap.clear()
            self._queued = 0
            self._cond.notify_all()
        if join_timeout > 0:
            for thread in self._threads:
                thread.join(join_timeout)

    # -- internals ----------------------------------------------------------------------

    def _push(self, ticket: Ticket[object]) -> None:
        entry: _Entry = [int(ticket.priority), ticket.depth, next(self._seq), ticket]
        ticket._entry = entry
        heapq.heappush(self._heap, entry)

    @staticmethod
    def _unqueue(ticket: Ticket[object]) -> None:
        """Empties the ticket's heap entry (dropped when it reaches the top)."""
        if ticket._entry is not None:
            ticket._entry[3] = None
            ticket._entry = None

    def _promote(self, ticket: Ticket[T]) -> None:
        with self._cond:
            if ticket.state != "queued" or ticket.priority == Priority.NEEDED:
                ticket.priority = Priority.NEEDED
                return
            ticket.priority, ticket.depth = Priority.NEEDED, 0
            self._unqueue(ticket)  # type: ignore[arg-type]
            self._push(ticket)  # type: ignore[arg-type]
            self._cond.notify_all()  # slots and the parse thread share the condition

    def _cancel(self, ticket: Ticket[T]) -> None:
        with self._cond:
            if ticket.state == "queued":
                ticket.state = "cancelled"
                self._queued -= 1
                self._unqueue(ticket)  # type: ignore[arg-type]
            elif ticket.state in ("running", "parsing", "done"):
                self._release_locked(ticket)  # type: ignore[arg-type]
            self._cond.notify_all()

    def _release(self, ticket: Ticket[T]) -> None:
        with self._cond:
            self._release_locked(ticket)  # type: ignore[arg-type]
            self._cond.notify_all()

    def _release_locked(self, ticket: Ticket[object]) -> None:
        if not ticket._released:
            ticket._released = True
            self._outstanding -= 1
            self._bytes -= ticket.cost

    def _next_locked(self) -> Ticket[object] | None:
        """The most useful runnable ticket, or None (stale heap entries are dropped here)."""
        if self._running >= self.pace.level:
            return None
        while self._heap:
            priority, _, _, ticket = self._heap[0]
            if ticket is None:
                heapq.heappop(self._heap)  # cancelled, or promoted (pushed again)
                continue
            if priority != Priority.NEEDED and not self._fits_locked(ticket):
                return None
            heapq.heappop(self._heap)
            ticket._entry = None
            return ticket  # type: ignore[no-any-return]
        return None

    def _fits_locked(self, ticket: Ticket[object]) -> bool:
        """Room for one more ticket: a page place, and its bytes (when anything else is in
        memory: a page bigger than the byte budget runs alone)."""
        if self._outstanding + self._held >= self.budget:
            return False
        return (
            self.budget_bytes is None
            or self._bytes == 0
            or self._bytes + ticket.cost <= self.budget_bytes
        )

    def _slot(self) -> None:
        while True:
            with self._cond:
                ticket = self._next_locked()
                while ticket is None and not self._closed:
                    self._cond.wait()
                    ticket = self._next_locked()
                if ticket is None:
                    return
                ticket.state = "running"
                self._queued -= 1
                self._running += 1
                self._outstanding += 1
                self._bytes += ticket.cost
                self.runs += 1
                self.max_running = max(self.max_running, self._running)
                self.max_outstanding = max(self.max_outstanding, self._outstanding + self._held)
                self.max_bytes = max(self.max_bytes, self._bytes)
            value: object = None
            try:
                value = ticket.fn()
            except BaseException as exc:  # handed to the consumer, raised by result()
                ticket._error = exc
            with self._cond:
                self._running -= 1
                if ticket.then is not None and ticket._error is None and not ticket._released:
                    ticket.state = "parsing"
                    self._parsing.append((ticket, value))
                else:
                    ticket._value = value
                    self._done_locked(ticket)
                self._cond.notify_all()
            self.wake.set()
            del ticket, value  # an idle slot holds no page (nor its raw answer)

    def _parse(self) -> None:
        """Runs the `then` steps, one at a time, in the order the answers came in."""
        while True:
            with self._cond:
                while not self._parsing and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                ticket, value = self._parsing.popleft()
            assert ticket.then is not None
            try:
                if not ticket._released:
                    ticket._value = ticket.then(value)
            except BaseException as exc:
                ticket._error = exc
            with self._cond:
                self._done_locked(ticket)
                self._cond.notify_all()
            self.wake.set()
            del ticket, value  # nor does the parse thread, while it waits

    def _done_locked(self, ticket: Ticket[object]) -> None:
        ticket.state = "done"
        if ticket._released:  # cancelled meanwhile: nobody takes it
            ticket._value = ticket._error = None
        elif self.measure is not None and ticket._error is None:
            size = self.measure(ticket._value)
            if size is not None:  # the estimate gives way to what the answer holds
                self._bytes += size - ticket.cost
                ticket.cost = size
                self.max_bytes = max(self.max_bytes, self._bytes)


def wait_for(ticket: Ticket[T]) -> Generator[None, None, T]:
    """Inside a pager's steps: waits (yielding None) for a request it needs now, and returns
    its answer (or raises its error)."""
    ticket.promote()
    while not ticket.done():
        yield None
    return ticket.result()


def drive(steps: Iterator[T | None], scheduler: PageScheduler) -> Iterator[T]:
    """Blocking iteration over a pager's steps (None: waiting for a request), for callers
    that read one site alone (audit, tests)."""
    for step in steps:
        if step is None:
            scheduler.wait(0.05)
        else:
            yield step
