"""Paging: turns (site, cursor, last closed day) into the ordered stream of a site's pages.

Offset paging over `filter_sort_order=asc` (the seed's way): a day is read at offsets
o, o+L, o+2L, ... until a short page. Pages are fetched *ahead* on a shared executor so
Matomo stays busy while the previous page is transformed and delivered:
- the next needed request is always issued before the current page is handed over;
- the first page of each following day is always needed, so it may be fetched early;
- with a lookahead above 1, further pages of a day that already gave a full page are fetched
  speculatively; at the day's end at most `lookahead - 1` such requests are wasted.
Pages are yielded strictly in order, so checkpoints stay ordered per site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Generic, TypeVar

from matomo_kafka.checkpoint import Cursor

T = TypeVar("T")
FetchPage = Callable[[date, int], Sequence[T]]


@dataclass(frozen=True)
class Page(Generic[T]):
    """Items (visits, or their messages) of `day` from `offset`; `last`: the day's short page."""

    day: date
    offset: int
    items: Sequence[T]
    last: bool

    @property
    def next_cursor(self) -> Cursor:
        """The checkpoint once this page is acknowledged (inside the day)."""
        return Cursor(self.day, self.offset + len(self.items))


class OffsetPager(Generic[T]):
    """Yields a site's pages from `start` through `last_day`, fetching up to `lookahead` ahead."""

    def __init__(
        self,
        fetch: FetchPage[T],
        executor: Executor,
        start: Cursor,
        last_day: date,
        limit: int,
        lookahead: int = 1,
    ) -> None:
        self.fetch = fetch
        self.executor = executor
        self.start = start
        self.last_day = last_day
        self.limit = limit
        self.lookahead = max(1, lookahead)
        self._futures: dict[tuple[date, int], Future[Sequence[T]]] = {}

    def __iter__(self) -> Iterator[Page[T]]:
        day, offset = self.start.day, self.start.offset
        day_is_big = False
        try:
            while day <= self.last_day:
                self._fill(day, offset, day_is_big)
                items = self._futures.pop((day, offset)).result()
                full = len(items) >= self.limit
                page = Page(day, offset, items, last=not full)
                if full:
                    offset, day_is_big = offset + self.limit, True
                else:
                    self._drop_day(day)
                    day, offset, day_is_big = day + timedelta(days=1), 0, False
                if day <= self.last_day:
                    self._fill(day, offset, day_is_big)  # prefetch before handing over
                yield page
        finally:
            self.close()

    def _fill(self, day: date, offset: int, day_is_big: bool) -> None:
        wanted = [(day, offset)]
        if day_is_big:
            wanted += [(day, offset + k * self.limit) for k in range(1, self.lookahead)]
        following = day + timedelta(days=1)
        while len(wanted) < self.lookahead and following <= self.last_day:
            wanted.append((following, 0))
            following += timedelta(days=1)
        for key in wanted[: self.lookahead]:
            if key not in self._futures:
                self._futures[key] = self.executor.submit(self.fetch, *key)

    def _drop_day(self, day: date) -> None:
        """Speculative requests past a day's short page are not needed: cancel or ignore."""
        for key in [key for key in self._futures if key[0] == day]:
            self._futures.pop(key).cancel()

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
