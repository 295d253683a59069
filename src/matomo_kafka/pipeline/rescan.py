"""What does a page hand to Kafka? A catch-up page all its visits, with the checkpoint it
moves to; a re-scan page (MATOMO_RESCAN_DAYS) only its visits that are new or changed since
they were sent (state/sent_log.py), and a day's last re-scan page the tombstones of the visits
sent for the day that Matomo no longer lists (erased in Matomo), at most MATOMO_MAX_ERASE a
run and never for a day Matomo now lists empty (its retention purge)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from matomo_kafka.config.settings import Settings
from matomo_kafka.model import Message, Page
from matomo_kafka.pipeline.site import DayRescan, SiteRun
from matomo_kafka.sink.delivery import Outgoing
from matomo_kafka.sink.producer import page_headers
from matomo_kafka.state.sent_log import SentLog, changes_since, digest, visit_id

#: The loop's logger, one for the whole package (log lines name it).
log = logging.getLogger("matomo_kafka.pipeline")

#: Header matomo.op of each record: a visit sent for the first time, a visit sent again with
#: new content, a tombstone (docs/consumers.md).
OP_INSERT = ("matomo.op", b"insert")
OP_UPDATE = ("matomo.op", b"update")
OP_DELETE = ("matomo.op", b"delete")


def outgoing(run: SiteRun, pages: list[Page[Message]], rescans: Rescans | None) -> list[Outgoing]:
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
        assert rescans is not None  # re-scan pages come only with the sent log
        inserts, updates, tombstones = rescans.filter(run, page)
        rescan = [*headers, ("matomo.rescan", b"1")]
        for messages, op in ((inserts, OP_INSERT), (updates, OP_UPDATE)):
            if messages:
                outs.append(Outgoing(idsite, page, messages, [*rescan, op], None))
        if tombstones:
            outs.append(Outgoing(idsite, page, tombstones, [*rescan, OP_DELETE], None))
    return outs


class Rescans:
    """The run's re-scans: the sent log they compare with, and the tombstones this run may
    still send (MATOMO_MAX_ERASE)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent_log = SentLog(settings.FILE_PATH_FILTERDATE)
        self.erase_left = settings.MATOMO_MAX_ERASE  # tombstones this run may still send

    def sent(self, out: Outgoing) -> None:
        """Kafka holds the page (on a delivery thread): what was sent is recorded, every day
        (a run that stops early may be resumed far later)."""
        if out.messages:
            self.sent_log.append(out.idsite, out.day, out.messages)

    def site_done(self, idsite: int, start_day: date) -> None:
        """Later runs start later: the days before this run's window are not re-scanned."""
        days = timedelta(days=self.settings.MATOMO_RESCAN_DAYS)
        self.sent_log.prune(idsite, start_day - days)

    def filter(
        self, run: SiteRun, page: Page[Message]
    ) -> tuple[list[Message], list[Message], list[Message]]:
        """The page's visits never sent (inserts), those changed since (updates: late actions,
        Matomo's anonymisation) and, on the day's last page, the tombstones of the visits
        sent for the day that the listing no longer holds."""
        state = run.rescan
        if state is None or state.day != page.day:
            state = run.rescan = DayRescan(page.day, self.sent_log.load(run.idsite, page.day))
        state.listed.update(visit_id(message) for message in page.items)
        found = changes_since(page.items, state.known)
        inserts, updates = found.inserts, found.updates
        state.new += len(inserts)
        state.changed += len(updates)
        state.unchanged += found.unchanged
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

    def _tombstones(self, run: SiteRun, state: DayRescan) -> list[Message]:
        """Tombstones of the visits sent for the day that Matomo no longer lists, unless the
        whole day is gone (Matomo's retention purge: reported, the visits stay in Kafka) or
        they would take the run past MATOMO_MAX_ERASE (reported, the site fails, nothing is
        erased: the sent log keeps them for `reconcile`). A visit sent for the next day is not
        erased (it moved there: Matomo servers that do not split visits at midnight)."""
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
