"""`matomo-kafka reconcile` (and `audit`, which reports what it would do): per day, the topic's
latest state per key against Matomo's Live listing of the day.

The topic is read as `audit` reads it (ops/topic_read.py: from the first record produced at or
after the first day's start minus an hour, up to the ends taken before): per day and idVisit,
the digest of the newest record (sent_log.digest), or a tombstone. Matomo's listing is read
page by page (keyset, MATOMO_FILTER_LIMIT visits a page, one page ahead) and each visit
transformed into the message the tool would send today, whose digest is compared:

- missing: listed, and the topic has no value for it (never sent, or tombstoned);
- changed: the topic's newest value differs (more actions, Matomo's anonymisation, a salt or
  dimension renamed since);
- erased: the topic's newest record of the day is a value, and Matomo no longer lists it;
- equal: the same message.

A day Matomo lists empty while the topic holds values for it was purged by Matomo (retention):
reported, never erased unless asked (`--erase-purged-days`). With `apply`, a page's missing and
changed visits go as keyed records (matomo.op insert/update, matomo.reconcile: 1) and the day's
tombstones with its last page (exactly-once: one transaction per page, after claiming the
site in the state topic, so a `run` or `follow` of the site is fenced); at most
MATOMO_MAX_ERASE tombstones, unless `yes`. Memory: ids and digests of the days, one page of
messages at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, tzinfo

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import MatomoError, MatomoKafkaError, MatomoResponseError
from matomo_kafka.model import Cursor, Headers, Message
from matomo_kafka.ops.topic_read import SentRead, read_sent, read_start
from matomo_kafka.sink.producer import KafkaSink, page_headers
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.days import day_range, site_timezone
from matomo_kafka.source.paging import Batch, Pager, Request
from matomo_kafka.source.schedule import PageScheduler, drive
from matomo_kafka.state.sent_log import SentLog, changes_since, visit_id
from matomo_kafka.transform.visits import (
    SiteTransform,
    page_messages,
    parse_dimensions,
    parse_goals,
)

log = logging.getLogger(__name__)

INSERT, UPDATE, DELETE = b"insert", b"update", b"delete"


@dataclass
class DayDiff:
    """One day: Matomo's listing against the topic's latest state, and what `apply` sent."""

    day: date
    live: int = 0  # visits Matomo lists
    missing: int = 0
    changed: int = 0
    erased: int = 0  # in the topic, no longer listed (on a purged day: the purged visits)
    equal: int = 0
    purged: bool = False  # listed empty while the topic holds visits: kept unless asked
    withheld: int = 0  # erased visits not tombstoned: over MATOMO_MAX_ERASE without --yes
    sent: int = 0  # records `apply` sent for the day (inserts, updates, tombstones)

    @property
    def to_erase(self) -> int:
        """Tombstones the day needs (a purged day's visits are kept)."""
        return 0 if self.purged else self.erased

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.changed or self.to_erase)

    @property
    def verdict(self) -> str:
        if self.purged:
            return "purged by Matomo (kept)"
        if self.withheld:
            return "erasures withheld"
        return "differs" if self.differs else "equal"

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(), "live": self.live, "missing": self.missing,
            "changed": self.changed, "erased": self.erased, "equal": self.equal,
            "purged": self.purged, "withheld": self.withheld, "sent": self.sent,
        }  # fmt: skip


@dataclass
class SiteDiff:
    """The days compared (in order), what reading the topic cost, and the days not reached
    because of `error` (Matomo or Kafka failing midway)."""

    rows: list[DayDiff]
    topic: SentRead
    left: list[date] = field(default_factory=list)
    error: MatomoKafkaError | None = None


@dataclass
class EraseBudget:
    """Tombstones still allowed (None: no limit, `--yes`), and whether purged days are erased."""

    left: int | None
    erase_purged: bool = False

    def take(self, count: int) -> bool:
        if self.left is None:
            return True
        if count > self.left:
            return False
        self.left -= count
        return True


class TopicWriter:
    """Sends a site's reconciled records: the run's idempotent producer (at-least-once), or
    a transactional producer after claiming the site in the state topic (exactly-once: the
    claim fences whatever instance worked on the site, a run, a `follow` or a killed
    reconcile, and so aborts what it left open, before the topic is read). Records what it
    sent in the site's sent log for the days the re-scan window keeps one."""

    def __init__(self, settings: Settings, idsite: int) -> None:
        self.idsite = idsite
        self.sent_log = SentLog(settings.FILE_PATH_FILTERDATE)
        self.sink: KafkaSink | None = None
        self.transactions: Transactions | None = None
        if settings.exactly_once:
            self.transactions = Transactions(settings, "reconcile", producers=1)
            try:
                self.transactions.claim((idsite,))
            except BaseException:
                self.transactions.close()
                raise
        else:
            self.sink = KafkaSink.from_settings(settings)
            self.sink.check_topic()

    def write(self, day: date, groups: Sequence[tuple[Sequence[Message], bytes]]) -> None:
        """One page's records, each group with its matomo.op, acknowledged (at-least-once) or
        committed in one transaction (exactly-once) when this returns."""
        base = [*page_headers(self.idsite, day.isoformat()), ("matomo.reconcile", b"1")]
        pages: list[tuple[Sequence[Message], Headers]] = [
            (messages, [*base, ("matomo.op", op)]) for messages, op in groups
        ]
        if self.transactions is not None:
            with self.transactions.producer() as txn:
                txn.commit(pages, None, None, site=self.idsite)
        else:
            assert self.sink is not None
            for messages, headers in pages:
                self.sink.deliver(messages, headers)
        if self.sent_log.path(self.idsite, day).exists():  # a day of the re-scan window
            self.sent_log.append(self.idsite, day, [m for messages, _ in groups for m in messages])

    def close(self) -> None:
        if self.transactions is not None:
            self.transactions.close()
        if self.sink is not None:
            self.sink.close()


