"""`matomo-kafka audit`: did every visit of a site's days reach the topic, once?

Per day it compares what the tool sent (read back from the topic: messages keyed
`<idSite>:<idVisit>` with header `matomo.day` = the day) with Matomo's own counts: the
archived VisitsSummary.get nb_visits and a fresh Live.getLastVisitsDetails listing (every
page, ascending, MATOMO_FILTER_LIMIT visits a page). Missing visits (in Live, not in the topic)
and extra ones (in the topic, not in Live) are mismatches; duplicates are not (delivery is
at-least-once, keys make re-sends idempotent), and neither is a VisitsSummary that disagrees
with Live (archives lag behind the raw log), which is only noted.

The topic is read as ops/topic_read.py says: from shortly before the first day's start, so
the cost grows with the records produced since the days audited began, not with the topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from matomo_kafka.config.settings import Settings
from matomo_kafka.ops.reconcile import diff_site
from matomo_kafka.ops.topic_read import SentRead
from matomo_kafka.source.client import MatomoClient


@dataclass(frozen=True)
class DayAudit:
    day: date
    sent: int  # messages of the day in the topic
    distinct: int  # distinct idVisit among them
    summary: int | None  # VisitsSummary.get nb_visits
    live: int  # visits in a fresh Live listing
    missing: int  # in Live, not in the topic
    extra: int  # in the topic, not in Live
    changed: int = 0  # in both, the topic's newest message differs from today's (reconcile.py)

    @property
    def duplicates(self) -> int:
        return self.sent - self.distinct

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0

    @property
    def summary_differs(self) -> bool:
        return self.summary is not None and self.summary != self.live


@dataclass(frozen=True)
class SiteAudit:
    rows: list[DayAudit]
    topic: SentRead  # what reading the topic cost


def audit_site(
    settings: Settings, matomo: MatomoClient, idsite: int, first: date, last: date
) -> SiteAudit:
    """Reconcile's comparison, without sending (ops/reconcile.py: one code path): missing =
    what it would send, extra = what it would erase (or keep, on a day Matomo purged),
    changed = what it would update; plus VisitsSummary's count. Fails fast, with Matomo's own
    message, on an unknown site."""
    compared = diff_site(settings, matomo, idsite, first, last)
    if compared.error is not None:
        raise compared.error
    rows: list[DayAudit] = []
    for diff in compared.rows:
        in_topic = compared.topic.sent[diff.day]
        summary = matomo.visits_summary_count(idsite, diff.day)
        rows.append(
            DayAudit(
                day=diff.day,
                sent=sum(in_topic.values()),
                distinct=len(in_topic),
                summary=summary,
                live=diff.live,
                missing=diff.missing,
                extra=diff.erased,
                changed=diff.changed,
            )
        )
    return SiteAudit(rows, compared.topic)
