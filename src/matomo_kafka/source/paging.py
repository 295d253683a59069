"""Paging: turns (site, cursor, last closed day) into the ordered stream of a site's pages.

Matomo sorts Live visits by last action time with no tie-breaker, so two requests may order
visits of the same second differently, and a page boundary inside such a group can skip or
repeat visits under plain offset paging (MySQL documents this for ORDER BY ... LIMIT).

Keyset paging (the default) never trusts an order between visits of the same second:
- a day is read from an anchor: `minTimestamp` = the boundary second - 1 (Matomo keeps visits
  whose last action is strictly after it) minus the ids already sent at that second, with
  `filter_limit` raised by their number; from a day's start there is no anchor;
- pages after the anchor are requested by offset from it, so they can be fetched *ahead*
  while the previous one is delivered, and each is checked against the boundary: a page that
  starts after the boundary second is exact (the counts of both requests agree on where that
  second ends); a page that starts inside it is repaired by reading that whole second again
  with `minTimestamp` (a request that grows until the second is complete, the fallback for a
  second holding more visits than a page) and sending only its visits not yet sent;
- the checkpoint after each page carries the boundary (see Cursor), so a resumed run re-anchors
  exactly there.
Offset paging (`MATOMO_PAGING=offset`, the seed's way) trusts the order.

Up to a horizon (`follow`): after the closed days, the next day, still open, is read up to a
Unix second: Live's ascending order puts the visits whose last action is later at the end, so
the read stops at the first of them; those before it are sent, the checkpoint keeps the day
(offset, boundary) and the day is never ended there. The next read, a horizon later, resumes
from that boundary like any resumed day.

Read-ahead: the site's next request in order is always asked for (as NEEDED) before a page is
handed over; with a lookahead above 1, further pages of a day that already gave a full page
(READ_AHEAD: those already running when the short page ends the day are wasted, at most
`lookahead - 1`) and the first pages of the following days (NEXT_DAY) are asked for too.
Read-ahead in a day stops at its estimated end: Live lists visits by ascending last action
time, so the time from a full page's last visit to the day's end, at the rate that page
covered, tells how many pages are left (only an estimate: the next page in order is always
asked for, so a day that goes on is read to its end). The page scheduler (schedule.py)
decides when each runs. Pages are yielded strictly in order, so checkpoints stay ordered per
site; while the next one is not there the pager yields None, so one loop can serve many
sites.

Page size follows visit size (with `sizes`, PageSizes): a page's memory, Matomo's as much as
ours, is its visits times their bytes, and a visit of 500 actions is 100 times one of 5. Each
new request asks for as many visits as fill the target page size at the bytes a visit of the
site's latest page (before the site's first, the heaviest the run has seen), between a floor
and the configured limit; the pages already asked for keep their size (offsets are absolute
positions in the day, so a page of any size continues where the one before it ended, and
checkpoints keep their meaning: visits of the day sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Generic, Protocol, TypeVar

from matomo_kafka.errors import MatomoError, MatomoResponseError, OffsetBeyondDay, PageTooHeavy
from matomo_kafka.model import Cursor, Page
from matomo_kafka.source.schedule import Priority, Ticket, wait_for

log = logging.getLogger(__name__)

#: A page that hits Matomo's limits is asked for again in halves, down to this many visits.
MIN_SPLIT_LIMIT = 50

#: Told when a page is asked for again smaller: (day, visits of the day sent, new page size,
#: the server's refusal).
OnSplit = Callable[[date, int, int, str], None]

#: Pages asked for smaller because their visits are heavy keep at least this many visits.
MIN_PAGE_VISITS = MIN_SPLIT_LIMIT

#: A queued request whose size is within this fraction of the size wanted now is kept (not
#: asked for again): the bytes a visit jitter from page to page.
SIZE_TOLERANCE = 0.25

#: A second holding more visits than this cannot be a real site's: a broken answer, which
#: would otherwise grow the whole-second request without end.
MAX_VISITS_IN_ONE_SECOND = 50_000

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Request:
    """One Live request: `day`, visits whose last action is strictly after `after` (None: the
    whole day), in ascending order, `limit` of them from `offset`."""

    day: date
    after: int | None
    limit: int
    offset: int


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Matomo's answer to a Request: items (visits or their messages) in the answer's order,
    with each one's idVisit and last action time (Unix seconds)."""

    items: Sequence[T]
    ids: Sequence[int]
    stamps: Sequence[int]
    size: int = 0  # bytes of Matomo's answer (0: not measured)


