"""The paging hazards an exporter must survive: late visits hidden until released, and runs
of equal last-action seconds shuffled afresh on each request."""

from __future__ import annotations

import random
from collections.abc import Callable


def _hidden_indices(n: int, late: int) -> frozenset[int]:
    """``late`` visit indices spread evenly over the day (distinct as long as late <= n)."""
    c = min(late, n)
    return frozenset(((2 * j + 1) * n) // (2 * c) for j in range(c)) if c > 0 else frozenset()


def _shuffle_ties(
    ts_at: Callable[[int], int],
    first_after: Callable[[int], int],
    a: int,
    b: int,
    asc: bool,
    rng: random.Random,
) -> list[int]:
    """Positions [a, b) of an ascending order, served asc or desc, with every run of equal
    timestamps that the page touches shuffled; runs crossing a or b are shuffled whole
    first, so which of their members land in the page changes from request to request.
    ``first_after(t)`` is the first position whose timestamp is > t."""
    a0 = first_after(ts_at(a) - 1)
    b0 = first_after(ts_at(b - 1))
    stamps = [ts_at(q) for q in range(a0, b0)]
    order: list[int] = []
    r, size = 0, b0 - a0
    while r < size:
        e = r + 1
        while e < size and stamps[e] == stamps[r]:
            e += 1
        run = list(range(a0 + r, a0 + e))
        if e - r > 1:
            rng.shuffle(run)
        order += run
        r = e
    if asc:
        return order[a - a0 : b - a0]
    order.reverse()
    return order[b0 - b : b0 - a]
