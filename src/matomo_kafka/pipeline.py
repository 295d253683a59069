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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

import orjson

from matomo_kafka.checkpoint import CheckpointStore, Cursor
from matomo_kafka.config import Settings
from matomo_kafka.days import days_behind, last_closed_day, site_timezone
from matomo_kafka.errors import (
    CheckpointError,
    KafkaDeliveryError,
    MatomoAuthError,
    MatomoError,
    MatomoKafkaError,
    MatomoResponseError,
    TransformError,
)
from matomo_kafka.matomo import MatomoClient, Visit, parse_visits
from matomo_kafka.paging import OffsetPager, Page
from matomo_kafka.sink import KafkaSink, Message, PageAck, page_headers
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
    """One compact JSON message per visit, keyed `<idSite>:<idVisit>` (ids as integers).

    Consumes `visits`: each parsed visit is dropped once serialised, so a page's Python
    objects (ten times its JSON size) are freed as it goes rather than all at the end.
    """
    prefix = f"{idsite}:"
    apply, dumps = transform.apply, orjson.dumps
    messages: list[Message] = []
    visits.reverse()
    while visits:
        visit = visits.pop()
        key = (prefix + str(int(visit["idVisit"]))).encode()
        # orjson's bytes keep its 32 KiB write buffer; a right-sized copy (0.4 us) keeps a
        # page of 1000 messages at 3.5 MB instead of 32 MB while it waits to be sent.
        messages.append(Message(key, memoryview(dumps(apply(visit))).tobytes()))
    return messages


class Stopped(MatomoKafkaError):
    """Another site hit a run-wide failure: this one stopped after its last acknowledged page."""


class Pipeline:
    """Moves every closed day of every configured site from Matomo to Kafka.

    Up to MATOMO_MAX_CONCURRENCY sites run at once, each in its own thread with its pages
    fetched ahead (see paging.py); all Matomo requests share one RequestGate. Per site, page
    k+1 is transformed while page k's acks arrive, and is sent only once page k is
    acknowledged and checkpointed: at most one page per site is ever unacknowledged.
    """

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
        self._abort = threading.Event()
        self._parse_lock = threading.Lock()
        self._fatal_lock = threading.Lock()
        self.lookahead = 1

    def run(self, sites: tuple[int, ...]) -> RunReport:
        report = RunReport(sites=[SiteReport(idsite) for idsite in sites])
        try:
            # One request before the sites start together: a refused token is tried once,
            # not once per site (repeated bad logins can get the caller's IP blocked).
            log.info("Matomo %s at %s", self.matomo.version(), self.matomo.api_url)
        except (MatomoAuthError, MatomoError) as exc:
            report.fatal = exc
            for site in report.sites:
                site.status, site.error, site.error_kind = "skipped", str(exc), type(exc).__name__
            return report
        concurrency = self.settings.MATOMO_MAX_CONCURRENCY
        workers = max(1, min(concurrency, len(sites)))
        # Few sites: spend the spare request slots on reading ahead inside each site.
        self.lookahead = max(1, -(-concurrency // workers))
        fetch_pool = ThreadPoolExecutor(workers * self.lookahead + 1, "matomo-fetch")
        try:
            with ThreadPoolExecutor(workers, "site") as site_pool:
                futures = [
                    site_pool.submit(self._run_one, report, site, fetch_pool)
                    for site in report.sites
                ]
                for future in futures:
                    future.result()
        finally:
            fetch_pool.shutdown(wait=True, cancel_futures=True)
        return report

    def _run_one(self, report: RunReport, site: SiteReport, fetch_pool: Executor) -> None:
        if self._abort.is_set():
            site.status = "skipped"
            return
        started = time.monotonic()
        try:
            self.run_site(site, fetch_pool)
            site.status = "done"
        except Interrupted as exc:
            site.status = "interrupted"
            site.error, site.error_kind = str(exc), type(exc).__name__
            self._set_fatal(report, exc)
        except Stopped as exc:
            site.status = "stopped"
            site.error, site.error_kind = str(exc), type(exc).__name__
        except (MatomoAuthError, KafkaDeliveryError, CheckpointError) as exc:
            site.status = "failed"
            site.error, site.error_kind = str(exc), type(exc).__name__
            log.error("site %d: %s", site.idsite, exc)
            self._set_fatal(report, exc)
        except (MatomoError, TransformError) as exc:
            site.status = "failed"
            site.error, site.error_kind = str(exc), type(exc).__name__
            log.error("site %d: %s", site.idsite, exc)
        finally:
            site.seconds = time.monotonic() - started
            self.observer.site_finished(site)

    def _set_fatal(self, report: RunReport, exc: MatomoKafkaError) -> None:
        """The first run-wide failure wins; the other sites stop after their current page."""
        with self._fatal_lock:
            if report.fatal is None:
                report.fatal = exc
        self._abort.set()

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

    def run_site(self, site: SiteReport, fetch_pool: Executor) -> None:
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

        def fetch(day: date, offset: int) -> list[Message]:
            # Runs on the fetch pool. Requests overlap; parsing does not: a parsed page is
            # ten times its JSON, and threads parsing at once only fight over the GIL. The
            # page leaves already serialised, so only compact bytes wait in the read-ahead.
            raw = self.matomo.visits_page_raw(idsite, day, limit, offset)
            with self._parse_lock:
                return visit_messages(idsite, parse_visits(raw, idsite, day, limit), transform)

        pager = OffsetPager(
            fetch,
            fetch_pool,
            cursor,
            last_day,
            limit,
            self.lookahead,
        )
        progress = _DayProgress()
        in_flight: tuple[Page[Message], PageAck] | None = None
        try:
            for page in pager:
                if in_flight is not None:
                    saved = self._commit(site, *in_flight, saved, progress)
                    in_flight = None
                self._check_stop(idsite)
                headers = page_headers(idsite, page.day.isoformat())
                in_flight = (page, self.sink.send(page.items, headers))
        except (MatomoError, TransformError, Interrupted, Stopped):
            # The next page failed: the page already sent still deserves its checkpoint.
            if in_flight is not None:
                self._commit(site, *in_flight, saved, progress)
            raise
        if in_flight is not None:
            self._commit(site, *in_flight, saved, progress)

    def _commit(
        self,
        site: SiteReport,
        page: Page[Message],
        ack: PageAck,
        saved: Cursor | None,
        progress: _DayProgress,
    ) -> Cursor:
        """Once Kafka acknowledged the page: checkpoint it, and the day's end if it is last."""
        self.sink.wait(ack)
        saved = self._save(site.idsite, page.next_cursor, saved)
        count = len(page.items)
        site.cursor = saved
        site.pages += 1
        site.visits += count
        progress.add(page.day, count)
        self.observer.page_done(site, page.day, count)
        if page.last:
            saved = self._save(site.idsite, Cursor(page.day + timedelta(days=1), 0), saved)
            site.cursor = saved
            site.days_done += 1
            visits, seconds = progress.finish()
            log.info("site %d: %s done, %d visits sent (%.1fs)", site.idsite, page.day, visits,
                     seconds)  # fmt: skip
            self.observer.day_done(site, page.day, visits, seconds)
        return saved

    def _save(self, idsite: int, cursor: Cursor, previous: Cursor | None) -> Cursor:
        self.store.save(idsite, cursor, previous)
        return cursor

    def _check_stop(self, idsite: int) -> None:
        if self.stop.is_set():
            raise Interrupted(f"interrupted; site {idsite} checkpointed after its last page")
        if self._abort.is_set():
            raise Stopped("stopped by another site's failure after its last acknowledged page")


class _DayProgress:
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