class PageSizes:
    """How many visits a request asks for, shared by every site of a run: as many as fill
    `target` bytes at the bytes a visit measured (the site's latest page; for a site's first
    page, the heaviest visits the run has seen), between `floor` and `limit` (the configured
    MATOMO_FILTER_LIMIT).

    Before any visit was measured, a page's size is unknown (1000 visits of 500 actions are
    200 MB), so the run's first Live request (the probe) asks for `floor` visits and the other
    sites ask for nothing until a page with visits has come back: one round trip at the start
    of a run, and one more request if that first day holds more than `floor` visits. A probe
    that finds no visit (an empty day) ends the wait: until a visit is measured, every page
    asks for `floor` visits. Pagers run on the run's one loop, so this needs no lock.
    """

    def __init__(self, limit: int, target: int, floor: int = MIN_PAGE_VISITS) -> None:
        self.limit = limit
        self.target = target
        self.floor = max(1, min(floor, limit))
        self.visit_bytes: float | None = None  # the heaviest a visit of any page of the run
        self._prober: object | None = None
        self._waiting = True  # the other sites wait for the probe's answer

    def limit_for(self, visit_bytes: float | None) -> int:
        """Visits a page asks for when a visit is `visit_bytes` bytes (None: unknown)."""
        if visit_bytes is None:
            return self.floor
        return max(self.floor, min(self.limit, int(self.target / max(visit_bytes, 1.0))))

    @property
    def unknown(self) -> bool:
        """No visit measured yet, and a page of `limit` visits could be too big (with a
        limit no bigger than the floor, every page is already as small as it gets)."""
        return self.visit_bytes is None and self.floor < self.limit

    def may_ask(self, pager: object) -> bool:
        """Whether `pager` may ask for pages now: once a visit was measured, or as the probe
        (the first pager to ask while none was)."""
        if not self.unknown or self._prober is pager or not self._waiting:
            return True
        if self._prober is None:
            self._prober = pager
            return True
        return False

    def learn(self, visit_bytes: float) -> None:
        """A page measured `visit_bytes` a visit: the heaviest so far sizes first pages."""
        self.visit_bytes = max(self.visit_bytes or 0.0, visit_bytes)

    def found_nothing(self) -> None:
        """A page came back empty before any visit was measured: nobody waits any more (a
        site of empty days would otherwise hold every other site back day after day)."""
        self._waiting = False

    def release(self, pager: object) -> None:
        """The pager ends: if it was probing, another one may."""
        if self._prober is pager:
            self._prober = None


#: Asks Matomo for a request's answer (on a Matomo slot).
Fetch = Callable[[Request], Any]
#: Turns an answer into a Batch (on the scheduler's parse thread); None: fetch gives Batches.
Parse = Callable[[Request, Any], Batch[T]]


class Submit(Protocol[U]):
    """Queues a request (`fn`, run on a Matomo slot) with its priority and depth; `then`
    turns its answer into the ticket's result."""

    def __call__(
        self,
        fn: Callable[[], Any],
        priority: Priority,
        depth: int,
        then: Callable[[Any], U] | None = None,
        cost: int = 0,
    ) -> Ticket[U]: ...


#: What a pager yields: the next page in order, or None while that page is not there yet.
Step = Generator[None, None, T]


