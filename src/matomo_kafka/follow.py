"""`follow`: the pipeline as a service. Every MATOMO_FOLLOW_INTERVAL a cycle brings each site up
to the horizon, now - MATOMO_VISIT_LENGTH - MATOMO_SETTLE_MINUTES: Matomo ends a visit after
that much inactivity, so a visit whose last action is older no longer changes (but for late
tracking, the re-scan window's business). A cycle is one pipeline run (pipeline/, with a
Horizon): the closed days still due, exactly as `run` reads them, then the day the horizon falls
in, up to it, from the keyset boundary of the previous cycle. Checkpoints keep the seed's
meaning, so a daily `run` can take over from the same files, and the other way round.

A cycle that fails is logged, and its failed sites are retried at the next cycles with a
back-off (the interval, doubled at each failure, up to an hour); the others carry on. What a
retry cannot fix stops the service with its exit code: a refused token or gateway login (1,
and retrying could get the host banned), an invalid configuration (2), another instance
holding or fencing the sites (3). SIGTERM/SIGINT stop it after the page in flight: exit 0.

With MATOMO_ID_SITE=all, Matomo's list of sites is asked for again before every cycle but the
first (a service runs for weeks; sites get created): a new site (of this shard) joins once its
checkpoint is locked, from its checkpoint or START_DATE; one another instance holds waits, and
is tried again at each cycle; a site no longer listed is no longer cycled. A list Matomo cannot
give keeps the sites followed so far; a refused token stops the service, as in a cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from matomo_kafka.clock import Clock
from matomo_kafka.clock_skew import SkewWatch
from matomo_kafka.config.kafka_clients import transaction_timeout_ms
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import (
    ConfigError,
    FencedError,
    Interrupted,
    LockedError,
    MatomoAuthError,
    MatomoKafkaError,
    TopicChangedError,
)
from matomo_kafka.model import DISABLED, RunReport, SiteReport
from matomo_kafka.ops.follow_metrics import FollowMetrics
from matomo_kafka.ops.health import Health
from matomo_kafka.pipeline import Horizon, NullObserver, Pipeline
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.paging import PageSizes
from matomo_kafka.source.sites import Shard, resolve_all_sites, skip_disabled_sites
from matomo_kafka.state.checkpoint_files import CheckpointLock, CheckpointStore
from matomo_kafka.state.topic_id import TopicGuard

log = logging.getLogger(__name__)

#: The longest pause before a failed site is tried again (unless the interval is longer).
MAX_BACKOFF_S = 3600.0

#: Failures a retry cannot fix: the service stops with their exit code.
FINAL = (MatomoAuthError, ConfigError, LockedError, FencedError, TopicChangedError)


def backoff(interval: float, failures: int) -> float:
    """Seconds before a site that failed `failures` cycles in a row is tried again: the next
    cycle first, then twice as long each time, up to an hour (or the interval, if longer)."""
    wait: float = interval * 2.0 ** max(0, failures - 1)
    return min(wait, max(interval, MAX_BACKOFF_S))


def stale_after(settings: Settings) -> float:
    """Seconds a cycle may go without progress (a site started or finished, a page
    delivered) before /readyz says it is stuck: twice the interval, and never less than the
    longest a healthy cycle can wait for one page: a Matomo request through all its retries
    (each up to MATOMO_TIMEOUT, each wait up to MATOMO_RETRY_MAX_WAIT), then Kafka's
    delivery (or transaction) timeout and the sink's 30 s of grace."""
    attempts = settings.MATOMO_MAX_RETRIES + 1
    request = attempts * (settings.MATOMO_TIMEOUT + settings.MATOMO_RETRY_MAX_WAIT)
    kafka = transaction_timeout_ms(settings) / 1000 + 30.0
    return max(2.0 * settings.MATOMO_FOLLOW_INTERVAL, request + kafka)


class _Progress(NullObserver):
    """Tells the health endpoint that the cycle under way moves on (see stale_after)."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def site_started(self, site: SiteReport, first_day: date) -> None:
        self.health.progressed()

    def page_done(self, site: SiteReport, day: date, visits: int) -> None:
        self.health.progressed()

    def site_finished(self, site: SiteReport) -> None:
        self.health.progressed()


@dataclass(frozen=True)
class SiteChanges:
    """What Matomo's list of sites changes in the sites followed, each in ascending order."""

    added: tuple[int, ...]
    dropped: tuple[int, ...]


