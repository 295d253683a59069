"""Stand-ins for Matomo's Live pages in the pager's unit tests: a `fetch(Request)` answering
from visits held in memory, recording every request (the tests count and order them)."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

from matomo_kafka.source.paging import Batch, Request

FIRST = date(2024, 3, 1)


class FakeDays:
    """A day's visits by count (one per second: no ties); records every (day, offset)."""

    def __init__(self, counts: list[int], first: date = FIRST) -> None:
        self.counts = {first + timedelta(days=i): n for i, n in enumerate(counts)}
        self.requests: list[tuple[date, int]] = []
        self.lock = threading.Lock()

    def fetch(self, request: Request) -> Batch[int]:
        with self.lock:
            self.requests.append((request.day, request.offset))
        n = self.counts.get(request.day, 0)
        ids = list(range(request.offset, min(n, request.offset + request.limit)))
        return Batch(ids, ids, [1_700_000_000 + i for i in ids])


class TiedDays:
    """Visits as (last action second, idVisit); every request orders visits of the same
    second at random, as MySQL may for ORDER BY ... LIMIT without a tie-breaker. With `now`
    set, a visit is served only once `now` reached its last action (Matomo's clock moving)."""

    def __init__(
        self, days: dict[date, list[tuple[int, int]]], seed: int, now: int | None = None
    ) -> None:
        self.days = days
        self.now = now
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[Request] = []

    def fetch(self, request: Request) -> Batch[int]:
        with self.lock:
            self.requests.append(request)
            visits = [
                (stamp, self.random.random(), idvisit)
                for stamp, idvisit in self.days.get(request.day, [])
                if (self.now is None or stamp <= self.now)
                and (request.after is None or stamp > request.after)
            ]
        visits.sort()
        chosen = visits[request.offset : request.offset + request.limit]
        ids = [idvisit for _, _, idvisit in chosen]
        return Batch(ids, ids, [stamp for stamp, _, _ in chosen])
