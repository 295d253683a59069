"""What a failed exactly-once transaction's message says (sink/producer.py
`TransactionalSink._fail`): a commit that timed out may still complete (librdkafka goes on
in the background and refuses an abort meanwhile), so its outcome is unknown, never "not
committed". The producer here is a stand-in that answers as librdkafka does: the decision
and its words are under test, not Kafka (the transactions themselves are proven against the
real broker in tests/integration/test_exactly_once.py)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from matomo_kafka.errors import KafkaDeliveryError
from matomo_kafka.model import Message
from matomo_kafka.sink.producer import TransactionalSink


class _Librdkafka:
    """A transactional producer whose commit ends with `commit_error` (each call), and
    whose abort is refused while a commit is under way, as librdkafka's is."""

    def __init__(self, commit_error: KafkaError) -> None:
        self.commit_error = commit_error
        self.committing = False
        self.aborts = 0

    def begin_transaction(self) -> None:
        self.committing = False

    def produce(self, topic: str, **_: Any) -> None:
        pass

    def poll(self, timeout: float) -> int:
        return 0

    def commit_transaction(self, timeout: float) -> None:
        self.committing = True
        raise KafkaException(self.commit_error)

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1
        if self.committing and self.commit_error.retriable():
            raise KafkaException(KafkaError(KafkaError._STATE, "commit in progress"))


def _sink(producer: _Librdkafka) -> TransactionalSink:
    sink = TransactionalSink.__new__(TransactionalSink)  # no librdkafka client: no network
    sink.idsite, sink.topic, sink.state_topic = 7, "visits", "visits.state"
    sink.transactional_id, sink.timeout, sink._fatal = "matomo-kafka.visits.7", 0.0, None
    sink._producer = producer  # type: ignore[assignment]
    sink.commit_grace = 0.0  # one commit attempt, not 30 s of them
    return sink


def _commit(sink: TransactionalSink) -> str:
    with pytest.raises(KafkaDeliveryError) as raised:
        sink.commit([([Message(b"7:1", b"{}")], [])], b"7", b"{}")
    return str(raised.value)


def test_a_commit_that_timed_out_is_an_unknown_outcome() -> None:
    timed_out = KafkaError(KafkaError._TIMED_OUT, "Transactional API operation timed out",
                           retriable=True)  # fmt: skip
    producer = _Librdkafka(timed_out)
    message = _commit(_sink(producer))
    assert "outcome unknown" in message and "may still commit" in message
    assert "not committed" not in message and "aborted" not in message
    assert "state topic's last committed checkpoint" in message
    assert producer.aborts == 0, "librdkafka refuses an abort while it commits"


def test_a_commit_refused_for_good_is_aborted() -> None:
    refused = KafkaError(KafkaError.INVALID_TXN_STATE, "refused", txn_requires_abort=True)
    producer = _Librdkafka(refused)
    message = _commit(_sink(producer))
    assert "aborted, none of its visits is visible" in message
    assert producer.aborts == 1
