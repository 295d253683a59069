"""The Kafka sink: `deliver(page)` returns only once Kafka has acknowledged every message.

Idempotent producer (acks=all, enable.idempotence) so librdkafka's own retries never
duplicate; the Java client's murmur2 partitioner so a visit key lands on the partition a Java
or Kafka Streams consumer expects. A failed or timed-out delivery raises, which keeps the page
out of the checkpoint: the next run re-sends it (at-least-once; keys make re-sends idempotent
for compacting or deduplicating consumers).

DELIVERY=exactly_once uses `TransactionalSink` instead: a few transactional producers per
process, whatever the number of sites (sink/transactions.py), each site's pages and its new
checkpoint record (state topic) committed in one Kafka transaction (see state_topic.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from confluent_kafka import KafkaError, KafkaException, Producer

from matomo_kafka import __version__
from matomo_kafka.config.kafka_clients import (
    producer_config,
    transaction_timeout_ms,
    transactional_id,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import FencedError, KafkaDeliveryError
from matomo_kafka.model import Headers, Message
from matomo_kafka.refusals import kafka_dead_end, kafka_refusal

log = logging.getLogger(__name__)


class _OncePerMessage(logging.Filter):
    """librdkafka logs the same failure on every reconnect: keep the first of each."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


librdkafka_log = logging.getLogger("matomo_kafka.librdkafka")
librdkafka_log.addFilter(_OncePerMessage())


#: librdkafka errors after which waiting for acks is pointless (plus the transport errors
#: that are refusals, see refusals.kafka_dead_end: a certificate refused by the broker).
_HOPELESS = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError._SSL,
}


class PageAck:
    """Delivery reports of one page: `done` once every message is acknowledged or failed;
    `notify` (if any) is then called, from librdkafka's poll thread."""

    def __init__(self, expected: int, notify: Callable[[], object] | None = None) -> None:
        self.remaining = expected
        self.failed = 0
        self.first_error = ""
        self.done = threading.Event()
        self.notify = notify
        self._lock = threading.Lock()
        if expected == 0:
            self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.notify is not None:
            self.notify()

    def on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        with self._lock:
            self.remaining -= 1
            if error is not None:
                self.failed += 1
                self.first_error = self.first_error or error.str()
            if self.remaining <= 0:
                self._finish()


