"""`follow` keeps one Kafka sink for the service's life: what librdkafka reports once (a
refusal, a fatal error) must not fail every later cycle while the broker is healthy
(sink/producer.py `KafkaSink.recover`, called by `check_topic` before each cycle). The
reports are handed to the sink's error callback as librdkafka hands them; the deliveries
are real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError

from matomo_kafka.errors import KafkaDeliveryError
from matomo_kafka.model import Message
from matomo_kafka.sink.producer import KafkaSink
from support.kafka import read_topic

pytestmark = [pytest.mark.kafka]

PAGE = [Message(b"1:1", b"{}")]


@pytest.fixture
def slow_acks(kafka_bootstrap: str, topic: str) -> Iterator[KafkaSink]:
    """A sink whose acks take 0.4 s (linger.ms): longer than its 0.25 s look at refusals."""
    config = {"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True,
              "linger.ms": 400}  # fmt: skip
    sink = KafkaSink(config, topic)
    try:
        yield sink
    finally:
        sink.close()


@pytest.mark.parametrize(
    "report",
    [KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: transient"),
     KafkaError(KafkaError._SSL, "SSL handshake failed: broker restarting"),
     KafkaError(KafkaError._FATAL, "fatal idempotent producer error", fatal=True)],
    ids=["auth", "tls", "fatal"],
)  # fmt: skip
def test_a_later_cycle_recovers_from_one_report(
    slow_acks: KafkaSink, topic: str, report: KafkaError
) -> None:
    sink = slow_acks
    sink.check_topic()
    sink.deliver(PAGE, [])
    sink._on_error(report)  # what librdkafka's error callback reports, once
    with pytest.raises(KafkaDeliveryError, match="refused the client"):
        sink.deliver(PAGE, [])  # the cycle it happened in fails its page (not checkpointed)
    for _cycle in range(2):  # the next cycles: Kafka is healthy, they deliver
        sink.check_topic()  # what each cycle does first
        sink.deliver(PAGE, [])
    assert len(read_topic(topic)) >= 3  # the first and the two later pages (+ maybe the failed)


def test_a_fatal_error_rebuilds_the_producer(slow_acks: KafkaSink) -> None:
    sink = slow_acks
    before = sink._producer
    sink._on_error(KafkaError(KafkaError._FATAL, "fatal", fatal=True))
    sink.check_topic()
    assert sink._producer is not before
    sink.deliver(PAGE, [])


def test_a_refusal_that_holds_is_reported_again(kafka_bootstrap: str, topic: str) -> None:
    """recover() forgets a report, not a refusal: a broker that keeps refusing is said so by
    the next check, as before (here: SASL credentials on a plaintext listener's port)."""
    config = {"bootstrap.servers": kafka_bootstrap, "security.protocol": "SASL_PLAINTEXT",
              "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}  # fmt: skip
    sink = KafkaSink(config, topic, connect_timeout=5)
    try:
        for _cycle in range(2):
            with pytest.raises(KafkaDeliveryError):
                sink.check_topic()
    finally:
        sink.close(timeout=1)
