"""Progress of a run, through the pipeline's RunObserver hooks.

On a terminal (stderr is a TTY): a live rich display, one line per site (current day, days
done out of the days to read, pages, visits, visits/s, ETA to the site's last closed day).
Under a scheduler (no TTY), or with LOG_FORMAT=json: one concise log line per page and one
per day, from the `matomo_kafka.progress` logger.

Observers are called from the threads extracting sites, so every method takes a lock.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from matomo_kafka.model import SiteReport
from matomo_kafka.ops.terminal import plain_console
from matomo_kafka.pipeline import RunObserver
from matomo_kafka.source.days import days_behind

log = logging.getLogger("matomo_kafka.progress")

#: The pipeline's own per-day line, replaced in log mode by the richer one below.
_PIPELINE_DAY_LINE = "site %d: %s done, %d visits sent (%.1fs)"


@dataclass
class _SiteState:
    """What an observer knows of one site during this run."""

    started: float
    days_total: int
    days_done: int = 0
    visits: int = 0
    day: date | None = None
    day_pages: int = 0
    day_visits: int = 0
    task: TaskID | None = None

    def rate(self, now: float) -> float:
        elapsed = now - self.started
        return self.visits / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds to the last closed day at this run's average pace, once a day is done."""
        left = self.days_total - self.days_done
        if left <= 0:
            return 0.0
        if self.days_done == 0:
            return None
        return (now - self.started) / self.days_done * left


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _Base:
    #: Matomo requests in flight the run allows itself now, and its cap (the pipeline's pace).
    pace: tuple[int, int] | None = None

    def pace_changed(self, level: int, cap: int) -> None:
        with self._lock:
            self.pace = (level, cap)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[int, _SiteState] = {}

    def _start(self, site: SiteReport, first_day: date) -> _SiteState:
        total = days_behind(first_day, site.last_closed) if site.last_closed else 0
        state = _SiteState(started=time.monotonic(), days_total=total)
        self._sites[site.idsite] = state
        return state

    def _page(self, site: SiteReport, day: date, visits: int) -> _SiteState:
        state = self._sites.get(site.idsite) or self._start(site, day)
        if state.day != day:
            state.day, state.day_pages, state.day_visits = day, 0, 0
        state.day_pages += 1
        state.day_visits += visits
        state.visits += visits
        return state


class LogProgress(_Base):
    """One INFO line per page and one per day (for schedulers and JSON logs)."""

    def site_started(self, site: SiteReport, first_day: date) -> None:
        with self._lock:  # the pipeline logs the site's start (days to read) itself
            self._start(site, first_day)

    def page_done(self, site: SiteReport, day: date, visits: int) -> None:
        with self._lock:
            state = self._page(site, day, visits)
            pages, day_visits = state.day_pages, state.day_visits
            rate = state.rate(time.monotonic())
        log.info(
            "site %d: %s page %d: %d visits (%d this day, %.0f visits/s)",
            site.idsite, day, pages, visits, day_visits, rate,
            extra={"fields": {"site": site.idsite, "day": day.isoformat(), "page": pages,
                              "visits": visits}},
        )  # fmt: skip

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._sites.get(site.idsite) or self._start(site, day)
            state.days_done += 1
            done, total = state.days_done, state.days_total
            pages = state.day_pages if state.day == day else 0
            eta = state.eta(now)
            level, cap = self.pace or (0, 0)
        log.info(
            "site %d: %s done: %d visits, %d page(s) in %.1fs; %d/%d days, ETA %s; "
            "Matomo requests in flight: %d of %d",
            site.idsite, day, visits, pages, seconds, done, total, format_duration(eta),
            level, cap,
            extra={"fields": {"site": site.idsite, "day": day.isoformat(), "visits": visits,
                              "days_done": done, "days_to_read": total,
                              "matomo_in_flight": level}},
        )  # fmt: skip

    def site_finished(self, site: SiteReport) -> None:
        with self._lock:
            self._sites.pop(site.idsite, None)


class _RunProgress(Progress):
    """rich's Progress with a line above the sites: the run's own state (Matomo's pace)."""

    header = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.header:
            yield Text(self.header)
        yield from super().get_renderables()