class Pager(Generic[T]):
    """A site's pages from `start` through `last_day`, in order; None while waiting."""

    def __init__(
        self,
        fetch: Fetch,
        submit: Submit[Batch[T]],
        start: Cursor,
        last_day: date,
        limit: int,
        lookahead: int = 1,
        keyset: bool = True,
        rescan: bool = False,
        parse: Parse[T] | None = None,
        on_split: OnSplit | None = None,
        horizon: int | None = None,
        day_end: Callable[[date], int] | None = None,
        sizes: PageSizes | None = None,
    ) -> None:
        self.fetch = fetch
        self.parse = parse
        self.submit = submit
        self.rescan = rescan
        self.start = start
        self.last_day = last_day
        self.limit = limit
        self.lookahead = max(1, lookahead)
        self.keyset = keyset
        self.repairs = 0  # pages that started inside the boundary second (keyset)
        self.splits = 0  # pages asked for again, smaller, after hitting a server limit
        self.on_split = on_split
        # follow: the day after last_day is read up to this second (see the module docstring).
        self.horizon = horizon
        self.final_day = last_day + timedelta(days=1) if horizon is not None else last_day
        # The Unix second a day ends at (the site's midnight): how far read-ahead may go.
        self.day_end = day_end
        # Page size follows visit size (see the module docstring); None: always `limit`.
        self.sizes = sizes
        self.visit_bytes: float | None = None  # of the site's latest page with visits
        self._tickets: dict[Request, Ticket[Batch[T]]] = {}

    def __iter__(self) -> Iterator[Page[T] | None]:
        cursor = self.start
        try:
            while cursor.day <= self.last_day:
                yield from self._read_day(cursor, None)
                cursor = Cursor(cursor.day + timedelta(days=1), 0)
            if cursor.day == self.final_day and self.horizon is not None:
                yield from self._read_day(cursor, self.horizon)
        finally:
            self.close()

    def _read_day(self, cursor: Cursor, horizon: int | None) -> Iterator[Page[T] | None]:
        """The day's pages from the cursor; up to `horizon` (the open day, never ended), or
        to its end (its last page is the one that comes back short)."""
        day, sent = cursor.day, cursor.offset
        while self.sizes is not None and not self.sizes.may_ask(self):
            yield None  # another site measures how heavy visits are first (PageSizes)
        request, boundary, seen = self._first_request(cursor)
        anchor = request
        day_is_big, left = False, None  # left: the pages estimated after the last full one
        while True:
            asked = self._fill(request, day_is_big, left)
            anchor = asked if request is anchor else anchor
            request = asked
            try:
                batch = yield from wait_for(self._tickets.pop(request))
            except PageTooHeavy as exc:
                smaller = self._smaller(request, exc, sent)
                anchor = smaller if request is anchor else anchor
                self._drop_day(day)  # pages asked for ahead were cut at the old size
                request = smaller
                continue
            self._learn(batch)
            if not batch.items and request is anchor and request.offset > 0:
                yield from self._check_offset(request)
            full = len(batch.items) >= request.limit
            beyond = horizon is not None and max(batch.stamps, default=horizon) > horizon
            more = full and not beyond  # the day goes on in this read
            following = Request(
                day, request.after, self._page_limit(), request.offset + request.limit
            )
            if more:
                day_is_big = True
                left = self._pages_left(batch, day, horizon)
                following = self._fill(following, day_is_big, left)  # before handing over
            else:
                self._drop_day(day)
                if day < self.final_day:
                    next_day = Request(day + timedelta(days=1), None, self._page_limit(), 0)
                    self._fill(next_day, False)
            items: Sequence[T]
            newest: int | None = None
            if self.keyset:
                items, boundary, seen = yield from self._new_items(
                    batch, request, request is anchor, boundary, seen, horizon
                )
                newest = boundary if items else None
            else:
                items, newest = _up_to(batch, horizon)
            next_cursor = Cursor(day, sent + len(items), boundary, frozenset(seen))
            last = not full and horizon is None  # a day read up to a horizon is not over
            if items or last:
                yield Page(day, sent, items, last, next_cursor, self.rescan, newest)
            sent += len(items)
            if not more:
                return
            request = following

    def _first_request(self, cursor: Cursor) -> tuple[Request, int | None, set[int]]:
        """The day's first request from the cursor, with the keyset boundary and the ids sent
        at its second: anchored at that second (keyset), else at the cursor's offset."""
        boundary, seen = cursor.last_action, set(cursor.ids)
        if self.keyset and boundary is not None:
            # Anchored at the boundary second: everything from it, plus room for `seen`.
            anchored = Request(cursor.day, boundary - 1, self._page_limit() + len(seen), 0)
            return anchored, boundary, seen
        request = self._adopt(Request(cursor.day, None, self._page_limit(), cursor.offset))
        return request, None, set()

    def _check_offset(self, request: Request) -> Step[None]:
        """A day resumed at an offset (no keyset boundary) whose page there came back empty:
        the day held exactly that many visits (a run stopped after its last page), or fewer,
        which only a corrupt checkpoint can say (a hand edit, a seed file carried over): one
        visit asked for just before the offset tells them apart. Resuming past the day's end
        would skip the rest of the day silently, so that raises OffsetBeyondDay."""
        before = Request(request.day, request.after, 1, request.offset - 1)
        ticket = self.submit(lambda: self._read(before), Priority.NEEDED, 0)
        batch = yield from wait_for(ticket)
        if not batch.items:
            raise OffsetBeyondDay(request.day, request.offset)

    def _page_limit(self) -> int:
        """Visits the next request asks for: `limit`, or with `sizes` as many as fill its
        target page at the bytes a visit of the site's latest page (the run's heaviest
        before)."""
        if self.sizes is None:
            return self.limit
        known = self.visit_bytes if self.visit_bytes is not None else self.sizes.visit_bytes
        return self.sizes.limit_for(known)

    def _learn(self, batch: Batch[T]) -> None:
        """The bytes a visit of this page: the size of the site's next requests."""
        if self.sizes is not None and batch.size and batch.ids:
            self.visit_bytes = batch.size / len(batch.ids)
            self.sizes.learn(self.visit_bytes)
        elif self.sizes is not None and not batch.ids and self.sizes.unknown:
            self.sizes.found_nothing()

    def _cost(self, request: Request) -> int:
        """The bytes the request's answer is expected to hold (the scheduler's byte budget):
        its visits at the bytes a visit last measured; 0 before any was."""
        known = self.visit_bytes
        if known is None and self.sizes is not None:
            known = self.sizes.visit_bytes
        return 0 if known is None else int(request.limit * known)

    def _adopt(self, request: Request) -> Request:
        """The request at the same position already asked for, if it runs (or ran) or its
        size is close to the one wanted now; a queued one of another size is dropped (asked
        for again at the size wanted now)."""
        for key in self._tickets:
            if (key.day, key.after, key.offset) == (request.day, request.after, request.offset):
                if key.limit == request.limit:
                    return key
                close = abs(key.limit - request.limit) <= SIZE_TOLERANCE * request.limit
                if self._tickets[key].state != "queued" or close:
                    return key
                self._tickets.pop(key).cancel()
                break
        return request

    def _smaller(self, request: Request, exc: PageTooHeavy, sent: int) -> Request:
        """The same position in a page half as big (down to MIN_SPLIT_LIMIT); the pages
        after it go back to their usual size. Raises when even the smallest fails."""
        if request.limit <= MIN_SPLIT_LIMIT:
            raise MatomoError(
                f"{exc}; even a page of {request.limit} visits fails on {request.day} after "
                f"{sent} visits of the day: raise Matomo's PHP memory_limit or "
                "max_execution_time (or MATOMO_TIMEOUT)"
            ) from None
        smaller = Request(
            request.day, request.after, max(MIN_SPLIT_LIMIT, request.limit // 2), request.offset
        )
        self.splits += 1
        if self.on_split is not None:
            self.on_split(request.day, sent, smaller.limit, str(exc))
        return smaller

    def _new_items(
        self,
        batch: Batch[T],
        request: Request,
        from_anchor: bool,
        boundary: int | None,
        seen: set[int],
        horizon: int | None = None,
    ) -> Step[tuple[list[T], int | None, set[int]]]:
        """The batch's visits not sent yet (up to `horizon`), the new boundary second and the
        ids sent at it."""
        stamps, ids = batch.stamps, batch.ids
        if boundary is None or min(stamps, default=boundary + 1) > boundary:
            return self._advance(batch, range(len(stamps)), boundary, seen, horizon)  # exact
        # The batch starts inside the boundary second (or before it, if the day changed while
        # being read): its visits of that second come from a complete read of the second.
        if from_anchor and (len(stamps) < request.limit or max(stamps) > boundary):
            group = batch  # the anchor request starts at that second and holds all of it
        else:
            self.repairs += 1
            at_boundary = {ids[i] for i, stamp in enumerate(stamps) if stamp == boundary}
            day, second, known = request.day, boundary, len(seen | at_boundary)
            ticket = self.submit(
                lambda: self._whole_second(day, second, known + 16, known), Priority.NEEDED, 0
            )
            try:
                group = yield from wait_for(ticket)
            except GeneratorExit:  # the site closed meanwhile: its place goes back to the budget
                ticket.cancel()
                raise
        earlier = [i for i, stamp in enumerate(stamps) if stamp < boundary and ids[i] not in seen]
        if earlier:
            log.warning(
                "%d visit(s) of %s older than the page boundary appeared: the day changed while "
                "being read; they are sent (a re-scan window covers such days)",
                len(earlier), request.day,
            )  # fmt: skip
        merged = _Merged(
            [(group, i) for i, stamp in enumerate(group.stamps)
             if stamp == boundary and group.ids[i] not in seen]
            + [(batch, i) for i in earlier]
            + [(batch, i) for i, stamp in enumerate(stamps) if stamp > boundary]
        )  # fmt: skip
        return self._advance(merged.batch(), range(len(merged)), boundary, seen, horizon)

    def _whole_second(self, day: date, second: int, limit: int, known: int) -> Batch[T]:
        """Every visit of `day` whose last action is at `second`, read with minTimestamp; the
        limit doubles until the answer shows the second's end (a short page or a later one).
        `known`: visits of that second already seen; an answer too heavy for Matomo is asked
        for again with just one more than those (the least that can show the second's end).
        Runs on one Matomo slot, its requests one after the other."""
        while True:
            try:
                batch = self._read(Request(day, second - 1, limit, 0))
            except PageTooHeavy:
                if limit <= known + 1:
                    raise
                limit = known + 1
                continue
            if len(batch.stamps) < limit or max(batch.stamps) > second:
                return batch
            known = max(known, limit)
            if limit >= MAX_VISITS_IN_ONE_SECOND:
                raise MatomoResponseError(
                    f"{day}: more than {MAX_VISITS_IN_ONE_SECOND} visits end in the same second "
                    f"({second}), too many to read at once; MATOMO_PAGING=offset reads the day "
                    "without keyset paging"
                )
            limit = min(limit * 2, MAX_VISITS_IN_ONE_SECOND)

    @staticmethod
    def _advance(
        source: Batch[T],
        picked: Sequence[int],
        boundary: int | None,
        seen: set[int],
        horizon: int | None = None,
    ) -> tuple[list[T], int | None, set[int]]:
        if horizon is not None:  # later visits are left for the next read
            picked = [i for i in picked if source.stamps[i] <= horizon]
        top = max((source.stamps[i] for i in picked), default=None)
        if top is not None and (boundary is None or top > boundary):
            boundary, seen = top, set()
        else:
            seen = set(seen)
        seen.update(source.ids[i] for i in picked if source.stamps[i] == boundary)
        return [source.items[i] for i in picked], boundary, seen

    def _pages_left(self, batch: Batch[T], day: date, horizon: int | None) -> int | None:
        """How many pages the day still holds after this full one, estimated from its pace:
        Live lists visits by ascending last action time, so the time left to the day's end
        (or the horizon) at the rate this page covered tells the visits left. None: no
        estimate (no last action times, or a page within one second)."""
        if self.day_end is None or not batch.stamps:
            return None
        first, last = min(batch.stamps), max(batch.stamps)
        if last <= first:
            return None
        end = self.day_end(day) if horizon is None else min(horizon, self.day_end(day))
        visits_left = max(0, end - last) * len(batch.stamps) / (last - first)
        return -int(-visits_left // self._page_limit())  # rounded up

    def _fill(self, request: Request, day_is_big: bool, pages_left: int | None = None) -> Request:
        """Asks for `request` (the site's next one in order) and, up to `lookahead` in all,
        the next pages of a big day (no more than `pages_left` beyond it: those past the
        day's end would be wasted), then the first pages of the following days. Returns the
        site's next request: `request`, or the one already asked for at its position."""
        # Not NEEDED yet: it becomes so when the pager waits for it (wait_for promotes it), so
        # a site never has more than the one request it waits for past the scheduler's budget.
        request = self._adopt(request)
        wanted = [(request, Priority.READ_AHEAD, 0)]
        lookahead = self.lookahead
        if self.sizes is not None and self.sizes.unknown:
            lookahead = 1  # the probe: nothing ahead of a page of unknown size
        if day_is_big:
            ahead = lookahead if pages_left is None else min(lookahead, pages_left + 1)
            limit, offset = self._page_limit(), request.offset + request.limit
            for k in range(1, ahead):
                key = self._adopt(Request(request.day, request.after, limit, offset))
                wanted.append((key, Priority.READ_AHEAD, k))
                offset = key.offset + key.limit
            chain = {key for key, _, _ in wanted}
            for key in [
                key
                for key in self._tickets
                if key.day == request.day
                and key not in chain
                and (self._tickets[key].state == "queued" or key.offset < offset)
            ]:
                # Asked for ahead, now past the estimated end (queued), or at a position the
                # pages of the size wanted now no longer start at.
                self._tickets.pop(key).cancel()
        following, ahead = request.day + timedelta(days=1), 1
        while len(wanted) < lookahead and following <= self.final_day:
            first = self._adopt(Request(following, None, self._page_limit(), 0))
            wanted.append((first, Priority.NEXT_DAY, ahead))
            following, ahead = following + timedelta(days=1), ahead + 1
        for key, priority, depth in wanted[:lookahead]:
            ticket = self._tickets.get(key)
            if ticket is None:
                self._tickets[key] = self._ask(key, priority, depth)
        return request

    def _ask(self, request: Request, priority: Priority, depth: int) -> Ticket[Batch[T]]:
        """Queues one request; its answer is parsed on the parse thread, not on the slot."""
        fetch, parse, cost = self.fetch, self.parse, self._cost(request)
        if parse is None:
            return self.submit(lambda: fetch(request), priority, depth, cost=cost)
        return self.submit(
            lambda: fetch(request), priority, depth, lambda raw: parse(request, raw), cost=cost
        )

    def _read(self, request: Request) -> Batch[T]:
        """One request and its parse, here and now (a boundary repair, on a slot)."""
        answer = self.fetch(request)
        return answer if self.parse is None else self.parse(request, answer)

    def _drop_day(self, day: date) -> None:
        """Speculative requests past a day's short page are not needed: cancel or ignore."""
        for key in [key for key in self._tickets if key.day == day]:
            self._tickets.pop(key).cancel()

    def close(self) -> None:
        for ticket in self._tickets.values():
            ticket.cancel()
        self._tickets.clear()
        if self.sizes is not None:
            self.sizes.release(self)


def _up_to(batch: Batch[T], horizon: int | None) -> tuple[Sequence[T], int | None]:
    """Offset paging: the batch's visits up to `horizon` (all without one: its stamps are then
    not read), and the newest one's last action time."""
    if horizon is None:
        return batch.items, None
    kept = [i for i, stamp in enumerate(batch.stamps) if stamp <= horizon]
    newest = max((batch.stamps[i] for i in kept), default=None)
    return [batch.items[i] for i in kept], newest


class _Merged(Generic[T]):
    """Items picked from several batches, as one batch."""

    def __init__(self, picks: list[tuple[Batch[T], int]]) -> None:
        self.picks = picks

    def __len__(self) -> int:
        return len(self.picks)

    def batch(self) -> Batch[T]:
        return Batch(
            [b.items[i] for b, i in self.picks],
            [b.ids[i] for b, i in self.picks],
            [b.stamps[i] for b, i in self.picks],
        )
