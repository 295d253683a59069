"""The delivery pool (sink/delivery.py `Handover`): every delivery handed over is reported
ended exactly once, however the worker threads' ends interleave with the loop's look."""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest

from matomo_kafka.sink.delivery import After, Handover, Outgoing


class _Out:
    """Stands for an Outgoing: the pool only reads `idsite`."""

    def __init__(self, idsite: int, number: int) -> None:
        self.idsite = idsite
        self.number = number


class _QuickDelivery:
    """Deliveries that end after a few microseconds: many end while the loop looks."""

    deliveries_per_site = 4
    pages_per_delivery = 1

    def __init__(self, failing: int = 7) -> None:
        self.failing = failing  # every failing-th delivery fails: both lists are exercised

    def deliver(self, outs: Sequence[Outgoing], after: After) -> None:
        time.sleep(random.random() * 0.0002)
        with contextlib.suppress(RuntimeError):  # the previous one failed: this one ends too
            after()
        if cast(Any, outs[0]).number % self.failing == 0:
            raise RuntimeError("refused")

    def start(self, idsite: int) -> None: ...

    def finish_site(self, idsite: int) -> None: ...

    def close(self) -> None: ...


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Thread switches every microsecond: the loop is interrupted inside `finished`."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_every_delivery_is_reported_ended_exactly_once(frequent_switches: None) -> None:
    """A delivery ending between two looks at its future was in neither list: never
    reported, its site never closed and `run` (or a follow cycle) hung for good."""
    handover = Handover(cast(Any, _QuickDelivery()), 8, threading.Event())
    handed, reported = 6_000, Counter[int]()
    sent = 0
    try:
        while sent < handed:
            while handover.in_flight() < 64 and sent < handed:
                handover.send([cast(Outgoing, _Out(sent % 16, sent))])
                sent += 1
            ok, failed = handover.finished()
            reported.update(cast(Any, outs[0]).number for outs in ok)
            reported.update(cast(Any, outs[0]).number for outs, _ in failed)
        ok, failed = handover.finished(wait=True)
        reported.update(cast(Any, outs[0]).number for outs in ok)
        reported.update(cast(Any, outs[0]).number for outs, _ in failed)
    finally:
        handover.close()
    lost = sorted(set(range(handed)) - set(reported))
    twice = sorted(number for number, times in reported.items() if times > 1)
    assert not lost, f"{len(lost)} of {handed} deliveries never reported ended"
    assert not twice, f"{len(twice)} deliveries reported more than once"
    assert handover.in_flight() == 0
