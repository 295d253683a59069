"""Delivery: one protocol, two guarantees, so the pipeline has one loop.

`deliver(page)` returns once Kafka holds the page and its checkpoint is written:
- `AtLeastOnce`: the idempotent producer sends the page and waits for every message's ack,
  then the checkpoint files are written;
- `ExactlyOnce`: the page and the site's checkpoint record (state topic) are committed in one
  Kafka transaction of the site's transactional producer, then the files are written.
Offsets are committed only for what the producer acknowledged, as in Kafka Connect's
SourceTask. `start()` says where a site resumes: its checkpoint files (at-least-once), or the
state topic's latest committed checkpoint, which wins over the files (exactly-once).

`Handover` runs deliveries on a few worker threads, so the loop never waits for Kafka or for
the disk: it hands a page over and later takes back the pages whose delivery ended. A site's
pages are recorded strictly in order: each delivery waits (`after`) until the site's previous
page is recorded before it records its own, and fails if that one failed. At-least-once
sends a site's next pages while earlier ones wait for their acks (`pages_per_site`);
exactly-once has one transaction at a time per site.
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

from matomo_kafka.checkpoint import CheckpointStore, Cursor
from matomo_kafka.config import Settings
from matomo_kafka.errors import CheckpointError
from matomo_kafka.paging import Page
from matomo_kafka.sink import Headers, KafkaSink, Message, TransactionalSink
from matomo_kafka.state import StateReader, encode, state_key

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


#: A page whose delivery failed, and why.
Failed = tuple[Outgoing, BaseException]

#: Records what Kafka now holds (the sent log, the checkpoint files): the pipeline's.
Record = Callable[[Outgoing], None]


#: Blocks until the site's previous page is recorded; raises if its delivery failed.
After = Callable[[], None]


class Delivery(Protocol):
    #: How many of a site's pages may be handed over at once.
    pages_per_site: int

    def start(self, idsite: int) -> Cursor:
        """Where the site resumes (called once, before its first page)."""
        ...

    def deliver(self, out: Outgoing, after: After) -> None:
        """Returns once Kafka holds the page and `record` wrote its checkpoint, after the
        site's previous page's (`after`); raises KafkaDeliveryError (nothing recorded)."""
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
        pages_per_site: int = 1,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.store = store
        self.record = record
        self.pages_per_site = pages_per_site

    def start(self, idsite: int) -> Cursor:
        return self.store.load(idsite) or Cursor(self.settings.START_DATE, 0)

    def deliver(self, out: Outgoing, after: After) -> None:
        self.sink.deliver(out.messages, out.headers)  # acks may come before the previous page's
        after()
        self.record(out)

    def finish_site(self, idsite: int) -> None:
        pass

    def close(self) -> None:
        pass  # the sink belongs to the caller


class ExactlyOnce:
    """One transaction per page: the page's visits and the site's checkpoint record."""

    def __init__(
        self, settings: Settings, store: CheckpointStore, state: StateReader, record: Record
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.record = record
        self.pages_per_site = 1  # one transaction at a time per transactional producer
        self._sinks: dict[int, TransactionalSink] = {}
        self._seq: dict[int, int] = {}

    def start(self, idsite: int) -> Cursor:
        sink = TransactionalSink(self.settings, idsite)
        self._sinks[idsite] = sink
        sink.init()  # from here on, an older producer of this site is fenced
        cursor, self._seq[idsite] = self._resume(idsite)
        return cursor

    def _resume(self, idsite: int) -> tuple[Cursor, int]:
        """The state topic's latest committed checkpoint, which wins over the files (rewritten
        to match); without one, the files are imported (or START_DATE)."""
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
            self.store.save(idsite, record.cursor)
        return record.cursor, record.seq

    def deliver(self, out: Outgoing, after: After) -> None:
        after()
        sink = self._sinks[out.idsite]
        if out.cursor is None:  # a re-scan page: no checkpoint moves
            sink.commit(out.messages, out.headers, None, None)
        else:
            seq = self._seq[out.idsite] + 1
            value = encode(self.settings, out.idsite, out.cursor, seq, "run")
            sink.commit(out.messages, out.headers, state_key(out.idsite), value)
            self._seq[out.idsite] = seq
        self.record(out)

    def finish_site(self, idsite: int) -> None:
        sink = self._sinks.pop(idsite, None)
        if sink is not None:
            sink.close()

    def close(self) -> None:
        for idsite in list(self._sinks):
            self.finish_site(idsite)
        self.state.close()


class Handover:
    """Runs `delivery.deliver` for the pages the loop hands over, on `workers` threads."""

    def __init__(self, delivery: Delivery, workers: int, wake: threading.Event) -> None:
        self.delivery = delivery
        self.wake = wake
        self._pool = ThreadPoolExecutor(max(1, workers), "delivery")
        self._handed: list[tuple[Outgoing, Future[None]]] = []
        self._last: dict[int, Future[None]] = {}  # each site's latest delivery

    def send(self, out: Outgoing) -> None:
        previous = self._last.get(out.idsite)

        def after() -> None:
            if previous is not None:
                previous.result()  # raises the previous page's failure: this one records nothing

        # The pool runs deliveries in the order they were handed over, so a site's previous
        # delivery has a worker (or is done) whenever its next one waits for it.
        future = self._pool.submit(self.delivery.deliver, out, after)
        future.add_done_callback(lambda _: self.wake.set())
        self._handed.append((out, future))
        self._last[out.idsite] = future

    def in_flight(self) -> int:
        return len(self._handed)

    def finished(self, wait: bool = False) -> tuple[list[Outgoing], list[Failed]]:
        """The pages whose delivery ended (`wait`: once every page's has ended): those Kafka
        holds, with their checkpoint written, and those that failed, with their error."""
        if wait:
            wait_all([future for _, future in self._handed])
        ended = [(out, future) for out, future in self._handed if future.done()]
        self._handed = [(out, future) for out, future in self._handed if not future.done()]
        ok = [out for out, future in ended if future.exception() is None]
        failed = [(out, error) for out, f in ended if (error := f.exception()) is not None]
        return ok, failed

    def close(self) -> None:
        """Waits for the deliveries under way (each bounded by Kafka's delivery timeout)."""
        self._pool.shutdown(wait=True)