def site_changes(
    followed: Iterable[int], listed: Iterable[int], shard: Shard | None
) -> SiteChanges:
    """The sites of `listed` this instance should follow (its shard's, as at start) that it
    does not yet, and those it follows that `listed` no longer has."""
    listed = tuple(listed)
    mine = set(listed if shard is None else shard.select(listed))
    current = set(followed)
    return SiteChanges(tuple(sorted(mine - current)), tuple(sorted(current - mine)))


@dataclass
class Listing:
    """MATOMO_ID_SITE=all: what re-listing the sites needs. `lock`: the checkpoint locks the
    command holds for the service's life, new sites' added to it; `locked`: the sites it
    holds (a site dropped keeps its lock: if it comes back, it is ours already); `warned`:
    new sites said to be locked by another process (said once, tried at every cycle)."""

    shard: Shard | None
    lock: CheckpointLock
    locked: set[int]
    warned: set[int] = field(default_factory=set)


@dataclass
class Cycle:
    """What one cycle did: the pipeline's report, up to when, how long it took."""

    number: int
    horizon: Horizon
    report: RunReport
    seconds: float


@dataclass
class _Sites:
    """Each site's failures in a row and when it is due again (monotonic seconds)."""

    ids: tuple[int, ...]
    failures: dict[int, int] = field(default_factory=dict)
    due_at: dict[int, float] = field(default_factory=dict)
    warned_disabled: set[int] = field(default_factory=set)

    def due(self, now: float) -> tuple[int, ...]:
        return tuple(idsite for idsite in self.ids if self.due_at.get(idsite, 0.0) <= now)

    def next_due(self) -> float:
        return min((self.due_at.get(idsite, 0.0) for idsite in self.ids), default=0.0)


