"""The run loop, in Kafka Connect's order: read pages, transform them, deliver them, and only
once Kafka has acknowledged a page, move its site's checkpoint past it.

Per site: read its timezone, custom dimensions and goals; then for each closed day from its
checkpoint (or START_DATE) read Live.getLastVisitsDetails page by page (ascending last action
time, `filter_limit` visits a page, keyset-checked boundaries: paging.py) until a short page;
then, with MATOMO_RESCAN_DAYS, re-read the days before the start and re-send what is new or
changed (sentlog.py), and send a tombstone for each visit sent for a day that Matomo's fresh
listing of the day no longer holds (erased in Matomo); at most MATOMO_MAX_ERASE a run, and
never for a day Matomo now lists empty (its retention purge). A site that Matomo refuses
fails alone; a Kafka, checkpoint or token failure stops the run, since every other site would
hit it too.

Fetching runs ahead, delivery runs in order. One page scheduler (schedule.py) keeps up to
MATOMO_MAX_CONCURRENCY Matomo requests in flight for the whole run, taking the most useful
next request of any site; pages are transformed on its parse thread. One loop
(`Pipeline._loop`) takes each site's pages strictly in order and hands them over to the
delivery (delivery.py: at-least-once, or exactly-once with the checkpoint in the same Kafka
transaction), which writes the checkpoint files of what Kafka acknowledged, each site's in
order. At most MATOMO_MAX_CONCURRENCY pages are handed over and not yet checkpointed, in all:
a kill re-sends at most that. What is fetched and not yet delivered stays under
MATOMO_MAX_BUFFER_MB, and a page asks for as many visits as fill an eighth of it (paging.py's
PageSizes), so heavy visits (hundreds of actions) keep the footprint of light ones.

Up to a horizon (`follow`, one cycle): the closed days are those that ended by the horizon
(visits whose last action is older than MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES), read as
above; then the day the horizon falls in is read up to it and stays open in the checkpoint
(paging.py). A re-scan window is re-read once per site and start day, not every cycle.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from matomo_kafka.clock import Clock, system_clock
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import (
    CheckpointError,
    Interrupted,
    KafkaDeliveryError,
    MatomoAuthError,
    MatomoError,
    MatomoKafkaError,
    MatomoResponseError,
    OffsetBeyondDay,
    SiteAccessError,
    Stopped,
    TransformError,
)
from matomo_kafka.model import Cursor, Message, Page, RunReport, SiteReport
from matomo_kafka.sink.delivery import (
    AtLeastOnce,
    Delivery,
    ExactlyOnce,
    Handover,
    Outgoing,
)
from matomo_kafka.sink.producer import KafkaSink, page_headers
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.source.client import MatomoClient, SiteInfo, SiteMetadata
from matomo_kafka.source.days import day_end, days_behind, last_closed_day, site_timezone
from matomo_kafka.source.paging import Batch, Pager, PageSizes, Request
from matomo_kafka.source.schedule import Pace, PageScheduler, Priority, Ticket, wait_for
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.state.sent_log import SentLog, digest, visit_id
from matomo_kafka.transform.visits import (
    SiteTransform,
    page_messages,
    parse_dimensions,
    parse_goals,
    unmatched_columns,
)

log = logging.getLogger(__name__)

#: Header matomo.op of each record: a visit sent for the first time, a visit sent again with
#: new content, a tombstone (docs/consumers.md).
OP_INSERT = ("matomo.op", b"insert")
OP_UPDATE = ("matomo.op", b"update")
OP_DELETE = ("matomo.op", b"delete")


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


#: Sites whose custom dimensions and goals are read in one API.getBulkRequest.
METADATA_CHUNK = 50

#: Failures every other site would hit too: the run stops (after checkpointing what Kafka
#: acknowledged). Any other MatomoError or TransformError fails its site alone.
RUN_WIDE = (MatomoAuthError, KafkaDeliveryError, CheckpointError)


@dataclass
class Horizon:
    """`follow`: this cycle reads every site up to `at` (visits whose last action is later
    wait for a later cycle). `rescanned`, kept across cycles: each site's start day of its
    last re-scan, so the re-scan window is read once a day rather than every cycle."""

    at: datetime
    rescanned: dict[int, date] = field(default_factory=dict)

    @property
    def second(self) -> int:
        return int(self.at.timestamp() // 1)


@dataclass
class _Rescan:
    """The day a site is re-scanning: what was sent for it, and what the re-scan found."""

    day: date
    known: dict[int, bytes]
    listed: set[int] = field(default_factory=set)  # every idVisit of the fresh listing
    new: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass
class _SiteRun:
    """One open site: its pages in order (None while waiting), and where its delivery is."""

    report: SiteReport
    steps: Generator[Page[Message] | None, None, None] = field(init=False)
    started: float = field(default_factory=time.monotonic)
    start_day: date | None = None  # the checkpoint's day when the site started
    pending: int = 0  # pages handed to the delivery and not acknowledged yet
    exhausted: bool = False  # no more pages
    failure: MatomoKafkaError | None = None
    rescan: _Rescan | None = None
    progress: _DayProgress = field(default_factory=lambda: _DayProgress())
    split_days: set[date] = field(default_factory=set)  # days whose page splits were logged

    @property
    def idsite(self) -> int:
        return self.report.idsite


def not_viewable(idsite: int, named_by: str = "MATOMO_ID_SITE") -> SiteAccessError:
    """A site missing from Matomo's list for the token (unknown, or not viewable): the same
    line for `run`, `follow` and `check`, naming where the site was asked for."""
    return SiteAccessError(
        f"MATOMO_API_TOKEN cannot view site {idsite}: give the token view access to it in "
        f"Matomo, or remove site {idsite} from {named_by} (Matomo lists no such site in "
        "SitesManager.getSitesWithAtLeastViewAccess)"
    )


class Pipeline:
    """Moves every closed day of every configured site from Matomo to Kafka (see above)."""

    def __init__(
        self,
        settings: Settings,
        matomo: MatomoClient,
        sink: KafkaSink,
        store: CheckpointStore,
        run_date: date | None = None,
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
        clock: Clock = system_clock,
        horizon: Horizon | None = None,
        said: set[str] | None = None,
        transactions: Transactions | None = None,
    ) -> None:
        self.settings = settings
        # Exactly-once: `follow`'s producers and claims, kept across its cycles (None: the
        # run makes its own and closes them at its end).
        self.transactions = transactions
        self._claimed = False  # exactly-once: _delivery took over the run's transactions
        # Warnings about the user's files said once: per run, or per process for `follow`
        # (which passes the same set to each cycle's pipeline).
        self.said = set() if said is None else said
        self.transforms: dict[int, SiteTransform] = {}
        self.clock = clock
        self.horizon = horizon
        # Once per cycle of `follow` is too often for the lines a run prints once.
        self.once_level = logging.DEBUG if horizon is not None else logging.INFO
        self.matomo = matomo
        self.sink = sink
        self.store = store
        self.run_date = run_date
        self.stop = stop or threading.Event()
        self.observer: RunObserver = observer or NullObserver()
        self.slots = settings.MATOMO_MAX_CONCURRENCY
        # Pages fetched (or being fetched) and not yet delivered, bar the one page each open
        # site waits for: the memory bound. Read-ahead reaches it, so a slot that frees up
        # finds its next request queued instead of waiting for the previous page's parse.
        self.budget = 2 * self.slots
        # ...and their bytes (a page's size follows its visits): an eighth of it a page.
        self.budget_bytes = settings.MATOMO_MAX_BUFFER_MB * 2**20
        self.page_sizes = PageSizes(settings.MATOMO_FILTER_LIMIT, self.budget_bytes // 8)
        self.keyset = settings.MATOMO_PAGING == "keyset"
        self.sent_log = (
            SentLog(settings.FILE_PATH_FILTERDATE) if settings.MATOMO_RESCAN_DAYS else None
        )
        self.scheduler: PageScheduler | None = None  # set while run() runs
        self.erase_left = settings.MATOMO_MAX_ERASE  # tombstones this run may still send
        self.peak_buffered = 0  # most pages fetched (or being fetched) and not yet delivered
        self.peak_buffered_bytes = 0  # ...and the most bytes they held at once
        self.pace = Pace(self.slots)  # Matomo requests in flight now (schedule.Pace)
        self.site_infos: dict[int, SiteInfo] = {}
        self._chunks: list[list[int]] = []
        self._chunk_of: dict[int, int] = {}
        self._chunk_tickets: dict[int, Ticket[dict[int, SiteMetadata]]] = {}
        #: Where the sites came from, for the line that says to remove one (`run --sites`).
        self.sites_named_by = "MATOMO_ID_SITE"

    def run(self, sites: tuple[int, ...]) -> RunReport:
        report = RunReport(sites=[SiteReport(idsite) for idsite in sites])
        early: Future[Transactions] | None = None
        try:
            # One request before the sites start together: a refused token is tried once,
            # not once per site (repeated bad logins can get the caller's IP blocked).
            log.log(self.once_level, "Matomo %s at %s", self.matomo.version(), self.matomo.api_url)
            # Matomo answers: nothing is created in Kafka for a run Matomo refuses.
            early = self._early_transactions(sites)
            # Every site's timezone in one request; dimensions and goals in bulk, by chunks.
            self.site_infos = self.matomo.sites_view_info() if sites else {}
            self._chunk_sites([idsite for idsite in sites if idsite in self.site_infos])
            delivery = self._delivery(sites, early)
        except MatomoKafkaError as exc:
            if early is not None and not self._claimed:
                with contextlib.suppress(MatomoKafkaError):
                    early.result().close()
            report.fatal = exc
            for site in report.sites:
                site.status, site.error, site.error_kind = "skipped", str(exc), type(exc).__name__
            return report
        wake = threading.Event()  # set by Matomo answers and ended deliveries: the loop wakes
        handover = Handover(delivery, self.slots, wake)
        self.matomo.on_strain = self.pace.strained
        self.pace.watchers.append(lambda level: self.observer.pace_changed(level, self.pace.cap))
        self.observer.pace_changed(self.pace.level, self.pace.cap)
        try:
            with PageScheduler(
                self.slots,
                self.budget,
                wake,
                pace=self.pace,
                budget_bytes=self.budget_bytes,
                measure=_answer_size,
            ) as scheduler:
                self.scheduler = scheduler
                self._loop(report, handover)
        finally:
            if self.scheduler is not None:
                self.peak_buffered = self.scheduler.max_outstanding
                self.peak_buffered_bytes = self.scheduler.max_bytes
            self.scheduler = None
            self.matomo.on_strain = None
            handover.close()
            delivery.close()
            report.pace_lowest, report.pace_last = self.pace.lowest, self.pace.level
        self._report_columns(report)
        return report

    def _report_columns(self, report: RunReport) -> None:
        """COLONNE_ANNOMYSE entries that matched nothing in the sites that sent visits."""
        sent = [
            (self.transforms[site.idsite], site.visits)
            for site in report.sites
            if site.idsite in self.transforms
        ]
        unmatched = unmatched_columns(sent)
        report.unmatched_columns = [entry.line for entry in unmatched]
        for entry in unmatched:
            self._say(entry.line, f"unmatched {entry.spec} {entry.sites}")

    def _say(self, line: str, key: str | None = None) -> None:
        """Logs a warning about the user's files once (per `key`, else per line)."""
        if (key or line) not in self.said:
            self.said.add(key or line)
            log.warning("config: %s", line)

    def _early_transactions(self, sites: tuple[int, ...]) -> Future[Transactions] | None:
        """Exactly-once `run`: its transactions made (the state topic checked, the reader
        and the producers started: nothing fenced, nothing claimed) while Matomo answers the
        list of sites, instead of after it."""
        if not self.settings.exactly_once or self.transactions is not None or not sites:
            return None
        future: Future[Transactions] = Future()

        def make() -> None:
            try:
                transactions = Transactions(self.settings, "run")
                transactions.start_producers()
                future.set_result(transactions)
            except BaseException as exc:  # handed to _delivery, which raises it
                future.set_exception(exc)

        threading.Thread(target=make, name="kafka-start", daemon=True).start()
        return future

    def _delivery(
        self, sites: tuple[int, ...], early: Future[Transactions] | None = None
    ) -> Delivery:
        """At-least-once on the run's producer; or exactly-once: a few transactional
        producers for all the sites, which are claimed first (sink/transactions.py: fencing
        their earlier owners, which ends the transactions a dead instance left open). The
        state topic (created compacted if missing) is read after the claim. `follow` keeps
        its transactions across cycles: only sites new to it are claimed, once."""
        if not self.settings.exactly_once:
            return AtLeastOnce(self.settings, self.sink, self.store, self._record, self.slots)
        by = "run" if self.horizon is None else "follow"
        owns = self.transactions is None
        if self.transactions is not None:
            transactions = self.transactions
        elif early is not None:
            transactions = early.result()
        else:
            transactions = Transactions(self.settings, by)
        self._claimed = True  # closed here on failure, by the delivery otherwise
        try:
            transactions.claim(sites)
        except MatomoKafkaError:
            if owns:
                transactions.close()
            raise
        log.log(
            self.once_level,
            "exactly-once: state topic %s, transactional ids %s.<0..%d>",
            self.settings.state_topic, transactions.owner.prefix,
            transactions.owner.producers - 1,
        )  # fmt: skip
        # Up to the pages a site can have fetched ahead (the scheduler's budget), in one go.
        return ExactlyOnce(self.settings, self.store, transactions, self._record, self.budget,
                           by, owns)  # fmt: skip

    # -- the one loop --------------------------------------------------------------------

    def _loop(self, report: RunReport, handover: Handover) -> None:
        """Opens sites while Matomo slots would idle, hands each site's next pages over (at
        most MATOMO_MAX_CONCURRENCY pages not yet checkpointed), counts what was delivered."""
        assert self.scheduler is not None
        scheduler, delivery = self.scheduler, handover.delivery
        waiting = deque(report.sites)
        runs: dict[int, _SiteRun] = {}
        while runs or waiting:
            self._ended(report, runs, handover)
            self._close_finished(runs, delivery)
            if self.stop.is_set() or report.fatal is not None:
                break
            progressed = False
            while waiting and len(runs) < 2 * self.slots and (not runs or scheduler.wants_work()):
                run = _SiteRun(waiting.popleft())  # a slot would idle: start the next site
                run.steps = self._site_steps(run, handover)
                runs[run.idsite] = run
                progressed |= self._step(report, run, handover)
            for run in list(runs.values()):
                if run.pending < delivery.deliveries_per_site and handover.in_flight() < self.slots:
                    progressed |= self._step(report, run, handover)
            if not progressed and (runs or waiting):
                scheduler.wait(0.25)  # until a Matomo answer or a delivery ends
        self._wind_down(report, runs, waiting, handover)

    def _step(self, report: RunReport, run: _SiteRun, handover: Handover) -> bool:
        """Advances a site to its next pages, those that are there (as many as one delivery
        takes), and hands them over."""
        if run.exhausted:
            return False
        pages: list[Page[Message]] = []
        error: MatomoKafkaError | None = None
        try:
            while len(pages) < handover.delivery.pages_per_delivery:
                page = next(run.steps)
                if page is None:
                    break
                pages.append(page)
        except StopIteration:
            run.exhausted = True
        except (MatomoError, TransformError, KafkaDeliveryError, CheckpointError) as exc:
            run.exhausted, error = True, exc  # the pages before it still go
        try:
            if pages:
                self._hand_over(run, pages, handover)
        except CheckpointError as exc:  # the sent log of a re-scan
            run.exhausted, error = True, error or exc
        if error is not None:
            self._site_failed(report, run, error)
        return bool(pages) or run.exhausted

    def _ended(
        self, report: RunReport, runs: dict[int, _SiteRun], handover: Handover, wait: bool = False
    ) -> None:
        """Takes back the pages whose delivery ended: counted, or their site failed (a Kafka
        or checkpoint failure stops the run)."""
        delivered, failed = handover.finished(wait)
        if self.scheduler is not None:
            ended = delivered + [f[0] for f in failed]
            self.scheduler.unhold(
                sum(len(outs) for outs in ended), sum(_held_bytes(outs) for outs in ended)
            )
        for outs in delivered:
            run = runs[outs[0].idsite]
            run.pending -= 1
            for out in outs:
                self._counted(run, out)
        for outs, error in failed:
            run = runs[outs[0].idsite]
            run.pending -= 1
            if not isinstance(error, MatomoKafkaError):
                raise error
            run.exhausted = True
            if run.failure is None:  # its next deliveries fail with the same error
                self._site_failed(report, run, error)

    def _wind_down(
        self,
        report: RunReport,
        runs: dict[int, _SiteRun],
        waiting: deque[SiteReport],
        handover: Handover,
    ) -> None:
        """Stopping (done, a signal or a run-wide failure): the pages already handed over
        end their delivery (checkpointed once Kafka holds them); then every site's outcome."""
        self._ended(report, runs, handover, wait=True)
        if self.stop.is_set() and report.fatal is None:
            report.fatal = Interrupted("interrupted; every site checkpointed after its last page")
        for run in runs.values():
            run.steps.close()  # cancels its queued requests
            if run.failure is None and not run.exhausted:
                reason: MatomoKafkaError
                if self.stop.is_set():
                    status = "interrupted"
                    reason = Interrupted(
                        f"interrupted; site {run.idsite} checkpointed after its last page"
                    )
                else:
                    status = "stopped"
                    reason = Stopped(
                        "stopped by another site's failure after its last acknowledged page"
                    )
                run.report.status = status
                run.report.error, run.report.error_kind = str(reason), type(reason).__name__
            self._finish(run, handover.delivery)
        runs.clear()
        for site in waiting:
            site.status = "skipped"

    def _close_finished(self, runs: dict[int, _SiteRun], delivery: Delivery) -> None:
        for run in [run for run in runs.values() if run.exhausted and not run.pending]:
            del runs[run.idsite]
            self._finish(run, delivery)

    def _finish(self, run: _SiteRun, delivery: Delivery) -> None:
        site = run.report
        if site.erase_withheld and run.failure is None and site.status == "pending":
            site.status, site.error_kind = "failed", "EraseLimit"
            site.error = (
                f"{site.erase_withheld} visit(s) erased in Matomo not tombstoned: more than "
                f"MATOMO_MAX_ERASE={self.settings.MATOMO_MAX_ERASE} in one run; they stay in "
                "Kafka: check them with `matomo-kafka reconcile`, then `reconcile --apply --yes`"
            )
            log.error("site %d: %s", site.idsite, site.error)
        if run.failure is None and run.exhausted and not run.pending and site.status == "pending":
            site.status = "done"
            if self.horizon is not None and run.start_day is not None:
                self.horizon.rescanned[site.idsite] = run.start_day
            if self.sent_log is not None and run.start_day is not None:
                # Later runs start later: the days before this run's window are not re-scanned.
                days = timedelta(days=self.settings.MATOMO_RESCAN_DAYS)
                self.sent_log.prune(site.idsite, run.start_day - days)
        site.seconds = time.monotonic() - run.started
        delivery.finish_site(site.idsite)
        self.observer.site_finished(site)

    def _site_failed(self, report: RunReport, run: _SiteRun, exc: MatomoKafkaError) -> None:
        site = run.report
        run.failure = exc
        site.status, site.error, site.error_kind = "failed", str(exc), type(exc).__name__
        log.error("site %d: %s", site.idsite, exc)
        run.steps.close()
        if isinstance(exc, RUN_WIDE):
            self._set_fatal(report, exc)

    @staticmethod
    def _set_fatal(report: RunReport, exc: MatomoKafkaError) -> None:
        """The first run-wide failure wins; the other sites stop after their last page."""
        if report.fatal is None:
            report.fatal = exc

    # -- one site's pages ----------------------------------------------------------------

    def _site_steps(
        self, run: _SiteRun, handover: Handover
    ) -> Generator[Page[Message] | None, None, None]:
        """The site's pages in order (None while waiting): its metadata on a Matomo slot and,
        meanwhile, its delivery's start on a delivery thread (exactly-once: reading its
        checkpoint in the state topic), then the catch-up from its checkpoint, then the re-scan
        window's days."""
        assert self.scheduler is not None
        site, idsite = run.report, run.idsite
        if idsite not in self.site_infos:
            raise self._not_viewable(idsite)
        chunk = self._metadata(idsite)
        starting = handover.start(idsite)
        metadata = (yield from wait_for(chunk))[idsite]
        transform, last_day = self.prepare_site(idsite, metadata)
        while not starting.done():
            yield None
        cursor = starting.result()
        run.start_day = run_start = cursor.day
        site.cursor, site.last_closed = cursor, last_day
        behind = days_behind(cursor.day, last_day)
        log.log(
            logging.INFO if behind else self.once_level,
            "site %d: from %s (offset %d) to %s, %d day(s) to read%s",
            idsite, cursor.day, cursor.offset, last_day, behind,
            "" if self.horizon is None else f", then up to {self.horizon.at:%Y-%m-%d %H:%M:%S}Z",
        )  # fmt: skip
        self.observer.site_started(site, cursor.day)
        # A run says it each time; follow at its first cycle (once_level: INFO only then).
        ahead = cursor.day > last_day + timedelta(days=1)
        if ahead and (self.horizon is None or self.once_level == logging.INFO):
            log.warning(
                "site %d: its checkpoint is at %s, after the day after the last closed day "
                "(%s): nothing to read; the days before %s are never read unless the "
                "checkpoint is moved back (matomo-kafka reset --site %d --date <day>)",
                idsite, cursor.day, last_day, cursor.day, idsite,
            )  # fmt: skip
        try:
            yield from self._pager(run, transform, cursor, last_day)
        except OffsetBeyondDay as exc:
            raise CheckpointError(
                f"checkpoint {self._checkpoint_name(idsite)} holds offset {exc.offset} for "
                f"{exc.day}, more visits than Matomo lists for that day (the visits at "
                f"{exc.offset} and just before are not there): fix it (0 re-sends the whole "
                f"day) or `matomo-kafka reset --site {idsite} --date {exc.day}`; nothing was "
                "sent for the site"
            ) from None
        days = self.settings.MATOMO_RESCAN_DAYS
        if self.sent_log is not None and days and self._rescan_due(idsite, run_start):
            day = max(run_start - timedelta(days=days), self.settings.START_DATE)
            while day < run_start and day <= last_day:
                yield from self._pager(run, transform, Cursor(day, 0), day, rescan=True)
                day += timedelta(days=1)

    def _checkpoint_name(self, idsite: int) -> str:
        """Where the site's offset is kept, as an operator would look for it."""
        path = self.store.offset_path(idsite)
        if self.settings.exactly_once:
            return f"of site {idsite} (state topic {self.settings.state_topic}, files {path})"
        return str(path)

    def _rescan_due(self, idsite: int, run_start: date) -> bool:
        """A run re-scans every time; `follow` once per site and start day (the first cycle,
        then the first after each midnight), recorded when the site is done."""
        return self.horizon is None or self.horizon.rescanned.get(idsite) != run_start

    def _chunk_sites(self, viewable: list[int]) -> None:
        """The chunks of METADATA_CHUNK sites whose metadata one API.getBulkRequest asks for
        (only sites Matomo lists for the token: the others are never asked about)."""
        self._chunks = [viewable[i : i + METADATA_CHUNK]
                        for i in range(0, len(viewable), METADATA_CHUNK)]  # fmt: skip
        self._chunk_of = {idsite: i // METADATA_CHUNK for i, idsite in enumerate(viewable)}

    def _metadata(self, idsite: int) -> Ticket[dict[int, SiteMetadata]]:
        """The request of the custom dimensions and goals of the site's chunk of
        METADATA_CHUNK sites (one API.getBulkRequest), asked for by its first site to start."""
        assert self.scheduler is not None
        index = self._chunk_of[idsite]
        ticket = self._chunk_tickets.get(index)
        if ticket is None:
            chunk = self._chunks[index]
            ticket = self.scheduler.submit(
                lambda: self.matomo.sites_metadata(chunk), Priority.NEEDED
            )
            self._chunk_tickets[index] = ticket
        return ticket

    def _not_viewable(self, idsite: int) -> SiteAccessError:
        return not_viewable(idsite, self.sites_named_by)

    def prepare_site(self, idsite: int, metadata: SiteMetadata) -> tuple[SiteTransform, date]:
        """What transforming a site's visits needs, and its last closed day (in its timezone,
        from SitesManager.getSitesWithAtLeastViewAccess)."""
        info = self.site_infos.get(idsite)
        if info is None:
            raise self._not_viewable(idsite)
        if isinstance(metadata, MatomoError):
            raise metadata
        dimensions, goals = metadata
        try:
            tz = site_timezone(info.timezone)
        except ValueError as exc:
            raise MatomoResponseError(f"site {idsite}: {exc}") from None
        transform = SiteTransform.build(
            idsite,
            parse_dimensions(dimensions, idsite),
            parse_goals(goals, idsite),
            self.settings.COLONNE_ANNOMYSE,
            self.settings.SALAGE.get_secret_value() if self.settings.SALAGE else None,
        )
        self.transforms[idsite] = transform
        for note in transform.notes:
            self._say(note)
        if self.horizon is not None:  # closed: the days that ended by the horizon
            return transform, last_closed_day(tz, None, now=self.horizon.at)
        settle = self.settings.MATOMO_SETTLE_MINUTES
        last_day = last_closed_day(tz, self.run_date, now=self.clock(), settle_minutes=settle)
        if self.run_date is not None and last_day < self.run_date - timedelta(days=1):
            log.info(
                "site %d: --run-date %s asks for days up to %s, but only days up to %s are "
                "closed and settled (MATOMO_SETTLE_MINUTES=%d, timezone %s)",
                idsite, self.run_date, self.run_date - timedelta(days=1), last_day, settle,
                info.timezone,
            )  # fmt: skip
        return transform, last_day

    def _pager(
        self,
        run: _SiteRun,
        transform: SiteTransform,
        cursor: Cursor,
        last_day: date,
        rescan: bool = False,
    ) -> Pager[Message]:
        assert self.scheduler is not None
        keyset, idsite = self.keyset, run.idsite

        def fetch(request: Request) -> tuple[bytes, float]:  # on a Matomo slot
            started = time.monotonic()
            raw = self.matomo.visits_page_raw(
                idsite, request.day, request.limit, request.offset, request.after, split=True
            )
            return raw, time.monotonic() - started

        def split(day: date, sent: int, limit: int, reason: str) -> None:
            run.report.pages_split += 1
            if day not in run.split_days:  # once a day: a heavy day may split every page
                run.split_days.add(day)
                log.warning(
                    "site %d: %s: a page too heavy for Matomo is asked for again in pages of "
                    "%d visits, from %d visits of the day on (%s); the next pages go back to "
                    "their usual size (at most %d)", idsite, day, limit, sent, reason,
                    self.settings.MATOMO_FILTER_LIMIT,
                )  # fmt: skip

        horizon = None if rescan or self.horizon is None else self.horizon.second
        stamps = keyset or horizon is not None  # the last action times the pager needs

        def parse(request: Request, answer: tuple[bytes, float]) -> Batch[Message]:
            # On the parse thread: the page leaves already serialised, so only compact bytes
            # wait for their turn to be delivered. Full pages tell the pace Matomo's speed.
            raw, seconds = answer
            batch = page_messages(raw, idsite, request.day, request.limit, transform, stamps)
            full = len(batch.items) >= request.limit == self.settings.MATOMO_FILTER_LIMIT
            self.pace.answered(seconds, full)
            return batch

        tz = site_timezone(self.site_infos[idsite].timezone)

        def ends_at(day: date) -> int:  # the Unix second the site's day ends at
            return int(day_end(day, tz).timestamp())

        limit = self.settings.MATOMO_FILTER_LIMIT
        submit = self.scheduler.submit
        return Pager(
            fetch, submit, cursor, last_day, limit, self.budget, keyset, rescan, parse=parse,
            on_split=split, horizon=horizon, day_end=ends_at if stamps else None,
            sizes=self.page_sizes,
        )  # fmt: skip

    # -- delivery and checkpoints --------------------------------------------------------

    def _hand_over(self, run: _SiteRun, pages: list[Page[Message]], handover: Handover) -> None:
        """Catch-up pages go as they are, with the checkpoint each moves to; re-scan pages
        only with their visits that are new or changed since they were sent, and a day's last
        re-scan page with the tombstones of the visits erased since (same delivery: in
        exactly-once, the same transaction). Header matomo.op says insert, update or delete."""
        idsite = run.idsite
        outs: list[Outgoing] = []
        for page in pages:
            headers = page_headers(idsite, page.day.isoformat())
            if not page.rescan:
                insert = [*headers, OP_INSERT]
                outs.append(Outgoing(idsite, page, page.items, insert, page.checkpoint))
                continue
            inserts, updates, tombstones = self._rescan_filter(run, page)
            rescan = [*headers, ("matomo.rescan", b"1")]
            for messages, op in ((inserts, OP_INSERT), (updates, OP_UPDATE)):
                if messages:
                    outs.append(Outgoing(idsite, page, messages, [*rescan, op], None))
            if tombstones:
                outs.append(Outgoing(idsite, page, tombstones, [*rescan, OP_DELETE], None))
        if outs:
            run.pending += 1
            handover.send(outs)
            assert self.scheduler is not None
            # In memory until delivered: within the budget.
            self.scheduler.hold(len(outs), _held_bytes(outs))

    def _rescan_filter(
        self, run: _SiteRun, page: Page[Message]
    ) -> tuple[list[Message], list[Message], list[Message]]:
        """The page's visits never sent (inserts), those changed since (updates: late actions,
        Matomo's anonymisation) and, on the day's last page, the tombstones of the visits
        sent for the day that the listing no longer holds."""
        assert self.sent_log is not None
        state = run.rescan
        if state is None or state.day != page.day:
            state = run.rescan = _Rescan(page.day, self.sent_log.load(run.idsite, page.day))
        inserts: list[Message] = []
        updates: list[Message] = []
        for message in page.items:
            idvisit = visit_id(message)
            state.listed.add(idvisit)
            before = state.known.get(idvisit)
            if before is None:
                state.new += 1
                inserts.append(message)
            elif before != digest(message.value):
                state.changed += 1
                updates.append(message)
            else:
                state.unchanged += 1
        state.known.update((visit_id(m), digest(m.value)) for m in (*inserts, *updates))
        tombstones: list[Message] = []
        if page.last:
            site = run.report
            tombstones = self._tombstones(run, state)
            site.rescanned_days += 1
            site.rescan_new += state.new
            site.rescan_changed += state.changed
            log.info(
                "site %d: re-scan of %s: %d new, %d changed, %d unchanged, %d erased%s",
                run.idsite, page.day, state.new, state.changed, state.unchanged,
                len(tombstones), " (nothing recorded for that day: all re-sent)"
                if state.new and not state.changed and not state.unchanged else "",
            )  # fmt: skip
        return inserts, updates, tombstones

    def _tombstones(self, run: _SiteRun, state: _Rescan) -> list[Message]:
        """Tombstones of the visits sent for the day that Matomo no longer lists, unless the
        whole day is gone (Matomo's retention purge: reported, the visits stay in Kafka) or
        they would take the run past MATOMO_MAX_ERASE (reported, the site fails, nothing is
        erased: the sent log keeps them for `reconcile`). A visit sent for the next day is not
        erased (it moved there: Matomo servers that do not split visits at midnight)."""
        assert self.sent_log is not None
        site, day = run.report, state.day
        gone = sorted(set(state.known) - state.listed)
        if not gone:
            return []
        if not state.listed:
            site.purged_days.append(day)
            log.warning(
                "site %d: %s: Matomo now lists no visit for this day, %d were sent: purged by "
                "Matomo (delete old raw data)? Not erased from Kafka; `matomo-kafka reconcile "
                "--erase-purged-days` would", run.idsite, day, len(gone),
            )  # fmt: skip
            return []
        moved = self.sent_log.load(run.idsite, day + timedelta(days=1))
        gone = [idvisit for idvisit in gone if idvisit not in moved]
        if len(gone) > self.erase_left:
            site.erase_withheld += len(gone)
            log.error(
                "site %d: %s: %d visit(s) sent are no longer in Matomo, more than the %d "
                "tombstone(s) left under MATOMO_MAX_ERASE=%d: none sent for this day",
                run.idsite, day, len(gone), self.erase_left, self.settings.MATOMO_MAX_ERASE,
            )  # fmt: skip
            return []
        self.erase_left -= len(gone)
        site.rescan_erased += len(gone)
        for idvisit in gone:
            state.known.pop(idvisit, None)
            log.info("site %d: %s: tombstone for %d:%d (erased in Matomo)", run.idsite, day,
                     run.idsite, idvisit)  # fmt: skip
        return [Message(f"{run.idsite}:{idvisit}".encode(), None) for idvisit in gone]

    def _record(self, out: Outgoing) -> None:
        """Kafka holds the page (on a delivery thread): record what was sent, then move the
        checkpoint past it."""
        if self.sent_log is not None and out.messages:
            # Every day is recorded (a run that stops early may be resumed far later).
            self.sent_log.append(out.idsite, out.day, out.messages)
        if out.cursor is not None:  # a re-scan page moves no checkpoint
            self.store.save(out.idsite, out.cursor)

    def _counted(self, run: _SiteRun, out: Outgoing) -> None:
        """The page is delivered and checkpointed: the site's figures and progress."""
        if out.cursor is None:
            return
        site, page = run.report, out.page
        site.cursor = out.cursor
        count = len(page.items)
        site.pages += 1
        site.visits += count
        if page.newest is not None and (site.newest is None or page.newest > site.newest):
            site.newest = page.newest
        run.progress.add(page.day, count)
        self.observer.page_done(site, page.day, count)
        if page.last:
            site.days_done += 1
            visits, seconds = run.progress.finish()
            if self.horizon is None:  # ops/progress.py drops this very line beside its own
                log.info("site %d: %s done, %d visits sent (%.1fs)", site.idsite, page.day,
                         visits, seconds)  # fmt: skip
            else:
                log.info("site %d: %s done, %d visits sent by this cycle (%.1fs)", site.idsite,
                         page.day, visits, seconds)  # fmt: skip
            self.observer.day_done(site, page.day, visits, seconds)


def _answer_size(result: object) -> int | None:
    """The bytes a page fetched holds in memory, for the scheduler's byte budget: its
    answer's (the messages it became are about as big)."""
    return result.size if isinstance(result, Batch) and result.size else None


def _held_bytes(outs: list[Outgoing]) -> int:
    """The bytes of the pages handed over (their messages), until their delivery ends."""
    return sum(len(message.value or b"") for out in outs for message in out.page.items)


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