class KafkaSink:
    """Produces pages of keyed JSON messages to one topic and reports their acks per page.

    A background thread serves librdkafka's callbacks, so a page's acks are awaited on the
    page alone (no producer-wide flush) while the caller already prepares the next page.
    """

    def __init__(self, config: dict[str, Any], topic: str, connect_timeout: float = 15.0) -> None:
        self.topic = topic
        self.bootstrap = str(config.get("bootstrap.servers", ""))
        self.connect_timeout = connect_timeout
        self.delivery_timeout = float(config.get("message.timeout.ms", 120_000)) / 1000
        self._hopeless: str | None = None  # a refusal reported by librdkafka (error_cb)
        self._fatal: str | None = None  # a fatal error: this producer is unusable for good
        self._config = {**config, "error_cb": self._on_error, "logger": librdkafka_log}
        self._start()

    def _start(self) -> None:
        self._producer = Producer(self._config)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, args=(self._producer, self._closed), name="kafka-poll",
            daemon=True,
        )  # fmt: skip
        self._poller.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSink:
        return cls(producer_config(settings), settings.KAFKA_TOPIC, settings.KAFKA_CONNECT_TIMEOUT)

    @staticmethod
    def _poll_loop(producer: Producer, closed: threading.Event) -> None:
        """Serves one producer's callbacks until it is closed (its own, if rebuilt)."""
        while not closed.is_set():
            producer.poll(0.05)

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        log.debug("Kafka error callback: %s", text)  # librdkafka's own log line says it
        if error.fatal():
            self._fatal = text
        if error.code() in _HOPELESS or error.fatal() or kafka_dead_end(text):
            self._hopeless = text

    def recover(self) -> None:
        """Before each cycle of `follow` (by `check_topic`), which keeps one sink for the
        service's life: a refusal reported during an earlier cycle is forgotten, else a
        transient one (a broker restarting its TLS or SASL listener) would fail every later
        page whose acks take over 0.25 s while the broker is healthy again; if it still
        holds, librdkafka reports it again and `check_topic` fails with it. A producer that
        hit a fatal error is unusable by librdkafka's design (every later produce fails): it
        is rebuilt, with the same configuration. Nothing is in flight between cycles."""
        if self._fatal is not None:
            log.warning("Kafka producer rebuilt after a fatal error: %s", self._fatal)
            self._stop(flush=0.0)
            self._fatal = None
            self._start()
        self._hopeless = None

    def check_topic(self) -> int:
        """Fails fast, before reading Matomo, when Kafka or the topic is out of reach. Called
        before a run and before each cycle of `follow`: what an earlier cycle's client met is
        left behind first (`recover`)."""
        self.recover()
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                metadata = self._producer.list_topics(topic=self.topic, timeout=1.0)
                break
            except KafkaException as exc:
                time.sleep(0.1)  # lets the poller serve error_cb: an auth failure shows there
                hopeless = self._hopeless  # one read: the poll thread writes it
                if hopeless is not None:
                    raise KafkaDeliveryError(kafka_refusal(hopeless)) from None
                if time.monotonic() >= deadline:
                    detail = exc.args[0].str() if exc.args else str(exc)
                    raise KafkaDeliveryError(
                        f"Kafka unreachable at {self.bootstrap} within "
                        f"{self.connect_timeout:.0f}s ({detail})"
                    ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "not found"
            raise KafkaDeliveryError(f"Kafka topic {self.topic!r} is not usable: {reason}")
        return len(topic.partitions)

    def send(
        self,
        messages: Sequence[Message],
        headers: Headers,
        notify: Callable[[], object] | None = None,
    ) -> PageAck:
        """Queues a page for delivery and returns at once; `wait()` on the result."""
        ack = PageAck(len(messages), notify)
        produce = self._producer.produce
        for message in messages:
            while True:
                try:
                    produce(
                        self.topic,
                        value=message.value,
                        key=message.key,
                        headers=headers,
                        on_delivery=ack.on_delivery,
                    )
                    break
                except BufferError:
                    time.sleep(0.01)  # local queue full: the poller drains it as acks come
                except KafkaException as exc:
                    raise KafkaDeliveryError(
                        f"Kafka refused message {message.key.decode(errors='replace')}: "
                        f"{exc.args[0].str() if exc.args else exc}"
                    ) from None
        return ack

    def wait(self, ack: PageAck) -> None:
        """Blocks until every message of the page is acknowledged; raises if any is not."""
        deadline = time.monotonic() + self.delivery_timeout + 30
        while not ack.done.wait(0.25):
            hopeless = self._hopeless  # one read: the poll thread writes it
            if hopeless is not None:
                self.abort()
                raise KafkaDeliveryError(f"Kafka refused the client: {hopeless}")
            if time.monotonic() > deadline:
                self.abort()
                raise KafkaDeliveryError(
                    f"Kafka did not acknowledge {ack.remaining} messages within "
                    f"{self.delivery_timeout:.0f}s"
                )
        if ack.failed:
            self.abort()
            raise KafkaDeliveryError(
                f"Kafka failed to deliver {ack.failed} messages: {ack.first_error}"
            )

    def deliver(self, messages: Sequence[Message], headers: Headers) -> None:
        """send() then wait(): the page is acknowledged when this returns."""
        self.wait(self.send(messages, headers))

    def abort(self) -> None:
        """Drops whatever is still queued: it will be re-sent from the last checkpoint."""
        with contextlib.suppress(KafkaException):
            self._producer.purge()

    def close(self, timeout: float = 10.0) -> None:
        """Flushes, then drops the producer: librdkafka is destroyed now, not at interpreter
        exit, where its threads' log and error callbacks can crash a finalizing interpreter
        (error_cb makes a cycle with this sink, which the CLI's gc.freeze() keeps; a TLS
        refusal test saw exit -11 after the right error line)."""
        self._stop(flush=timeout)

    def _stop(self, flush: float) -> None:
        """Flushes for up to `flush` seconds (0: drops what is queued), stops the poller,
        drops the producer."""
        producer = getattr(self, "_producer", None)
        if producer is None:
            return  # closed already
        try:
            if flush > 0:
                producer.flush(flush)
            else:
                with contextlib.suppress(KafkaException, RuntimeError):
                    producer.purge()
        finally:
            self._closed.set()
            self._poller.join(timeout=2)
            if not self._poller.is_alive():
                del self._producer
            del producer


_FENCING_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class TransactionalSink:
    """A transactional producer: `commit()` writes a site's pages of visits and its
    checkpoint record in one transaction and returns once Kafka committed it. `idsite` names
    the site in its errors (set by each commit when the producer serves many sites).

    Any failure before the commit aborts the transaction (none of its records ever becomes
    visible to read_committed consumers) and raises KafkaDeliveryError; being fenced by a
    newer producer with the same transactional.id raises FencedError (Kafka itself aborted
    what was in flight).
    """

    def __init__(self, settings: Settings, idsite: int, txn_id: str | None = None) -> None:
        self.idsite = idsite
        self.topic = settings.KAFKA_TOPIC
        self.state_topic = settings.state_topic
        self.transactional_id = txn_id or transactional_id(settings.KAFKA_TOPIC, idsite)
        txn_ms = transaction_timeout_ms(settings)
        self.timeout = txn_ms / 1000
        self.connect_timeout = max(settings.KAFKA_CONNECT_TIMEOUT, 30.0)
        self._fatal: str | None = None
        config = producer_config(settings)
        # Connected to every broker at once: with sparse connections librdkafka waited up to
        # 500 ms for the transaction coordinator's connection in one init_transactions of
        # three (measured); a process has only MATOMO_MAX_CONCURRENCY of these producers.
        config.update(
            {
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": txn_ms,
                "enable.sparse.connections": False,
            }
        )
        self._producer = Producer({**config, "error_cb": self._on_error, "logger": librdkafka_log})

    def _on_error(self, error: KafkaError) -> None:
        log.debug("Kafka error callback (site %d): %s", self.idsite, error.str())
        if error.fatal():
            self._fatal = error.str()

    def init(self) -> None:
        """Registers the transactional.id with Kafka: fences any older producer using it (on
        this host or another) and aborts the transaction it left open. The topic's metadata is
        asked for first: librdkafka looks for the transaction coordinator at once only if a
        broker connection is up, else it waits for its 500 ms retry timer (seen here on one
        init in five, on most when many sites start together)."""
        try:
            with contextlib.suppress(KafkaException):  # init_transactions reports the failure
                self._producer.list_topics(self.topic, timeout=self.connect_timeout)
            self._producer.init_transactions(self.connect_timeout)
        except KafkaException as exc:
            error = _error_of(exc)
            if (
                error is not None
                and error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            ):
                raise KafkaDeliveryError(
                    f"Kafka refused transactions (transactional.id "
                    f"{self.transactional_id!r}): ask the Kafka admins for WRITE and DESCRIBE "
                    f"on the transactional ids prefixed 'matomo-kafka.{self.topic}.'"
                ) from None
            raise KafkaDeliveryError(
                f"Kafka could not start transactions (transactional.id "
                f"{self.transactional_id!r}): {_describe(exc)}"
            ) from None

    def commit(
        self,
        pages: Sequence[tuple[Sequence[Message], Headers]],
        state_key: bytes | None,
        state_value: bytes | None,
        site: int | None = None,
        then: Callable[[], tuple[bytes, bytes] | None] | None = None,
    ) -> None:
        """Sends pages of visits (each with its headers) and the checkpoint record (if any: a
        re-scan moves no checkpoint) in one transaction and commits it; `site`: whose.
        `then`, once the visits are queued: may wait (for the site's previous transaction to
        commit) and gives the checkpoint record; if it raises, the transaction is aborted."""
        if site is not None:
            self.idsite = site
        producer = self._producer
        committing = False
        try:
            producer.begin_transaction()
            topic = self.topic
            for messages, headers in pages:
                for message in messages:
                    self._produce(topic, message.value, message.key, headers)
            if then is not None:
                try:
                    record = then()
                except BaseException:
                    self.abort()  # none of these visits may be committed
                    raise
                state_key, state_value = record if record is not None else (None, None)
            if state_key is not None:  # the local queue may be full for it too
                self._produce(self.state_topic, state_value, state_key, None)
            committing = True
            self._commit()
        except KafkaException as exc:
            self._fail(exc, committing)

    def _produce(
        self, topic: str, value: bytes | None, key: bytes, headers: Headers | None
    ) -> None:
        """Queues one record of the transaction, waiting while the local queue is full."""
        producer = self._producer
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                producer.poll(0.01)  # local queue full: let acks drain it

    #: Seconds a commit is retried past the transaction timeout (a retriable error, such as
    #: librdkafka's own timeout, while the commit goes on in the background).
    commit_grace = 30.0

    def commit_state(self, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """State topic records (key, value) alone, in one transaction: claims, a reset."""
        committing = False
        try:
            self._producer.begin_transaction()
            for key, value in records:
                self._produce(self.state_topic, value, key, None)
            committing = True
            self._commit()
        except KafkaException as exc:
            self._fail(exc, committing)

    def _commit(self) -> None:
        deadline = time.monotonic() + self.timeout + self.commit_grace
        while True:
            try:
                self._producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                error = _error_of(exc)
                retriable = error is not None and error.retriable()
                if not retriable or time.monotonic() >= deadline:
                    raise

    def _fail(self, exc: KafkaException, committing: bool = False) -> NoReturn:
        """Raises what the failure means for the transaction. `committing`: the commit was
        asked for, and a retriable error (a timeout) leaves its outcome unknown: librdkafka
        goes on committing in the background and refuses an abort meanwhile. Whichever way it
        ends, the site's next claim fences this producer (its transaction is completed or
        aborted by Kafka) and resumes from the state topic's last committed checkpoint."""
        error = _error_of(exc)
        reason = _describe(exc)
        if self.fenced(error):
            raise FencedError(
                f"fenced by another instance working on site {self.idsite} (transactional.id "
                f"{self.transactional_id!r}): this instance stops; Kafka aborted its transaction "
                "in flight, the other instance goes on from the last committed page"
            ) from None
        if error is not None and error.fatal():
            raise KafkaDeliveryError(
                f"Kafka: fatal producer error on site {self.idsite}: {reason}; its transaction "
                "in flight is never committed (rerun resumes from the last committed page)"
            ) from None
        if (
            committing
            and error is not None
            and error.retriable()
            and not error.txn_requires_abort()
        ):
            raise KafkaDeliveryError(
                f"Kafka did not confirm the commit of site {self.idsite}'s transaction within "
                f"{self.timeout + self.commit_grace:.0f}s ({reason}): outcome unknown, Kafka "
                "may still commit it; the rerun resumes from the state topic's last committed "
                "checkpoint, which says whether it did: nothing lost, nothing sent twice"
            ) from None
        aborted = self.abort()
        outcome = (
            "aborted, none of its visits is visible to read_committed consumers"
            if aborted
            else "not committed (Kafka aborts it when the transaction times out)"
        )
        raise KafkaDeliveryError(
            f"Kafka failed the transaction of site {self.idsite}: {reason}; {outcome}; rerun "
            "resumes from the last committed page"
        ) from None

    def fenced(self, error: KafkaError | None) -> bool:
        if error is not None and error.code() in _FENCING_CODES:
            return True
        texts = [self._fatal or "", error.str() if error is not None else ""]
        return any("fenced" in text.lower() for text in texts)

    def abort(self) -> bool:
        """Aborts the open transaction, if any; False when Kafka could not be told."""
        try:
            self._producer.abort_transaction(self.timeout)
            return True
        except KafkaException as exc:
            log.warning("site %d: could not abort the transaction: %s", self.idsite, _describe(exc))
            return False

    def close(self) -> None:
        """Drops the producer. Not Producer.close(): it aborts and flushes with no timeout,
        which would hang while Kafka is unreachable. A failure already aborted its
        transaction (or Kafka will: fencing by the next run, or the transaction timeout)."""
        producer = self._producer
        with contextlib.suppress(KafkaException, RuntimeError):
            producer.purge(in_queue=True, in_flight=True, blocking=False)
        del self._producer  # the last reference: librdkafka's destroy, bounded
        del producer


def _error_of(exc: KafkaException) -> KafkaError | None:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


def _describe(exc: KafkaException) -> str:
    error = _error_of(exc)
    return error.str() if error is not None else str(exc)


def page_headers(idsite: int, day: str) -> Headers:
    """The same small header set on every message of a page, built once per page."""
    return [
        ("matomo.idsite", str(idsite).encode()),
        ("matomo.day", day.encode()),
        ("producer", f"matomo-kafka/{__version__}".encode()),
    ]