def site_transform(
    settings: Settings, matomo: MatomoClient, idsite: int
) -> tuple[SiteTransform, tzinfo]:
    """The site's timezone (SitesManager.getSiteFromId: an unknown site fails here, first)
    and the transform the run would apply to its visits (dimensions, goals, pseudonyms)."""
    info = matomo.site(idsite)
    try:
        tz = site_timezone(info.timezone)
    except ValueError as exc:
        raise MatomoResponseError(f"site {idsite}: {exc}") from None
    metadata = matomo.sites_metadata([idsite])[idsite]
    if isinstance(metadata, MatomoError):
        raise metadata
    dimensions, goals = metadata
    salt = settings.SALAGE.get_secret_value() if settings.SALAGE else None
    transform = SiteTransform.build(
        idsite, parse_dimensions(dimensions, idsite), parse_goals(goals, idsite),
        settings.COLONNE_ANNOMYSE, salt,
    )  # fmt: skip
    return transform, tz


def compare_day(
    settings: Settings,
    matomo: MatomoClient,
    idsite: int,
    day: date,
    transform: SiteTransform,
    topic: dict[int, bytes | None],
    budget: EraseBudget,
    writer: TopicWriter | None = None,
) -> DayDiff:
    """Reads the day's listing page by page against the topic's state; `writer`: sends what
    differs, page by page (tombstones with the last page)."""
    diff = DayDiff(day)
    listed: set[int] = set()
    limit = settings.MATOMO_FILTER_LIMIT

    def fetch(request: Request) -> bytes:
        return matomo.visits_page_raw(idsite, day, request.limit, request.offset, request.after)

    def parse(request: Request, raw: bytes) -> Batch[Message]:
        return page_messages(raw, idsite, day, request.limit, transform)

    with PageScheduler(slots=1, budget=2, name="reconcile-fetch") as scheduler:
        pager = Pager(fetch, scheduler.submit, Cursor(day, 0), day, limit, parse=parse)
        for page in drive(iter(pager), scheduler):
            fresh = [m for m in page.items if _first_seen(visit_id(m), listed)]
            found = changes_since(fresh, topic)
            diff.missing += len(found.inserts)
            diff.changed += len(found.updates)
            diff.equal += found.unchanged
            sorted_out = ((found.inserts, INSERT), (found.updates, UPDATE))
            groups: list[tuple[Sequence[Message], bytes]] = [
                (messages, op) for messages, op in sorted_out if messages
            ]
            if page.last:
                tombstones = _tombstones(idsite, diff, topic, listed, budget, writer is not None)
                if tombstones:
                    groups.append((tombstones, DELETE))
            if writer is not None and groups:
                writer.write(day, groups)
                diff.sent += sum(len(messages) for messages, _ in groups)
    diff.live = len(listed)
    return diff


def _first_seen(idvisit: int, listed: set[int]) -> bool:
    """True the first time a visit shows in the day's listing (a tie repair may list it
    twice); it is then in `listed`."""
    if idvisit in listed:
        return False
    listed.add(idvisit)
    return True


def _tombstones(
    idsite: int,
    diff: DayDiff,
    topic: dict[int, bytes | None],
    listed: set[int],
    budget: EraseBudget,
    applying: bool,
) -> list[Message]:
    gone = sorted(idvisit for idvisit, last in topic.items() if last is not None
                  and idvisit not in listed)  # fmt: skip
    diff.erased = len(gone)
    if not gone:
        return []
    if not listed and not budget.erase_purged:
        diff.purged = True
        return []
    if not budget.take(len(gone)):
        diff.withheld = len(gone)
        return []
    if applying:
        for idvisit in gone:
            log.info("site %d: %s: tombstone for %d:%d (erased in Matomo)", idsite, diff.day,
                     idsite, idvisit)  # fmt: skip
    return [Message(f"{idsite}:{idvisit}".encode(), None) for idvisit in gone]


def diff_site(
    settings: Settings,
    matomo: MatomoClient,
    idsite: int,
    first: date,
    last: date,
    budget: EraseBudget | None = None,
    apply: bool = False,
    on_day: Callable[[DayDiff], None] | None = None,
) -> SiteDiff:
    """Every day of [first, last] compared (and, `apply`, made equal). A refused token or an
    unknown site raises before anything is read or sent; Matomo or Kafka failing midway ends
    the comparison there: the days done stay done, the others are in `left`."""
    budget = budget or EraseBudget(None)
    transform, tz = site_transform(settings, matomo, idsite)
    writer = TopicWriter(settings, idsite) if apply else None
    try:
        read = read_sent(settings, idsite, first, last, read_start(first, tz))
        result = SiteDiff([], read)
        days = list(day_range(first, last))
        for index, day in enumerate(days):
            try:
                row = compare_day(settings, matomo, idsite, day, transform, read.latest[day],
                                  budget, writer)  # fmt: skip
            except MatomoKafkaError as exc:
                result.error, result.left = exc, days[index:]
                log.error("site %d: %s: %s", idsite, day, exc)
                break
            result.rows.append(row)
            if on_day is not None:
                on_day(row)
        return result
    finally:
        if writer is not None:
            writer.close()
