"""Delivery: one protocol, two guarantees, so the pipeline has one loop.

`deliver(page)` returns once Kafka holds the page and its checkpoint is written:
- `AtLeastOnce`: the idempotent producer sends the page and waits for every message's ack,
  then the checkpoint files are written;
- `ExactlyOnce`: the page and the site's checkpoint record (state topic) are committed in one
  Kafka transaction of one of the process's transactional producers (sink/transactions.py),
  then the files are written.
Offsets are committed only for what the producer acknowledged, as in Kafka Connect's
SourceTask. `start()` says where a site resumes: its checkpoint files (at-least-once), or the
state topic's latest committed checkpoint, which wins over the files (exactly-once).

`Handover` runs deliveries on a few worker threads, so the loop never waits for Kafka or for
the disk: it hands a page over and later takes back the pages whose delivery ended. A site's
pages are recorded strictly in order: each delivery waits (`after`) until the site's previous
page is recorded before it records its own, and fails if that one failed. At-least-once
sends a site's next pages while earlier ones wait for their acks (`pages_per_site`);
exactly-once sends a site's next transaction while the previous one commits, and commits
them in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import CheckpointError, KafkaDeliveryError
from matomo_kafka.model import Cursor, Headers, Message, Page
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.state.state_topic import encode, state_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """A page handed to Kafka: its messages and, once Kafka holds them, the site's new
    checkpoint (None for a re-scan page, which moves no checkpoint)."""

    idsite: int
    page: Page[Message]
    messages: Sequence[Message]
    headers: Headers
    cursor: Cursor | None

    @property
    def day(self) -> date:
        return self.page.day


#: The pages of a delivery that failed, and why.
Failed = tuple[list[Outgoing], BaseException]

#: Records what Kafka now holds (the sent log, the checkpoint files): the pipeline's.
Record = Callable[[Outgoing], None]


#: Blocks until the site's previous page is recorded; raises if its delivery failed.
After = Callable[[], None]


class Delivery(Protocol):
    #: How many deliveries of a site may be under way at once.
    deliveries_per_site: int
    #: How many of a site's pages, ready together, one delivery may take.
    pages_per_delivery: int

    def start(self, idsite: int) -> Cursor:
        """Where the site resumes (called once, before its first page)."""
        ...

    def deliver(self, outs: Sequence[Outgoing], after: After) -> None:
        """Returns once Kafka holds the pages (a site's, in order) and `record` wrote their
        checkpoints, after the site's previous delivery's (`after`); raises
        KafkaDeliveryError otherwise (nothing recorded)."""
        ...

    def finish_site(self, idsite: int) -> None:
        """The site sends nothing more in this run."""
        ...

    def close(self) -> None: ...


class AtLeastOnce:
    """Pages sent by the run's idempotent producer; recorded once every message is acked."""

    def __init__(
        self,
        settings: Settings,
        sink: KafkaSink,
        store: CheckpointStore,
        record: Record,
        deliveries_per_site: int = 1,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.store = store
        self.record = record
        self.deliveries_per_site = deliveries_per_site  # sent while earlier ones wait for acks
        self.pages_per_delivery = 1

    def start(self, idsite: int) -> Cursor:
        return self.store.load(idsite) or Cursor(self.settings.START_DATE, 0)

    def deliver(self, outs: Sequence[Outgoing], after: After) -> None:
        for out in outs:
            self.sink.deliver(out.messages, out.headers)  # acks may beat the previous page's
        after()
        for out in outs:
            self.record(out)

    def finish_site(self, idsite: int) -> None:
        pass

    def close(self) -> None:
        pass  # the sink belongs to the caller


class ExactlyOnce:
    """One transaction per delivery: the pages' visits and the site's checkpoint record, on
    one of the process's few transactional producers (sink/transactions.py), which claimed
    the sites before. The pages that are ready when a delivery starts go together, and a
    site's next delivery sends its visits while the previous one commits (its own commit
    waits for that one's). A delivery with no visit that
    leaves the site on the day of its latest checkpoint makes no transaction (`follow`'s
    cycles with nothing new): the move is kept in memory until the site's next commit."""

    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore,
        transactions: Transactions,
        record: Record,
        pages_per_delivery: int = 1,
        by: str = "run",
        owns: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transactions = transactions
        self.state = transactions.state
        self.record = record
        self.by = by  # the state record's "by": the command that committed it
        self.owns = owns  # closes the transactions when done (a run's; follow keeps its own)
        # Sent while earlier ones commit (each on its own producer), committed in order.
        self.deliveries_per_site = transactions.owner.producers
        self.pages_per_delivery = pages_per_delivery

    def start(self, idsite: int) -> Cursor:
        """Where the site stands: once claimed, its latest checkpoint in the state topic (or
        the files'); after that, what this process committed (or moved to) itself."""
        known = self.transactions.known(idsite)
        if known is not None:
            return known[0]
        if not self.transactions.claimed(idsite):
            raise KafkaDeliveryError(f"exactly-once: site {idsite} was not claimed")
        cursor, committed, seq = self._resume(idsite, self.transactions.claimed_at)
        self.transactions.resumed(idsite, cursor, committed, seq)
        return cursor

    def _resume(self, idsite: int, claimed_at: float) -> tuple[Cursor, Cursor | None, int]:
        """The state topic's latest committed checkpoint, which wins over the files (rewritten
        to match); without one, the files are imported (or START_DATE). Read from `claimed_at`
        on: nothing else commits for the site after its claim fenced the others."""
        record = self.state.latest(idsite, since=claimed_at)
        topic = self.settings.state_topic
        if record is None:
            files = self.store.load(idsite)
            cursor = files or Cursor(self.settings.START_DATE, 0)
            source = "imported from the checkpoint files" if files else "START_DATE"
            log.info(
                "site %d: no checkpoint in the state topic %s yet: %s offset %d (%s)",
                idsite, topic, cursor.day, cursor.offset, source,
            )  # fmt: skip
            return cursor, None, 0
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
            self.store.save(idsite, record.cursor)
        return record.cursor, record.cursor, record.seq

    def deliver(self, outs: Sequence[Outgoing], after: After) -> None:
        """The visits are queued in a transaction at once; the transaction commits (with the
        checkpoint record, whose seq follows the previous one's) only once the site's
        previous delivery committed, and is aborted if that one failed: a site's pages are
        sent while its earlier transactions commit, and committed in order."""
        idsite = outs[0].idsite
        pages = [(out.messages, out.headers) for out in outs]
        cursors = [out.cursor for out in outs if out.cursor is not None]
        transactions = self.transactions
        committed_seq = 0

        def checkpoint() -> tuple[bytes, bytes] | None:
            nonlocal committed_seq
            after()  # the site's previous transaction committed (raises if it failed)
            if not cursors:  # re-scan pages: no checkpoint moves
                return None
            known = transactions.known(idsite)
            committed_seq = (known[2] if known is not None else 0) + 1
            value = encode(self.settings, idsite, cursors[-1], committed_seq, self.by,
                           transactions.owner.prefix)  # fmt: skip
            return state_key(idsite), value

        if not any(out.messages for out in outs):
            after()
            known = transactions.known(idsite)
            committed = known[1] if known is not None else None
            if cursors and committed is not None and cursors[-1].day == committed.day:
                transactions.moved(idsite, cursors[-1])  # nothing sent: nothing to commit yet
                return
        with transactions.producer() as sink:
            sink.commit(pages, None, None, site=idsite, then=checkpoint)
        if cursors:
            transactions.committed(idsite, cursors[-1], committed_seq)
        for out in outs:
            self.record(out)

    def finish_site(self, idsite: int) -> None:
        pass  # the producers serve every site

    def close(self) -> None:
        if self.owns:
            self.transactions.close()


class Handover:
    """Runs `delivery.deliver` for the pages the loop hands over, on `workers` threads."""

    def __init__(self, delivery: Delivery, workers: int, wake: threading.Event) -> None:
        self.delivery = delivery
        self.wake = wake
        self._pool = ThreadPoolExecutor(max(1, workers), "delivery")
        self._handed: list[tuple[list[Outgoing], Future[None]]] = []
        self._last: dict[int, Future[None]] = {}  # each site's latest delivery

    def start(self, idsite: int) -> Future[Cursor]:
        """`delivery.start` on a delivery thread (exactly-once may read the state topic
        there, while the loop goes on)."""
        future = self._pool.submit(self.delivery.start, idsite)
        future.add_done_callback(lambda _: self.wake.set())
        return future

    def send(self, outs: list[Outgoing]) -> None:
        """Hands over pages of one site, in order, as one delivery."""
        idsite = outs[0].idsite
        previous = self._last.get(idsite)

        def after() -> None:
            if previous is not None:
                previous.result()  # raises the previous page's failure: this one records nothing

        # The pool runs deliveries in the order they were handed over, so a site's previous
        # delivery has a worker (or is done) whenever its next one waits for it.
        future = self._pool.submit(self.delivery.deliver, outs, after)
        future.add_done_callback(lambda _: self.wake.set())
        self._handed.append((outs, future))
        self._last[idsite] = future

    def in_flight(self) -> int:
        return len(self._handed)

    def finished(self, wait: bool = False) -> tuple[list[list[Outgoing]], list[Failed]]:
        """The deliveries that ended (`wait`: once every one has): the pages Kafka holds,
        with their checkpoints written, and those that failed, with their error."""
        if wait:
            wait_all([future for _, future in self._handed])
        # One look at each future: a delivery ending between two looks would be in neither
        # list, never reported, and its site would never close (the run would hang).
        ended: list[tuple[list[Outgoing], Future[None]]] = []
        still: list[tuple[list[Outgoing], Future[None]]] = []
        for handed in self._handed:
            (ended if handed[1].done() else still).append(handed)
        self._handed = still
        ok = [outs for outs, future in ended if future.exception() is None]
        failed = [(outs, error) for outs, f in ended if (error := f.exception()) is not None]
        return ok, failed

    def close(self) -> None:
        """Waits for the deliveries under way (each bounded by Kafka's delivery timeout)."""
        self._pool.shutdown(wait=True)
