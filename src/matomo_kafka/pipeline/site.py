"""Which pages does a site send, in which order? Its custom dimensions and goals (asked for
in bulk with other sites'), the transform its visits need and its last closed day; then its
pages from its checkpoint (source/paging.py's Pager on the run's page scheduler,
source/schedule.py), up to a `follow` cycle's Horizon, then the re-scan window's days."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from matomo_kafka.clock import Clock
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import (
    CheckpointError,
    MatomoError,
    MatomoKafkaError,
    MatomoResponseError,
    OffsetBeyondDay,
    SiteAccessError,
)
from matomo_kafka.model import Cursor, Message, Page, SiteReport
from matomo_kafka.pipeline.counting import DayProgress, RunObserver
from matomo_kafka.sink.delivery import Handover
from matomo_kafka.source.client import MatomoClient, SiteInfo, SiteMetadata
from matomo_kafka.source.days import day_end, days_behind, last_closed_day, site_timezone
from matomo_kafka.source.paging import Batch, Pager, PageSizes, Request
from matomo_kafka.source.schedule import Pace, PageScheduler, Priority, Ticket, wait_for
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.transform.visits import (
    SiteTransform,
    page_messages,
    parse_dimensions,
    parse_goals,
)

#: The loop's logger, one for the whole package (log lines name it).
log = logging.getLogger("matomo_kafka.pipeline")

#: Sites whose custom dimensions and goals are read in one API.getBulkRequest.
METADATA_CHUNK = 50


@dataclass
class DayRescan:
    """The day a site is re-scanning: what was sent for it, and what the re-scan found."""

    day: date
    known: dict[int, bytes]
    listed: set[int] = field(default_factory=set)  # every idVisit of the fresh listing
    new: int = 0
    changed: int = 0
    unchanged: int = 0


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
class SiteRun:
    """One open site: its pages in order (None while waiting), and where its delivery is."""

    report: SiteReport
    steps: Generator[Page[Message] | None, None, None] = field(init=False)
    started: float = field(default_factory=time.monotonic)
    start_day: date | None = None  # the checkpoint's day when the site started
    pending: int = 0  # pages handed to the delivery and not acknowledged yet
    exhausted: bool = False  # no more pages
    failure: MatomoKafkaError | None = None
    rescan: DayRescan | None = None
    progress: DayProgress = field(default_factory=DayProgress)
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


@dataclass
class SiteReader:
    """The sites of one run (or `follow` cycle): what each needs to be read, and its pages.
    Made by the loop once the scheduler runs, from what the Pipeline holds then."""

    settings: Settings
    matomo: MatomoClient
    store: CheckpointStore
    scheduler: PageScheduler
    observer: RunObserver
    pace: Pace
    page_sizes: PageSizes
    budget: int  # the pages a site may have fetched ahead (the scheduler's budget)
    site_infos: dict[int, SiteInfo]  # every viewable site's timezone, in one request
    horizon: Horizon | None
    run_date: date | None
    clock: Clock
    once_level: int  # the level of the lines a run prints once (DEBUG in later cycles)
    named_by: str  # where the sites came from, for the line that says to remove one
    say: Callable[[str], None]  # a warning about the user's files, said once
    rescanning: bool  # MATOMO_RESCAN_DAYS, with its sent log
    transforms: dict[int, SiteTransform] = field(default_factory=dict, init=False)
    _chunks: list[list[int]] = field(default_factory=list, init=False)
    _chunk_of: dict[int, int] = field(default_factory=dict, init=False)
    _chunk_tickets: dict[int, Ticket[dict[int, SiteMetadata]]] = field(
        default_factory=dict, init=False
    )

    def chunk_sites(self, viewable: list[int]) -> None:
        """The chunks of METADATA_CHUNK sites whose metadata one API.getBulkRequest asks for
        (only sites Matomo lists for the token: the others are never asked about)."""
        self._chunks = [viewable[i : i + METADATA_CHUNK]
                        for i in range(0, len(viewable), METADATA_CHUNK)]  # fmt: skip
        self._chunk_of = {idsite: i // METADATA_CHUNK for i, idsite in enumerate(viewable)}

    def steps(
        self, run: SiteRun, handover: Handover
    ) -> Generator[Page[Message] | None, None, None]:
        """The site's pages in order (None while waiting): its metadata on a Matomo slot and,
        meanwhile, its delivery's start on a delivery thread (exactly-once: reading its
        checkpoint in the state topic), then the catch-up from its checkpoint, then the re-scan
        window's days."""
        site, idsite = run.report, run.idsite
        if idsite not in self.site_infos:
            raise not_viewable(idsite, self.named_by)
        chunk = self._metadata(idsite)
        starting = handover.start(idsite)
        metadata = (yield from wait_for(chunk))[idsite]
        transform, last_day = self.prepare_site(idsite, metadata)
        while not starting.done():
            yield None
        cursor = starting.result()
        run.start_day = run_start = cursor.day
        site.cursor, site.last_closed = cursor, last_day
        self._say_start(site, cursor, last_day)
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
        if self.rescanning and days and self._rescan_due(idsite, run_start):
            day = max(run_start - timedelta(days=days), self.settings.START_DATE)
            while day < run_start and day <= last_day:
                yield from self._pager(run, transform, Cursor(day, 0), day, rescan=True)
                day += timedelta(days=1)

    def _say_start(self, site: SiteReport, cursor: Cursor, last_day: date) -> None:
        """The site's days to read, and a checkpoint past them (nothing to read)."""
        idsite = site.idsite
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

    def _metadata(self, idsite: int) -> Ticket[dict[int, SiteMetadata]]:
        """The request of the custom dimensions and goals of the site's chunk of
        METADATA_CHUNK sites (one API.getBulkRequest), asked for by its first site to start."""
        index = self._chunk_of[idsite]
        ticket = self._chunk_tickets.get(index)
        if ticket is None:
            chunk = self._chunks[index]
            ticket = self.scheduler.submit(
                lambda: self.matomo.sites_metadata(chunk), Priority.NEEDED
            )
            self._chunk_tickets[index] = ticket
        return ticket

    def prepare_site(self, idsite: int, metadata: SiteMetadata) -> tuple[SiteTransform, date]:
        """What transforming a site's visits needs, and its last closed day (in its timezone,
        from SitesManager.getSitesWithAtLeastViewAccess)."""
        info = self.site_infos.get(idsite)
        if info is None:
            raise not_viewable(idsite, self.named_by)
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
            self.say(note)
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
        run: SiteRun,
        transform: SiteTransform,
        cursor: Cursor,
        last_day: date,
        rescan: bool = False,
    ) -> Pager[Message]:
        keyset, idsite = self.settings.MATOMO_PAGING == "keyset", run.idsite

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