class Follower:
    """Runs cycles until stopped; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        matomo: MatomoClient,
        sink: KafkaSink,
        store: CheckpointStore,
        sites: tuple[int, ...],
        stop: threading.Event,
        clock: Clock,
        health: Health,
        metrics: FollowMetrics,
        listing: Listing | None = None,
    ) -> None:
        self.settings = settings
        self.matomo = matomo
        self.sink = sink
        self.store = store
        self.sites = _Sites(sites)
        self.stop = stop
        self.clock = clock
        self.health = health
        self.metrics = metrics
        self.listing = listing  # None: an explicit list of sites, never asked again
        self.interval = settings.MATOMO_FOLLOW_INTERVAL
        self.rescanned: dict[int, date] = {}  # Horizon.rescanned, kept across cycles
        self.said: set[str] = set()  # warnings about parm/ said once per process
        self.page_sizes: PageSizes | None = None  # the bytes a visit measured, kept too
        self.cycles = 0
        self.skew = SkewWatch(60.0 * settings.MATOMO_SETTLE_MINUTES)
        # The topic's id against the checkpoints' (cli: --accept-new-topic sets accept_new).
        self.topic_guard = TopicGuard(settings)
        # Exactly-once: the producers and the claims of the sites, for the process's life
        # (made again, claiming every site anew, only after a transaction failed).
        self.transactions: Transactions | None = None

    def close(self) -> None:
        """Drops the transactional producers (exactly-once), if any."""
        if self.transactions is not None:
            self.transactions.close()
            self.transactions = None

    def _transactions(self) -> Transactions | None:
        """Exactly-once: the process's transactions, made at the first cycle, and again after
        one failed (its producers may be unusable, a commit's outcome unknown): the new ones
        claim every site again, which fences the old ones' ids."""
        if not self.settings.exactly_once:
            return None
        if self.transactions is not None and self.transactions.broken:
            log.info("follow: exactly-once: new transactional producers after the failure")
            self.close()
        if self.transactions is None:
            self.transactions = Transactions(self.settings, "follow")
        return self.transactions

    def run(self) -> MatomoKafkaError | None:
        """Cycles until a signal (None: exit 0) or a failure no retry can fix (returned: the
        service exits with its code)."""
        while not self.stop.is_set():
            started = time.monotonic()
            refused = self.refresh()
            if refused is not None:
                return refused
            due = self.sites.due(started)
            if due or not self.sites.ids:
                fatal = self.cycle(due).report.fatal
                if isinstance(fatal, Interrupted):
                    return None
                if isinstance(fatal, FINAL):
                    return fatal
            wake = max(started + self.interval, self.sites.next_due())
            self.stop.wait(max(0.0, wake - time.monotonic()))
        return None

    def refresh(self) -> MatomoKafkaError | None:
        """MATOMO_ID_SITE=all, before each cycle but the first (the list was just asked for):
        new sites join, sites gone leave. A refused token is returned: the service stops, as
        after a cycle (retrying risks an IP ban). Any other failure, an empty list included,
        keeps the sites followed so far."""
        if self.listing is None or self.cycles == 0:
            return None
        try:
            listed = resolve_all_sites(self.matomo)
        except MatomoAuthError as exc:
            log.error("follow: listing the sites: %s: the service stops", type(exc).__name__)
            return exc
        except MatomoKafkaError as exc:
            log.warning("follow: cannot list the sites (%s); the %d site(s) followed so far go "
                        "on", exc, len(self.sites.ids))  # fmt: skip
            return None
        changes = site_changes(self.sites.ids, listed, self.listing.shard)
        self._drop(changes.dropped)
        self._add(changes.added)
        return None

    def _add(self, new: tuple[int, ...]) -> None:
        """The new sites whose checkpoints could be locked are followed from this cycle on,
        from their checkpoint or START_DATE; the others wait for the next."""
        assert self.listing is not None
        self.listing.warned.intersection_update(new)  # a site no longer new is said afresh
        added = [idsite for idsite in new if self._lock_new(idsite)]
        if added:
            self.sites.ids = tuple(sorted({*self.sites.ids, *added}))
            log.info("follow: site(s) %s added (new in Matomo's list), each from its checkpoint "
                     "or START_DATE", ",".join(map(str, added)))  # fmt: skip

    def _lock_new(self, idsite: int) -> bool:
        """Locks a new site's checkpoint beside the others (or finds it held already); False
        while another process holds it (said once) or the lock file cannot be made."""
        listing = self.listing
        assert listing is not None
        if idsite in listing.locked:
            return True
        try:
            self.store.lock_more(listing.lock, idsite)
        except MatomoKafkaError as exc:
            if idsite not in listing.warned:
                listing.warned.add(idsite)
                why = str(exc)
                if isinstance(exc, LockedError):
                    pid = f" (pid {exc.holder})" if exc.holder else ""
                    why = f"another instance{pid} holds its checkpoint lock"
                log.warning("follow: site %d, new in Matomo's list, is not followed: %s; tried "
                            "again at each cycle", idsite, why)  # fmt: skip
            return False
        listing.locked.add(idsite)
        listing.warned.discard(idsite)
        return True

    def _drop(self, gone: tuple[int, ...]) -> None:
        """Sites Matomo no longer lists (deleted, or the token lost its view access): no
        longer cycled, nor reported by the health endpoint or the lag metrics. Their locks
        stay held until the service exits; their checkpoints stay as they are."""
        if not gone:
            return
        self.sites.ids = tuple(idsite for idsite in self.sites.ids if idsite not in gone)
        for idsite in gone:
            self.sites.failures.pop(idsite, None)
            self.sites.due_at.pop(idsite, None)
            self.metrics.forget(idsite)
        log.warning("follow: site(s) %s no longer in Matomo's list (deleted, or the token lost "
                    "its view access): no longer followed", ",".join(map(str, gone)))  # fmt: skip

    def cycle(self, sites: tuple[int, ...]) -> Cycle:
        """One pipeline run of `sites` up to the horizon; failures are recorded, not raised."""
        self.cycles += 1
        margin = timedelta(seconds=self.settings.follow_margin_seconds)
        horizon = Horizon(self.clock() - margin, self.rescanned)
        started = time.monotonic()
        self.health.cycle_started()
        try:
            self.sink.check_topic()
            self.topic_guard.check()
            horizon = Horizon(self._settled_until(margin), self.rescanned)
            transactions = self._transactions()
            pipeline = Pipeline(self.settings, self.matomo, self.sink, self.store, None,
                                self.stop, _Progress(self.health), clock=self.clock,
                                horizon=horizon, said=self.said,
                                transactions=transactions)  # fmt: skip
            if self.cycles == 1:  # the lines a run prints once, once
                pipeline.once_level = logging.INFO
            if self.page_sizes is None:  # a later cycle needs no probe of visits' size
                self.page_sizes = pipeline.page_sizes
            pipeline.page_sizes = self.page_sizes
            report = pipeline.run(sites)
            self.topic_guard.checkpointed(report)
            self._observe_clocks(margin)
        except MatomoKafkaError as exc:  # before the pipeline started (the topic, Matomo's clock)
            report = RunReport([SiteReport(idsite, "skipped") for idsite in sites], fatal=exc)
        cycle = Cycle(self.cycles, horizon, report, time.monotonic() - started)
        self._disabled(report)
        self._account(cycle)
        return cycle

    def _settled_until(self, margin: timedelta) -> datetime:
        """This cycle's horizon from the local clock checked against Matomo's (clock_skew.py);
        at the first cycle, before any answer of Matomo, its version is asked for its clock (a
        refusal is raised: the cycle does not repeat the request; an answer without a Date
        header leaves the local clock alone, and is not asked again)."""
        if self.cycles == 1 and self.matomo.matomo_now() is None:
            self.matomo.version()
            self._observe_clocks(margin)
        return self.skew.settled_until(self.clock(), margin)

    def _observe_clocks(self, margin: timedelta) -> None:
        """Matomo's clock (its latest answer's Date) against ours, now: the skew and its metric."""
        matomo = self.matomo.matomo_now()
        if matomo is not None:
            self.skew.observe(self.clock(), matomo, margin)
            if self.skew.skew is not None:
                self.metrics.clock_skew(self.skew.skew)

    def _disabled(self, report: RunReport) -> None:
        """Sites whose visitor log is disabled are skipped, as by `run`; said once each."""
        for site in skip_disabled_sites(report.sites, self.settings.MATOMO_STRICT_SITES):
            if site.idsite not in self.sites.warned_disabled:
                self.sites.warned_disabled.add(site.idsite)
                log.warning(
                    "site %d: visitor log disabled in Matomo, skipped (MATOMO_STRICT_SITES=true "
                    "makes it an error): %s", site.idsite, site.error,
                )  # fmt: skip

    def _account(self, cycle: Cycle) -> None:
        """Back-off of the failed sites, the health endpoint, the metrics, one log line."""
        report, now = cycle.report, time.monotonic()
        if isinstance(report.fatal, Interrupted):  # stopping: nothing failed
            self.metrics.cycle_done(cycle.horizon.at, report, cycle.seconds, "interrupted")
            log.info("follow: cycle %d stopped by a signal after %d visit(s)", cycle.number,
                     report.visits)  # fmt: skip
            return
        if isinstance(report.fatal, FINAL):  # stopping: no retry would help
            self.metrics.cycle_done(cycle.horizon.at, report, cycle.seconds, "failed")
            log.error("follow: cycle %d: %s: the service stops", cycle.number,
                      type(report.fatal).__name__)  # fmt: skip
            return
        failed: list[SiteReport] = []
        for site in report.sites:
            if site.status in ("done", DISABLED):
                self.sites.failures.pop(site.idsite, None)
                self.sites.due_at.pop(site.idsite, None)
            elif site.status != "interrupted":
                count = self.sites.failures.get(site.idsite, 0) + 1
                self.sites.failures[site.idsite] = count
                self.sites.due_at[site.idsite] = now + backoff(self.interval, count)
                failed.append(site)
        outcome = "failed" if failed else "ok"
        self.metrics.cycle_done(cycle.horizon.at, report, cycle.seconds, outcome)
        self.health.cycle_done(self._problem(report))
        self._log(cycle, failed)

    def _problem(self, report: RunReport) -> str | None:
        """Why the service is not ready after this cycle (None: it is)."""
        if report.fatal is not None:
            return f"the last cycle failed: {type(report.fatal).__name__}"
        failing = sorted(self.sites.failures)
        if failing:
            return f"site(s) {','.join(map(str, failing))} failing"
        return None

    def _log(self, cycle: Cycle, failed: list[SiteReport]) -> None:
        report = cycle.report
        where = f"cycle {cycle.number} up to {cycle.horizon.at:%Y-%m-%d %H:%M:%S}Z"
        done = f"{report.visits} visit(s) from {len(report.sites)} site(s) in {cycle.seconds:.1f}s"
        if not failed:
            log.info("follow: %s: %s", where, done)
        else:
            retry = min(self.sites.due_at[site.idsite] for site in failed) - time.monotonic()
            log.warning(
                "follow: %s: %s; %d site(s) failed (%s), tried again in %.0fs", where, done,
                len(failed), ", ".join(f"{s.idsite}: {s.error_kind}" for s in failed), retry,
            )  # fmt: skip
