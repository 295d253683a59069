"""The run loop, in Kafka Connect's order: read a page, transform it, deliver it, and only
once Kafka has acknowledged it, move the site's checkpoint past it.

Per site: read its timezone, custom dimensions and goals; then for each closed day from its
checkpoint (or START_DATE) read Live.getLastVisitsDetails page by page (ascending last action
time, `filter_limit` visits a page, keyset-checked boundaries: paging.py) until a short page;
then, with MATOMO_RESCAN_DAYS, re-read the days before the start and re-send what is new or
changed (sentlog.py). A site that Matomo refuses fails alone; a Kafka, checkpoint or token
failure stops the run, since every other site would hit it too.

DELIVERY=exactly_once: each page and the site's new checkpoint (a record of the state topic,
see state.py) are committed in one Kafka transaction by the site's transactional producer;
the checkpoint files are written after each commit, and the state topic is what a run starts
from (the files are imported when it has nothing for a site).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

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
from matomo_kafka.matomo import MatomoClient
from matomo_kafka.paging import Batch, Page, Pager, Request
from matomo_kafka.sentlog import SentLog, digest, visit_id
from matomo_kafka.sink import (
    Headers,
    KafkaSink,
    Message,
    PageAck,
    TransactionalSink,
    page_headers,
)
from matomo_kafka.state import (
    StateReader,
    claim_sites,
    encode,
    ensure_state_topic,
    state_key,
)
from matomo_kafka.transform import SiteTransform, page_messages, parse_dimensions, parse_goals

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
    rescanned_days: int = 0  # MATOMO_RESCAN_DAYS: days re-read after the catch-up
    rescan_new: int = 0  # visits found by the re-scan that were never sent
    rescan_changed: int = 0  # visits found by the re-scan that changed since they were sent


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
        self.state: StateReader | None = None  # DELIVERY=exactly_once: checkpoints in Kafka
        self.sent_log = (
            SentLog(settings.FILE_PATH_FILTERDATE) if settings.MATOMO_RESCAN_DAYS else None
        )

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
        if self.settings.exactly_once and sites:
            try:
                self._prepare_exactly_once(sites)
            except MatomoKafkaError as exc:
                report.fatal = exc
                for site in report.sites:
                    site.status, site.error = "skipped", str(exc)
                    site.error_kind = type(exc).__name__
                return report
        try:
            return self._run_sites(report, sites)
        finally:
            if self.state is not None:
                self.state.close()
                self.state = None

    def _prepare_exactly_once(self, sites: tuple[int, ...]) -> None:
        """The state topic (created compacted if missing), every site's transactional.id
        claimed up front (fences other instances, aborts what a dead one left open), then a
        reader of the committed checkpoints."""
        partitions = ensure_state_topic(self.settings)
        claim_sites(self.settings, sites)
        self.state = StateReader(self.settings, partitions)
        log.info(
            "exactly-once: state topic %s, %d site(s) claimed (transactional ids "
            "matomo-kafka.%s.<site>)", self.settings.state_topic, len(sites),
            self.settings.KAFKA_TOPIC,
        )  # fmt: skip

    def _run_sites(self, report: RunReport, sites: tuple[int, ...]) -> RunReport:
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
        settle = self.settings.MATOMO_SETTLE_MINUTES
        last_day = last_closed_day(tz, self.run_date, settle_minutes=settle)
        if self.run_date is not None and last_day < self.run_date - timedelta(days=1):
            log.info(
                "site %d: --run-date %s asks for days up to %s, but only days up to %s are "
                "closed and settled (MATOMO_SETTLE_MINUTES=%d, timezone %s)",
                idsite, self.run_date, self.run_date - timedelta(days=1), last_day, settle,
                info.timezone,
            )  # fmt: skip
        return transform, last_day

    def run_site(self, site: SiteReport, fetch_pool: Executor) -> None:
        if self.settings.exactly_once:
            self._run_site_exactly_once(site, fetch_pool)
            return
        idsite = site.idsite
        transform, last_day = self.prepare_site(idsite)
        cursor = self.store.load(idsite) or Cursor(self.settings.START_DATE, 0)
        site.cursor, site.last_closed = cursor, last_day
        self._site_started(site, cursor, last_day)
        pager = self._pager(idsite, transform, cursor, last_day, fetch_pool)
        progress = _DayProgress()
        in_flight: tuple[Page[Message], PageAck] | None = None
        try:
            for page in pager:
                if in_flight is not None:
                    self._commit(site, *in_flight, progress)
                    in_flight = None
                self._check_stop(idsite)
                headers = page_headers(idsite, page.day.isoformat())
                in_flight = (page, self.sink.send(page.items, headers))
        except (MatomoError, TransformError, Interrupted, Stopped):
            # The next page failed: the page already sent still deserves its checkpoint.
            if in_flight is not None:
                self._commit(site, *in_flight, progress)
            raise
        if in_flight is not None:
            self._commit(site, *in_flight, progress)
        self._rescan(site, transform, cursor.day, last_day, fetch_pool, self.sink.deliver)

    def _site_started(self, site: SiteReport, cursor: Cursor, last_day: date) -> None:
        log.info(
            "site %d: from %s (offset %d) to %s, %d day(s) to read",
            site.idsite, cursor.day, cursor.offset, last_day, days_behind(cursor.day, last_day),
        )  # fmt: skip
        self.observer.site_started(site, cursor.day)

    def _pager(
        self,
        idsite: int,
        transform: SiteTransform,
        cursor: Cursor,
        last_day: date,
        fetch_pool: Executor,
    ) -> Pager[Message]:
        keyset = self.settings.MATOMO_PAGING == "keyset"

        def fetch(request: Request) -> Batch[Message]:
            # Runs on the fetch pool. Requests overlap; parsing does not: threads parsing at
            # once only fight over the GIL. The page leaves already serialised, so only
            # compact bytes wait in the read-ahead.
            day, limit = request.day, request.limit
            raw = self.matomo.visits_page_raw(idsite, day, limit, request.offset, request.after)
            with self._parse_lock:
                return page_messages(raw, idsite, day, limit, transform, keyset)

        limit = self.settings.MATOMO_FILTER_LIMIT
        return Pager(fetch, fetch_pool, cursor, last_day, limit, self.lookahead, keyset)

    def _run_site_exactly_once(self, site: SiteReport, fetch_pool: Executor) -> None:
        """One transaction per page: the page's visits and the site's next checkpoint (the
        day's end on its last page) commit together; the files follow each commit."""
        idsite = site.idsite
        transform, last_day = self.prepare_site(idsite)
        sink = TransactionalSink(self.settings, idsite)
        try:
            sink.init()  # from here on, an older producer of this site is fenced
            cursor, seq = self._exactly_once_start(idsite)
            site.cursor, site.last_closed = cursor, last_day
            self._site_started(site, cursor, last_day)
            progress = _DayProgress()
            key = state_key(idsite)
            for page in self._pager(idsite, transform, cursor, last_day, fetch_pool):
                self._check_stop(idsite)
                if page.last:
                    committed = Cursor(page.day + timedelta(days=1), 0)
                else:
                    committed = page.next_cursor
                seq += 1
                value = encode(self.settings, idsite, committed, seq, "run")
                sink.commit(page.items, page_headers(idsite, page.day.isoformat()), key, value)
                self._record_sent(idsite, page)
                site.cursor = self._save(idsite, committed)
                self._page_counted(site, page, progress)
                if page.last:
                    self._day_counted(site, page, progress)

            def commit_resent(messages: list[Message], headers: Headers) -> None:
                sink.commit(messages, headers, None, None)  # no checkpoint moves

            self._rescan(site, transform, cursor.day, last_day, fetch_pool, commit_resent)
        finally:
            sink.close()

    def _exactly_once_start(self, idsite: int) -> tuple[Cursor, int]:
        """The site's cursor and seq: the state topic's latest committed checkpoint, which
        wins over the files (rewritten to match); without one, the files are imported (or
        START_DATE)."""
        assert self.state is not None, "exactly-once needs the state reader (Pipeline.run)"
        record = self.state.latest(idsite)
        topic = self.settings.state_topic
        if record is None:
            files = self.store.load(idsite)
            cursor = files or Cursor(self.settings.START_DATE, 0)
            source = "imported from the checkpoint files" if files else "START_DATE"
            log.info(
                "site %d: no checkpoint in the state topic %s yet: %s offset %d (%s)",
                idsite, topic, cursor.day, cursor.offset, source,
            )  # fmt: skip
            return cursor, 0
        try:
            files = self.store.load(idsite)
        except CheckpointError as exc:
            log.warning("site %d: %s; the state topic's checkpoint replaces it", idsite, exc)
            files = None
        if files != record.cursor:
            if files is not None:
                log.warning(
                    "site %d: the state topic %s says %s offset %d, the checkpoint files say %s "
                    "offset %d: the state topic wins (files updated)",
                    idsite, topic, record.cursor.day, record.cursor.offset, files.day,
                    files.offset,
                )  # fmt: skip
            else:
                log.info("site %d: checkpoint files written from the state topic %s", idsite,
                         topic)  # fmt: skip
            self._save(idsite, record.cursor)
        return record.cursor, record.seq

    def _commit(
        self,
        site: SiteReport,
        page: Page[Message],
        ack: PageAck,
        progress: _DayProgress,
    ) -> None:
        """Once Kafka acknowledged the page: checkpoint it, and the day's end if it is last."""
        self.sink.wait(ack)
        self._record_sent(site.idsite, page)
        site.cursor = self._save(site.idsite, page.next_cursor)
        self._page_counted(site, page, progress)
        if page.last:
            site.cursor = self._save(site.idsite, Cursor(page.day + timedelta(days=1), 0))
            self._day_counted(site, page, progress)

    def _record_sent(self, idsite: int, page: Page[Message]) -> None:
        """Once acknowledged: what a later re-scan compares against (see sentlog.py). Every
        day is recorded (a run that stops early may be resumed far later); `_rescan` prunes."""
        if self.sent_log is not None and page.items:
            self.sent_log.append(idsite, page.day, page.items)

    def _rescan(
        self,
        site: SiteReport,
        transform: SiteTransform,
        start_day: date,
        last_day: date,
        fetch_pool: Executor,
        deliver: Callable[[list[Message], Headers], None],
    ) -> None:
        """MATOMO_RESCAN_DAYS=N: re-reads the N days before the day this run started from
        (already sent by earlier runs) and re-sends the visits that are new or changed since;
        a re-sent visit carries the same key, so it is an update of that visit."""
        days = self.settings.MATOMO_RESCAN_DAYS
        if self.sent_log is None or not days:
            return
        idsite = site.idsite
        first = max(start_day - timedelta(days=days), self.settings.START_DATE)
        day = first
        while day < start_day and day <= last_day:
            self._rescan_day(site, transform, day, fetch_pool, deliver)
            day += timedelta(days=1)
        self.sent_log.prune(idsite, start_day - timedelta(days=days))  # later runs start later

    def _rescan_day(
        self,
        site: SiteReport,
        transform: SiteTransform,
        day: date,
        fetch_pool: Executor,
        deliver: Callable[[list[Message], Headers], None],
    ) -> None:
        assert self.sent_log is not None
        idsite = site.idsite
        known = self.sent_log.load(idsite, day)
        new = changed = unchanged = 0
        headers = [*page_headers(idsite, day.isoformat()), ("matomo.rescan", b"1")]
        for page in self._pager(idsite, transform, Cursor(day, 0), day, fetch_pool):
            self._check_stop(idsite)
            resend: list[Message] = []
            for message in page.items:
                before = known.get(visit_id(message))
                if before is None:
                    new += 1
                elif before != digest(message.value):
                    changed += 1
                else:
                    unchanged += 1
                    continue
                resend.append(message)
            if resend:
                deliver(resend, headers)
                self.sent_log.append(idsite, day, resend)
                known.update((visit_id(m), digest(m.value)) for m in resend)
        site.rescanned_days += 1
        site.rescan_new += new
        site.rescan_changed += changed
        log.info(
            "site %d: re-scan of %s: %d new, %d changed, %d unchanged%s",
            idsite, day, new, changed, unchanged,
            "" if known or not new else " (nothing recorded for that day: all re-sent)",
        )  # fmt: skip

    def _page_counted(self, site: SiteReport, page: Page[Message], progress: _DayProgress) -> None:
        count = len(page.items)
        site.pages += 1
        site.visits += count
        progress.add(page.day, count)
        self.observer.page_done(site, page.day, count)

    def _day_counted(self, site: SiteReport, page: Page[Message], progress: _DayProgress) -> None:
        site.days_done += 1
        visits, seconds = progress.finish()
        log.info("site %d: %s done, %d visits sent (%.1fs)", site.idsite, page.day, visits,
                 seconds)  # fmt: skip
        self.observer.day_done(site, page.day, visits, seconds)

    def _save(self, idsite: int, cursor: Cursor) -> Cursor:
        self.store.save(idsite, cursor)
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
