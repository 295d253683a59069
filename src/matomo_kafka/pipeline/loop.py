"""The run's loop: which site goes next, and when is the run over? It opens sites while Matomo
slots would idle, takes each site's pages strictly in order (site.py), hands them over to the
run's delivery (guarantee.py, sink/delivery.py: at-least-once, or exactly-once with the
checkpoint in the same Kafka transaction) as what each page sends (rescan.py), counts what
Kafka acknowledged (counting.py), and winds down: every site's outcome, the run's report."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import date

from matomo_kafka.clock import Clock, system_clock
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import (
    CheckpointError,
    Interrupted,
    KafkaDeliveryError,
    MatomoAuthError,
    MatomoError,
    MatomoKafkaError,
    Stopped,
    TransformError,
)
from matomo_kafka.model import Message, Page, RunReport, SiteReport
from matomo_kafka.pipeline.counting import NullObserver, RunObserver, counted
from matomo_kafka.pipeline.guarantee import DeliveryStart
from matomo_kafka.pipeline.rescan import Rescans, outgoing
from matomo_kafka.pipeline.site import Horizon, SiteReader, SiteRun
from matomo_kafka.sink.delivery import Delivery, Handover, Outgoing
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.source.client import MatomoClient, SiteInfo
from matomo_kafka.source.paging import Batch, PageSizes
from matomo_kafka.source.schedule import Pace, PageScheduler
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.transform.visits import SiteTransform, unmatched_columns

#: The loop's logger, one for the whole package: log lines name it (matomo_kafka.pipeline).
log = logging.getLogger("matomo_kafka.pipeline")

#: Failures every other site would hit too: the run stops (after checkpointing what Kafka
#: acknowledged). Any other MatomoError or TransformError fails its site alone.
RUN_WIDE = (MatomoAuthError, KafkaDeliveryError, CheckpointError)


class Pipeline:
    """Moves every closed day of every configured site from Matomo to Kafka (the package's
    docstring, pipeline/__init__.py, says how)."""

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
        # Warnings about the user's files said once: per run, or per process for `follow`
        # (which passes the same set to each cycle's pipeline).
        self.said = set() if said is None else said
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
        # The re-scans' sent log and tombstones (rescan.py), with MATOMO_RESCAN_DAYS.
        self.rescans = Rescans(settings) if settings.MATOMO_RESCAN_DAYS else None
        self.scheduler: PageScheduler | None = None  # set while run() runs
        self.peak_buffered = 0  # most pages fetched (or being fetched) and not yet delivered
        self.peak_buffered_bytes = 0  # ...and the most bytes they held at once
        self.pace = Pace(self.slots)  # Matomo requests in flight now (schedule.Pace)
        #: Where the sites came from, for the line that says to remove one (`run --sites`).
        self.sites_named_by = "MATOMO_ID_SITE"

    def run(self, sites: tuple[int, ...]) -> RunReport:
        report = RunReport(sites=[SiteReport(idsite) for idsite in sites])
        by = "run" if self.horizon is None else "follow"
        start = DeliveryStart(self.settings, self.sink, self.store, self._record, self.slots,
                              self.budget, self.transactions, by, self.once_level)  # fmt: skip
        try:
            # One request before the sites start together: a refused token is tried once,
            # not once per site (repeated bad logins can get the caller's IP blocked).
            log.log(self.once_level, "Matomo %s at %s", self.matomo.version(), self.matomo.api_url)
            # Matomo answers: nothing is created in Kafka for a run Matomo refuses.
            start.early(sites)
            # Every site's timezone in one request; dimensions and goals in bulk, by chunks.
            site_infos = self.matomo.sites_view_info() if sites else {}
            delivery = start.open(sites)
        except MatomoKafkaError as exc:
            start.abandon()
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
                reader = self._reader(scheduler, site_infos, sites)
                self._loop(report, handover, reader)
        finally:
            if self.scheduler is not None:
                self.peak_buffered = self.scheduler.max_outstanding
                self.peak_buffered_bytes = self.scheduler.max_bytes
            self.scheduler = None
            self.matomo.on_strain = None
            handover.close()
            delivery.close()
            report.pace_lowest, report.pace_last = self.pace.lowest, self.pace.level
        self._report_columns(report, reader.transforms)
        return report

    def _reader(
        self, scheduler: PageScheduler, site_infos: dict[int, SiteInfo], sites: tuple[int, ...]
    ) -> SiteReader:
        """The sites' reading on the run's scheduler, with what this Pipeline holds now
        (`follow` and `run --sites` set some of it after making the Pipeline)."""
        reader = SiteReader(
            settings=self.settings, matomo=self.matomo, store=self.store, scheduler=scheduler,
            observer=self.observer, pace=self.pace, page_sizes=self.page_sizes,
            budget=self.budget, site_infos=site_infos, horizon=self.horizon,
            run_date=self.run_date, clock=self.clock, once_level=self.once_level,
            named_by=self.sites_named_by, say=self._say, rescanning=self.rescans is not None,
        )  # fmt: skip
        # Dimensions and goals in bulk, by chunks of the sites Matomo lists for the token.
        reader.chunk_sites([idsite for idsite in sites if idsite in site_infos])
        return reader

    def _report_columns(self, report: RunReport, transforms: dict[int, SiteTransform]) -> None:
        """COLONNE_ANNOMYSE entries that matched nothing in the sites that sent visits."""
        sent = [
            (transforms[site.idsite], site.visits)
            for site in report.sites
            if site.idsite in transforms
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

    # -- the one loop --------------------------------------------------------------------

    def _loop(self, report: RunReport, handover: Handover, reader: SiteReader) -> None:
        """Opens sites while Matomo slots would idle, hands each site's next pages over (at
        most MATOMO_MAX_CONCURRENCY pages not yet checkpointed), counts what was delivered."""
        assert self.scheduler is not None
        scheduler, delivery = self.scheduler, handover.delivery
        waiting = deque(report.sites)
        runs: dict[int, SiteRun] = {}
        while runs or waiting:
            self._ended(report, runs, handover)
            self._close_finished(runs, delivery)
            if self.stop.is_set() or report.fatal is not None:
                break
            progressed = False
            while waiting and len(runs) < 2 * self.slots and (not runs or scheduler.wants_work()):
                run = SiteRun(waiting.popleft())  # a slot would idle: start the next site
                run.steps = reader.steps(run, handover)
                runs[run.idsite] = run
                progressed |= self._step(report, run, handover)
            for run in list(runs.values()):
                if run.pending < delivery.deliveries_per_site and handover.in_flight() < self.slots:
                    progressed |= self._step(report, run, handover)
            if not progressed and (runs or waiting):
                scheduler.wait(0.25)  # until a Matomo answer or a delivery ends
        self._wind_down(report, runs, waiting, handover)

    def _step(self, report: RunReport, run: SiteRun, handover: Handover) -> bool:
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
        self, report: RunReport, runs: dict[int, SiteRun], handover: Handover, wait: bool = False
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
                counted(run.report, run.progress, out, self.observer, self.horizon is not None)
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
        runs: dict[int, SiteRun],
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

    def _close_finished(self, runs: dict[int, SiteRun], delivery: Delivery) -> None:
        for run in [run for run in runs.values() if run.exhausted and not run.pending]:
            del runs[run.idsite]
            self._finish(run, delivery)

    def _finish(self, run: SiteRun, delivery: Delivery) -> None:
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
            if self.rescans is not None and run.start_day is not None:
                self.rescans.site_done(site.idsite, run.start_day)
        site.seconds = time.monotonic() - run.started
        delivery.finish_site(site.idsite)
        self.observer.site_finished(site)

    def _site_failed(self, report: RunReport, run: SiteRun, exc: MatomoKafkaError) -> None:
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

    # -- delivery and checkpoints --------------------------------------------------------

    def _hand_over(self, run: SiteRun, pages: list[Page[Message]], handover: Handover) -> None:
        """The site's next pages go to the delivery, as what each sends (rescan.py)."""
        outs = outgoing(run, pages, self.rescans)
        if outs:
            run.pending += 1
            handover.send(outs)
            assert self.scheduler is not None
            # In memory until delivered: within the budget.
            self.scheduler.hold(len(outs), _held_bytes(outs))

    def _record(self, out: Outgoing) -> None:
        """Kafka holds the page (on a delivery thread): record what was sent, then move the
        checkpoint past it."""
        if self.rescans is not None:
            self.rescans.sent(out)
        if out.cursor is not None:  # a re-scan page moves no checkpoint
            self.store.save(out.idsite, out.cursor)


def _answer_size(result: object) -> int | None:
    """The bytes a page fetched holds in memory, for the scheduler's byte budget: its
    answer's (the messages it became are about as big)."""
    return result.size if isinstance(result, Batch) and result.size else None


def _held_bytes(outs: list[Outgoing]) -> int:
    """The bytes of the pages handed over (their messages), until their delivery ends."""
    return sum(len(message.value or b"") for out in outs for message in out.page.items)
