"""The types every stage shares: where a site stands (Cursor), a page of items to send (Page),
a Kafka message (Message), and what a run did (SiteReport, RunReport)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Generic, NamedTuple, TypeVar

from matomo_kafka.errors import MatomoKafkaError

T = TypeVar("T")

#: SiteReport.status of a site skipped because its visitor log is disabled.
DISABLED = "disabled"


@dataclass(frozen=True)
class Cursor:
    """Where a site's extraction stands: `offset` visits of `day` are acknowledged by Kafka.

    Keyset paging adds the boundary: `last_action`, the last action time (Unix seconds) of the
    latest visit sent, and `ids`, the idVisit of the visits already sent at that second; the
    day resumes with the visits after that second plus those of that second not in `ids`.
    """

    day: date
    offset: int
    last_action: int | None = None
    ids: frozenset[int] = frozenset()

    def at_day_start(self) -> bool:
        return self.offset == 0 and self.last_action is None


@dataclass(frozen=True)
class Page(Generic[T]):
    """Items to send for `day`; `offset`: visits of the day sent before them; `last`: the day's
    final page; `next_cursor`: the checkpoint once the page is acknowledged (inside the day);
    `rescan`: a day re-read after the catch-up (MATOMO_RESCAN_DAYS): it moves no checkpoint;
    `newest`: the last action time (Unix seconds) of the newest visit sent so far in the day,
    when the pager knows it (keyset paging, or a read up to a horizon)."""

    day: date
    offset: int
    items: Sequence[T]
    last: bool
    next_cursor: Cursor
    rescan: bool = False
    newest: int | None = None

    @property
    def checkpoint(self) -> Cursor:
        """Where the site stands once this page is acknowledged: the next day after a day's
        last page."""
        return Cursor(self.day + timedelta(days=1), 0) if self.last else self.next_cursor


Headers = list[tuple[str, str | bytes | None]]


class Message(NamedTuple):
    """One Kafka record: a tuple, as it is built once per visit on the hot path. A value of
    None is a tombstone: the visit of the key is no longer in Matomo (erased)."""

    key: bytes
    value: bytes | None


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
    rescan_erased: int = 0  # tombstones sent: visits sent that Matomo no longer lists
    erase_withheld: int = 0  # erased visits not tombstoned: over MATOMO_MAX_ERASE
    purged_days: list[date] = field(default_factory=list)  # re-scanned days now listed empty
    pages_split: int = 0  # Live pages asked for again smaller after hitting Matomo's limits
    newest: int | None = None  # last action time (Unix s) of the newest visit delivered


@dataclass
class RunReport:
    sites: list[SiteReport] = field(default_factory=list)
    fatal: MatomoKafkaError | None = None
    pace_lowest: int | None = None  # fewest Matomo requests in flight the run allowed itself
    pace_last: int | None = None  # how many it allowed at the end
    #: COLONNE_ANNOMYSE entries that reached no field of the visits sent (one line each).
    unmatched_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fatal is None and all(site.status == "done" for site in self.sites)

    @property
    def visits(self) -> int:
        return sum(site.visits for site in self.sites)

    @property
    def failed(self) -> list[SiteReport]:
        """The sites that neither finished nor were skipped for a disabled visitor log."""
        return [site for site in self.sites if site.status not in ("done", DISABLED)]
