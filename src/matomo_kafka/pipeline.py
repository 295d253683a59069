"""The run loop, in Kafka Connect's order: read a page, transform it, deliver it, and only
once Kafka has acknowledged it, move the site's checkpoint past it.

Per site: read its timezone, custom dimensions and goals; then for each closed day from its
checkpoint (or START_DATE) read Live.getLastVisitsDetails page by page (ascending last action
time, `filter_limit` visits a page) until a short page. A site that Matomo refuses fails alone;
a Kafka, checkpoint or token failure stops the run, since every other site would hit it too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

import orjson

from matomo_kafka.checkpoint import CheckpointStore, Cursor
from matomo_kafka.config import Settings
from matomo_kafka.days import day_range, days_behind, last_closed_day, site_timezone
from matomo_kafka.errors import (
    CheckpointError,
    KafkaDeliveryError,
    MatomoAuthError,
    MatomoError,
    MatomoKafkaError,
    MatomoResponseError,
    TransformError,
)
from matomo_kafka.matomo import MatomoClient, Visit
from matomo_kafka.sink import KafkaSink, Message, page_headers
from matomo_kafka.transform import SiteTransform, parse_dimensions, parse_goals

log = logging.getLogger(__name__)


class Interrupted(MatomoKafkaError):
    """SIGINT/SIGTERM: the run stopped cleanly after its last acknowledged page."""

    exit_code = 130


@dataclass
class SiteReport:
    """What one site's extraction did in this run, for the summary."""

    idsite: int
    status: str = "pending"  # pending | done | failed | skipped | interrupted
    days_done: int = 0
    pages: int = 0
    visits: int = 0
    seconds: float = 0.0
    cursor: Cursor | None = None
    last_closed: date | None = None
    error: str | None = None
    error_kind: str | None = None  # the exception class, e.g. SiteAccessError


class RunObserver(Protocol):
    """Hooks for progress displays and metrics. Calls may come from several threads (one per
    site being extracted), so implementations must be thread-safe and cheap (once per page)."""

    def site_started(self, site: SiteReport, first_day: date) -> None: ...

    def page_done(self, site: SiteReport, day: date, visits: int) -> None: ...

    def day_done(self, site: SiteReport, day: date, visits: int, seconds: float) -> None: ...

    def site_finished(self, site: SiteReport) -> None: ...


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


@dataclass
class RunReport:
    sites: list[SiteReport] = field(default_factory=list)
    fatal: MatomoKafkaError | None = None

    @property
    def ok(self) -> bool:
        return self.fatal is None and all(site.status == "done" for site in self.sites)

    @property
    def visits(self) -> int:
        return sum(site.visits for site in self.sites)


def visit_messages(idsite: int, visits: list[Visit], transform: SiteTransform) -> list[Message]:
    """One compact JSON message per visit, keyed `<idSite>:<idVisit>` (ids as integers)."""
    prefix = f"{idsite}:"
    return [
        Message(
            key=(prefix + str(int(visit["idVisit"]))).encode(),
            value=orjson.dumps(transform.apply(visit)),
        )
        for visit in visits
    ]


class Pipeline:
    """Moves every closed day of every configured site from Matomo to Kafka."""

    def __init__(
        self,
        settings: Settings,
        matomo: MatomoClient,
        sink: KafkaSink,
        store: CheckpointStore,
        run_date: date | None = None,
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.settings = settings
        self.matomo = matomo
        self.sink = sink
        self.store = store
        self.run_date = run_date
        self.stop = stop or threading.Event()
        self.observer: RunObserver = observer or NullObserver()

    def run(self, sites: tuple[int, ...]) -> RunReport:
        report = RunReport(sites=[SiteReport(idsite) for idsite in sites])
        for site in report.sites:
            if report.fatal is not None:
                site.status = "skipped"
                continue
            started = time.monotonic()
            try:
                self.run_site(site)
                site.status = "done"
            except Interrupted as exc:
                site.status, report.fatal = "interrupted", exc
                site.error, site.error_kind = str(exc), type(exc).__name__
            except (MatomoAuthError, KafkaDeliveryError, CheckpointError) as exc:
                site.status, report.fatal = "failed", exc
                site.error, site.error_kind = str(exc), type(exc).__name__
                log.error("site %d: %s", site.idsite, exc)
            except (MatomoError, TransformError) as exc:
                site.status = "failed"
                site.error, site.error_kind = str(exc), type(exc).__name__
                log.error("site %d: %s", site.idsite, exc)
            finally:
                site.seconds = time.monotonic() - started
                self.observer.site_finished(site)
        return report

    def prepare_site(self, idsite: int) -> tuple[SiteTransform, date]:
        """Reads what transforming a site's visits needs, and its last closed day."""
        info = self.matomo.site(idsite)
        try:
            tz = site_timezone(info.timezone)
        except ValueError as exc:
            raise MatomoResponseError(f"site {idsite}: {exc}") from None
        transform = SiteTransform.build(
            idsite,
            parse_dimensions(self.matomo.custom_dimensions(idsite), idsite),
            parse_goals(self.matomo.goals(idsite), idsite),
            self.settings.COLONNE_ANNOMYSE,
            self.settings.SALAGE.get_secret_value() if self.settings.SALAGE else None,
        )
        return transform, last_closed_day(tz, self.run_date)

    def run_site(self, site: SiteReport) -> None:
        idsite = site.idsite
        transform, last_day = self.prepare_site(idsite)
        saved = self.store.load(idsite)
        cursor = saved or Cursor(self.settings.START_DATE, 0)
        site.cursor, site.last_closed = cursor, last_day
        log.info(
            "site %d: from %s (offset %d) to %s, %d day(s) to read",
            idsite, cursor.day, cursor.offset, last_day, days_behind(cursor.day, last_day),
        )  # fmt: skip
        self.observer.site_started(site, cursor.day)
        limit = self.settings.MATOMO_FILTER_LIMIT
        for day in day_range(cursor.day, last_day):
            day_started, day_visits = time.monotonic(), 0
            headers = page_headers(idsite, day.isoformat())
            offset = cursor.offset if day == cursor.day else 0
            while True:
                visits = self.matomo.visits_page(idsite, day, limit, offset)
                if visits:
                    self.sink.deliver(visit_messages(idsite, visits, transform), headers)
                offset += len(visits)
                day_visits += len(visits)
                site.pages += 1
                site.visits += len(visits)
                saved = self._save(idsite, Cursor(day, offset), saved)
                site.cursor = saved
                self.observer.page_done(site, day, len(visits))
                if len(visits) < limit:
                    break
                self._check_stop(idsite)
            saved = self._save(idsite, Cursor(day + timedelta(days=1), 0), saved)
            site.cursor = saved
            site.days_done += 1
            day_seconds = time.monotonic() - day_started
            log.info(
                "site %d: %s done, %d visits sent (%.1fs)", idsite, day, day_visits, day_seconds
            )
            self.observer.day_done(site, day, day_visits, day_seconds)
            self._check_stop(idsite)

    def _save(self, idsite: int, cursor: Cursor, previous: Cursor | None) -> Cursor:
        self.store.save(idsite, cursor, previous)
        return cursor

    def _check_stop(self, idsite: int) -> None:
        if self.stop.is_set():
            raise Interrupted(f"interrupted; site {idsite} checkpointed after its last page")
