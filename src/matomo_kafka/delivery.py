"""Delivery: one protocol, two guarantees, so the pipeline has one loop.

The loop hands each page to `send()` with the checkpoint it moves to, and later takes back
from `acknowledged()` the pages Kafka now holds, in the order it handed them over; only then
does it write the checkpoint files (Kafka Connect's SourceTask draws the same line: offsets
are committed only for what the producer acknowledged).

- `AtLeastOnce`: the idempotent producer sends the page at once and its acks arrive in the
  background; a page comes back from `acknowledged()` once every message of it is acked.
- `ExactlyOnce`: `send()` commits the page and the site's checkpoint record (state topic) in
  one Kafka transaction of the site's transactional producer; the page comes back at once.

`start()` says where a site resumes: its checkpoint files (at-least-once), or the state
topic's latest committed checkpoint, which wins over the files (exactly-once).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from matomo_kafka.checkpoint import CheckpointStore, Cursor
from matomo_kafka.config import Settings
from matomo_kafka.errors import CheckpointError, KafkaDeliveryError
from matomo_kafka.paging import Page
from matomo_kafka.sink import Headers, KafkaSink, Message, PageAck, TransactionalSink
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


class Delivery(Protocol):
    def start(self, idsite: int) -> Cursor:
        """Where the site resumes (called once, before its first page)."""
        ...

    def send(self, out: Outgoing) -> None:
        """Hands a page over; the caller sends a site's next page only once this one came
        back from acknowledged()."""
        ...

    def acknowledged(self, wait: bool = False) -> list[Outgoing]:
        """The pages Kafka now holds, in the order they were handed over (`wait`: every page
        handed over). A Kafka failure is raised once the pages before it are returned."""
        ...

    def in_flight(self) -> int:
        """Pages handed over and not yet returned by acknowledged()."""
        ...

    def finish_site(self, idsite: int) -> None:
        """The site sends nothing more in this run."""
        ...

    def close(self) -> None: ...


class AtLeastOnce:
    """Pages sent by the idempotent producer; returned once every message is acknowledged."""

    def __init__(
        self, settings: Settings, sink: KafkaSink, store: CheckpointStore, wake: threading.Event
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.store = store
        self.wake = wake
        self._pending: deque[tuple[Outgoing, PageAck]] = deque()
        self._failure: KafkaDeliveryError | None = None

    def start(self, idsite: int) -> Cursor:
        return self.store.load(idsite) or Cursor(self.settings.START_DATE, 0)

    def send(self, out: Outgoing) -> None:
        self._pending.append((out, self.sink.send(out.messages, out.headers, self.wake.set)))

    def acknowledged(self, wait: bool = False) -> list[Outgoing]:
        if self._failure is not None:
            raise self._failure
        done: list[Outgoing] = []
        while self._pending:
            out, ack = self._pending[0]
            if not wait and not ack.done.is_set():
                break
            try:
                self.sink.wait(ack)
            except KafkaDeliveryError as exc:
                self._failure = exc
                if not done:
                    raise
                break
            self._pending.popleft()
            done.append(out)
        return done

    def in_flight(self) -> int:
        return len(self._pending)

    def finish_site(self, idsite: int) -> None:
        pass

    def close(self) -> None:
        pass  # the sink belongs to the caller


class ExactlyOnce:
    """One transaction per page: the page's visits and the site's checkpoint record."""

    def __init__(self, settings: Settings, store: CheckpointStore, state: StateReader) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self._sinks: dict[int, TransactionalSink] = {}
        self._seq: dict[int, int] = {}
        self._done: list[Outgoing] = []

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

    def send(self, out: Outgoing) -> None:
        sink = self._sinks[out.idsite]
        if out.cursor is None:  # a re-scan page: no checkpoint moves
            sink.commit(out.messages, out.headers, None, None)
        else:
            self._seq[out.idsite] += 1
            value = encode(self.settings, out.idsite, out.cursor, self._seq[out.idsite], "run")
            sink.commit(out.messages, out.headers, state_key(out.idsite), value)
        self._done.append(out)

    def acknowledged(self, wait: bool = False) -> list[Outgoing]:
        done, self._done = self._done, []
        return done

    def in_flight(self) -> int:
        return len(self._done)

    def finish_site(self, idsite: int) -> None:
        sink = self._sinks.pop(idsite, None)
        if sink is not None:
            sink.close()

    def close(self) -> None:
        for idsite in list(self._sinks):
            self.finish_site(idsite)
        self.state.close()