class RichProgress(_Base):
    """A live display on the terminal: one line per site."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.progress = _RunProgress(  # the fields are the tool's own; never markup anyway
            TextColumn("site {task.fields[site]:>4}", markup=False),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:.0f}/{task.total:.0f} days", markup=False),
            TextColumn("{task.fields[day]}", markup=False),
            TextColumn("{task.fields[pages]} pages", markup=False),
            TextColumn("{task.fields[visits]} visits", markup=False),
            TextColumn("{task.fields[rate]} visits/s", markup=False),
            TextColumn("ETA {task.fields[eta]}", markup=False),
            TextColumn("{task.fields[outcome]}", markup=False),
            console=console,
            refresh_per_second=4,
        )

    def pace_changed(self, level: int, cap: int) -> None:
        super().pace_changed(level, cap)
        self.progress.header = f"Matomo requests in flight: {level} of {cap}"

    def _fields(self, site: SiteReport, state: _SiteState, now: float) -> dict[str, Any]:
        return {
            "site": site.idsite,
            "day": str(state.day or "-"),
            "pages": site.pages,
            "visits": state.visits,
            "rate": f"{state.rate(now):.0f}",
            "eta": format_duration(state.eta(now)),
        }

    def site_started(self, site: SiteReport, first_day: date) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._start(site, first_day)
            state.day = first_day
            fields = self._fields(site, state, now)
            state.task = self.progress.add_task(
                "", total=max(state.days_total, 0), outcome="", **fields
            )

    def page_done(self, site: SiteReport, day: date, visits: int) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._page(site, day, visits)
            if state.task is not None:
                self.progress.update(state.task, **self._fields(site, state, now))

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._sites.get(site.idsite)
            if state is None:
                return
            state.days_done += 1
            if state.task is not None:
                self.progress.update(
                    state.task, completed=state.days_done, **self._fields(site, state, now)
                )

    def site_finished(self, site: SiteReport) -> None:
        with self._lock:
            state = self._sites.get(site.idsite)
            if state is None or state.task is None:
                # Failed before its first day (site info, dimensions, goals).
                self.progress.add_task(
                    "", total=1, site=site.idsite, day="-", pages=0, visits=0, rate="0",
                    eta="-", outcome=site.status,
                )  # fmt: skip
                return
            self.progress.update(state.task, outcome=site.status, eta="-")

    @contextmanager
    def live(self) -> Iterator[RichProgress]:
        """Shows the display; log lines written meanwhile are printed above it."""
        with self.progress, _handlers_through(sys.stderr):
            yield self


@contextmanager
def _handlers_through(stream: IO[str]) -> Iterator[None]:
    """Points stderr log handlers at `stream` (rich's proxy while live) and back afterwards,
    so log lines print above the live display instead of through it."""
    swapped: list[tuple[logging.StreamHandler[Any], IO[str]]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.__stderr__,
            _ORIGINAL_STDERR,
        ):
            swapped.append((handler, handler.stream))
            handler.setStream(stream)
    try:
        yield
    finally:
        for handler, previous in swapped:
            handler.setStream(previous)


_ORIGINAL_STDERR = sys.stderr


class _DropPipelineDayLine(logging.Filter):
    """In log mode LogProgress writes the per-day line (with progress and ETA): the
    pipeline's shorter one would say the same thing twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _PIPELINE_DAY_LINE


class Observers:
    """Fans every hook out to several observers (progress, metrics...)."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def site_started(self, site: SiteReport, first_day: date) -> None:
        for observer in self.observers:
            observer.site_started(site, first_day)

    def page_done(self, site: SiteReport, day: date, visits: int) -> None:
        for observer in self.observers:
            observer.page_done(site, day, visits)

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None:
        for observer in self.observers:
            observer.day_done(site, day, visits, seconds)

    def site_finished(self, site: SiteReport) -> None:
        for observer in self.observers:
            observer.site_finished(site)

    def pace_changed(self, level: int, cap: int) -> None:
        for observer in self.observers:
            observer.pace_changed(level, cap)


@contextmanager
def progress_observer(
    *, quiet: bool, json_logs: bool, stream: IO[str] | None = None
) -> Iterator[RunObserver]:
    """The right observer for where the output goes, active for the `with` block."""
    stream = stream or sys.stderr
    if not quiet and not json_logs and stream.isatty():
        display = RichProgress(plain_console(file=stream))
        with display.live():
            yield display
        return
    pipeline_log = logging.getLogger("matomo_kafka.pipeline")
    dedupe = _DropPipelineDayLine()
    pipeline_log.addFilter(dedupe)
    try:
        yield LogProgress()
    finally:
        pipeline_log.removeFilter(dedupe)
