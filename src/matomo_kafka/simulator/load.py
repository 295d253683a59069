"""The server's load, for benchmarks: API requests in flight, the worker pool serving them,
and the stats (GET /__stats) that prove how many requests a client had in flight at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


class _Load:
    """The server's load: API requests in flight, the worker pool serving them, and stats.

    A request is in flight from its arrival at the API to its answer; it then waits for one
    of ``workers`` (0: never waits) and holds it while handled. Benchmarks read the stats
    (GET /__stats) to prove a client never had more requests in flight than it is allowed,
    and to see how busy the workers were.
    """

    _COUNTERS = ("requests", "live_requests", "live_visits", "waited")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._slots = threading.Semaphore(workers) if workers > 0 else None
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared by MatomoSimulator.hold()
        self._open.set()
        self._now = {"in_flight": 0, "live_in_flight": 0, "queued": 0, "busy": 0}
        self._max: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._live_busy_s = 0.0
        self._first = self._last = 0.0  # first arrival, last answer (monotonic), 0: none
        self._live_area = 0.0  # Live requests in flight x seconds: their mean over the span
        self._live_mark = 0.0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; maxima restart from what is in flight right now."""
        with self._lock:
            self._max = dict(self._now)
            self._count = dict.fromkeys(self._COUNTERS, 0)
            self._live_busy_s = 0.0
            self._first = self._last = 0.0
            self._live_area = 0.0
            self._live_mark = time.monotonic()

    def _live(self, delta: int) -> None:
        """Moves the Live requests in flight (under the lock), keeping their time integral."""
        now = time.monotonic()
        self._live_area += self._now["live_in_flight"] * (now - self._live_mark)
        self._live_mark = now
        self._add("live_in_flight", delta)

    def _add(self, name: str, delta: int) -> None:
        """Moves a current count (under the lock) and keeps its maximum."""
        now = self._now[name] + delta
        self._now[name] = now
        if now > self._max[name]:
            self._max[name] = now

    @contextlib.contextmanager
    def serve(self, live: bool) -> Iterator[None]:
        """One request's life on the server: in flight, queued for a worker, then served."""
        with self._lock:
            if not self._first:
                self._first = time.monotonic()
            self._count["requests"] += 1
            self._count["live_requests"] += live
            self._add("in_flight", 1)
            if live:
                self._live(1)
        try:
            if self._slots is not None and not self._slots.acquire(blocking=False):
                with self._lock:
                    self._count["waited"] += 1
                    self._add("queued", 1)
                self._slots.acquire()
                with self._lock:
                    self._add("queued", -1)
            try:
                with self._lock:
                    self._add("busy", 1)
                started = time.monotonic()
                self._open.wait()
                try:
                    yield
                finally:
                    with self._lock:
                        self._add("busy", -1)
                        if live:
                            self._live_busy_s += time.monotonic() - started
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            with self._lock:
                self._last = time.monotonic()
                self._add("in_flight", -1)
                if live:
                    self._live(-1)

    def count_visits(self, visits: int) -> None:
        with self._lock:
            self._count["live_visits"] += visits

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"workers": self.workers, **self._count}
            out.update({f"max_{k}": v for k, v in self._max.items()})
            out.update({k: v for k, v in self._now.items()})
            out["live_busy_s"] = round(self._live_busy_s, 6)
            span = max(0.0, self._last - self._first)
            out["span_s"] = round(span, 6)
            out["mean_live_in_flight"] = round(self._live_area / span, 3) if span else 0.0
        if reset:
            self.reset()
        return out
