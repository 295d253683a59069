"""What has the run delivered so far? A site's figures once Kafka holds a page and its
checkpoint moved, the per-day log line, and the hooks that progress displays and metrics
(ops/progress.py, ops/follow_metrics.py) follow."""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Protocol

from matomo_kafka.model import SiteReport
from matomo_kafka.sink.delivery import Outgoing

#: The loop's logger, one for the whole package: log lines name it, and ops/progress.py
#: drops the per-day line below from it when it prints its own.
log = logging.getLogger("matomo_kafka.pipeline")


class RunObserver(Protocol):
    """Hooks for progress displays and metrics, called from the run's one loop: they must be
    cheap (once per page), since the loop delivers every site's pages."""

    def site_started(self, site: SiteReport, first_day: date) -> None: ...

    def page_done(self, site: SiteReport, day: date, visits: int) -> None: ...

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None: ...

    def site_finished(self, site: SiteReport) -> None: ...

    def pace_changed(self, level: int, cap: int) -> None:
        """Matomo requests in flight the run now allows itself, of MATOMO_MAX_CONCURRENCY."""


class NullObserver:
    """The default observer: does nothing."""

    def site_started(self, site: SiteReport, first_day: date) -> None:
        pass

    def page_done(self, site: SiteReport, day: date, visits: int) -> None:
        pass

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None:
        pass

    def site_finished(self, site: SiteReport) -> None:
        pass

    def pace_changed(self, level: int, cap: int) -> None:
        pass


class DayProgress:
    """Visits and time of the day being read, for the per-day log line."""

    def __init__(self) -> None:
        self.day: date | None = None
        self.visits = 0
        self.started = time.monotonic()

    def add(self, day: date, count: int) -> None:
        if day != self.day:
            self.day, self.visits = day, 0
        self.visits += count

    def finish(self) -> tuple[int, float]:
        result = (self.visits, time.monotonic() - self.started)
        self.day, self.visits, self.started = None, 0, time.monotonic()
        return result


def counted(
    site: SiteReport,
    progress: DayProgress,
    out: Outgoing,
    observer: RunObserver,
    cycle: bool,
) -> None:
    """The page is delivered and checkpointed: the site's figures and progress (`cycle`:
    one cycle of `follow`, whose day line says so)."""
    if out.cursor is None:
        return
    page = out.page
    site.cursor = out.cursor
    count = len(page.items)
    site.pages += 1
    site.visits += count
    if page.newest is not None and (site.newest is None or page.newest > site.newest):
        site.newest = page.newest
    progress.add(page.day, count)
    observer.page_done(site, page.day, count)
    if page.last:
        site.days_done += 1
        visits, seconds = progress.finish()
        if not cycle:  # ops/progress.py drops this very line beside its own
            log.info("site %d: %s done, %d visits sent (%.1fs)", site.idsite, page.day,
                     visits, seconds)  # fmt: skip
        else:
            log.info("site %d: %s done, %d visits sent by this cycle (%.1fs)", site.idsite,
                     page.day, visits, seconds)  # fmt: skip
        observer.day_done(site, page.day, visits, seconds)
