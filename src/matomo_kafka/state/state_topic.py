"""DELIVERY=exactly_once: each site's checkpoint as a record of a compacted Kafka topic.

The state topic (KAFKA_STATE_TOPIC, default `<KAFKA_TOPIC>.state`, cleanup.policy=compact)
holds one record per site and transaction: key `str(idsite)`, value compact JSON
`{"site", "day", "offset", "seq", ...}` = the cursor once the transaction's pages (one, or a
few that were ready together) are committed. It is written in the same Kafka transaction as
those pages' visits (sink.TransactionalSink), so the visits and the checkpoint become visible
together or not at all.

Reading it back (`StateReader`) uses isolation.level=read_committed and reads every partition
to the end it had when the read started (the high watermark, not the last stable offset, so a
checkpoint committed after a transaction of another site still open is not missed): records
of aborted transactions are never seen. Per site the record with the highest `seq` wins
(within a partition, the last one): `seq` grows by one per commit, so the order holds even
if partitions are added to the topic. A tombstone (null value) deletes the site's checkpoint:
the next run starts again from the seed checkpoint files.

Claims (`claim.<idsite>`, ignored by readers that only know checkpoints): which instance owns
a site, i.e. which transactional ids may write its checkpoint (`Owner`: a prefix and a count
of producers). An instance claims its sites once, in one transaction of the claims' own
transactional id, after fencing the ids of each site's previous owner: see
sink/transactions.py and docs/exactly-once.md for why this fences a zombie.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from matomo_kafka import __version__
from matomo_kafka.config.kafka_clients import client_config, transaction_timeout_ms
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import CheckpointError, KafkaDeliveryError
from matomo_kafka.model import Cursor

log = logging.getLogger(__name__)


#: Kafka errors meaning "this client may not create topics" (ask the admins).
_REFUSED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.POLICY_VIOLATION,
    KafkaError.INVALID_REPLICATION_FACTOR,
}


@dataclass(frozen=True)
class StateRecord:
    """A site's checkpoint as read from the state topic. `txn`: the transactional id prefix
    of the instance that committed it (None: written before claims existed, by a site's own
    transactional id `matomo-kafka.<KAFKA_TOPIC>.<idsite>`)."""

    idsite: int
    cursor: Cursor
    seq: int
    txn: str | None = None


@dataclass(frozen=True)
class Owner:
    """The transactional ids of one instance: `<prefix>.0` .. `<prefix>.<producers - 1>`."""

    prefix: str
    producers: int

    def ids(self) -> list[str]:
        return [f"{self.prefix}.{k}" for k in range(self.producers)]


def encode(
    settings: Settings, idsite: int, cursor: Cursor, seq: int, by: str, txn: str | None = None
) -> bytes:
    """The state record's value: the cursor, plus who wrote it, for people reading the topic
    (and `txn`, the writer's transactional id prefix, for the claims' checks)."""
    body: dict[str, object] = {
        "site": idsite,
        "day": cursor.day.isoformat(),
        "offset": cursor.offset,
        "last_action": cursor.last_action,
        "ids": sorted(cursor.ids),
        "seq": seq,
        "topic": settings.KAFKA_TOPIC,
        "by": by,
        "host": socket.gethostname(),
        "clusterid": settings.CLUSTERID,
        "producer": f"matomo-kafka/{__version__}",
        "committed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if txn is not None:
        body["txn"] = txn
    return orjson.dumps(body)


def state_key(idsite: int) -> bytes:
    return str(idsite).encode()


#: The prefix of a claim's key: `claim.<idsite>` (not all digits: older readers skip it).
CLAIM_PREFIX = "claim."


def claim_key(idsite: int) -> bytes:
    return f"{CLAIM_PREFIX}{idsite}".encode()


def encode_claim(settings: Settings, idsite: int, owner: Owner, by: str) -> bytes:
    """A claim's value: the owner's transactional ids, plus who claimed, for people."""
    return orjson.dumps(
        {
            "site": idsite,
            "txn": owner.prefix,
            "producers": owner.producers,
            "topic": settings.KAFKA_TOPIC,
            "by": by,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "producer": f"matomo-kafka/{__version__}",
            "claimed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
    )


def _json_object(value: bytes) -> dict[str, Any]:
    """ValueError when the value is not one JSON object."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def decode_claim(idsite: int, value: bytes) -> Owner:
    """ValueError when the value is not a claim of this site."""
    body = _json_object(value)
    prefix, producers = body.get("txn"), body.get("producers")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("no txn")
    if isinstance(producers, bool) or not isinstance(producers, int) or not 1 <= producers <= 64:
        raise ValueError("producers is not a count of producers")
    if body.get("site", idsite) != idsite:
        raise ValueError(f"its site is {body.get('site')!r}, not its key")
    return Owner(prefix, producers)


def decode(idsite: int, value: bytes) -> StateRecord:
    """ValueError when the value is not a checkpoint of this site."""
    body = _json_object(value)
    day, offset, seq = body.get("day"), body.get("offset", 0), body.get("seq", 0)
    if not isinstance(day, str):
        raise ValueError("no day")
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"day {day[:20]!r} is not YYYY-MM-DD") from None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError("offset is not a number of visits")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError("seq is not an integer")
    if body.get("site", idsite) != idsite:
        raise ValueError(f"its site is {body.get('site')!r}, not its key")
    last_action, ids = body.get("last_action"), body.get("ids") or []
    if last_action is not None and (
        isinstance(last_action, bool) or not isinstance(last_action, int)
    ):
        raise ValueError("last_action is not a Unix time")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError("ids is not a list of visit ids")
    if ids and last_action is None:
        raise ValueError("ids without last_action")
    txn = body.get("txn")
    if txn is not None and not isinstance(txn, str):
        raise ValueError("txn is not a transactional id prefix")
    return StateRecord(idsite, Cursor(parsed, offset, last_action, frozenset(ids)), seq, txn)


def _admin_refusal(topic: str, settings: Settings, reason: str) -> KafkaDeliveryError:
    return KafkaDeliveryError(
        f"Kafka state topic {topic!r} does not exist and Kafka refused to create it ({reason}): "
        f"ask the Kafka admins to create {topic!r} with cleanup.policy=compact (1 partition, "
        "the cluster's replication factor), to grant this client READ, WRITE and DESCRIBE on "
        "it, and WRITE and DESCRIBE on the transactional ids prefixed "
        f"'matomo-kafka.{settings.KAFKA_TOPIC}.'"
    )


def ensure_state_topic(settings: Settings) -> int:
    """The state topic's partition count; creates it (compacted, 1 partition, the cluster's
    replication factor) when missing. A topic that is not compacted is only warned about."""
    topic = settings.state_topic
    timeout = settings.KAFKA_CONNECT_TIMEOUT
    admin = AdminClient(client_config(settings, "admin"))
    try:
        metadata = admin.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaDeliveryError(
            f"Kafka unreachable at {settings.KAFKA_SERVERS} ({_text(exc)})"
        ) from None
    described = metadata.topics.get(topic)
    missing = described is None or (
        described.error is not None and described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    )
    if missing:
        new = NewTopic(
            topic,
            num_partitions=1,
            replication_factor=-1,  # the cluster's default.replication.factor
            config={"cleanup.policy": "compact"},
        )
        try:
            admin.create_topics([new], request_timeout=timeout)[topic].result(timeout=timeout + 5)
            log.info("created the state topic %s (cleanup.policy=compact, 1 partition)", topic)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                pass  # another instance created it meanwhile
            elif code in _REFUSED:
                raise _admin_refusal(topic, settings, _text(exc)) from None
            else:
                raise KafkaDeliveryError(
                    f"Kafka state topic {topic!r} does not exist and could not be created "
                    f"({_text(exc)})"
                ) from None
        return _wait_for_partitions(admin, topic, timeout)
    assert described is not None
    if described.error is not None:
        raise KafkaDeliveryError(
            f"Kafka state topic {topic!r} is not usable: {described.error.str()} (ask the Kafka "
            "admins for READ, WRITE and DESCRIBE on it)"
        )
    _warn_if_not_compacted(admin, topic, timeout)
    return len(described.partitions)


def _wait_for_partitions(admin: AdminClient, topic: str, timeout: float) -> int:
    """A topic just created takes a moment to show up in the metadata."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            described = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        except KafkaException:
            described = None
        if described is not None and described.error is None and described.partitions:
            return len(described.partitions)
        if time.monotonic() > deadline:
            raise KafkaDeliveryError(f"Kafka state topic {topic!r} was created but is not ready")
        time.sleep(0.1)


def _warn_if_not_compacted(admin: AdminClient, topic: str, timeout: float) -> None:
    try:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout + 5
        )
    except KafkaException as exc:
        log.debug("cannot describe the state topic %s: %s", topic, _text(exc))
        return
    policy = configs.get("cleanup.policy")
    if policy is not None and "compact" not in str(policy.value):
        log.warning(
            "state topic %s has cleanup.policy=%s: its checkpoints expire with retention; ask "
            "the Kafka admins for cleanup.policy=compact",
            topic,
            policy.value,
        )


class StateReader:
    """The latest committed checkpoint of each site in the state topic, read incrementally:
    each `latest()` first reads every partition up to its current end, so a record committed
    before the call is always seen. Thread-safe (one read at a time)."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        self.topic = settings.state_topic
        self.timeout = settings.KAFKA_CONNECT_TIMEOUT
        # An open transaction of another instance holds read_committed readers back until it
        # ends; a dead instance's one ends when Kafka aborts it (transaction timeout).
        self.wait_limit = transaction_timeout_ms(settings) / 1000 + 30
        group = f"matomo-kafka-state-{uuid.uuid4().hex}"
        base = client_config(settings, "state")
        common = {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        self._consumer = Consumer({**base, **common, "isolation.level": "read_committed"})
        self._ends = Consumer({**base, **common, "isolation.level": "read_uncommitted"})
        self._partitions = [TopicPartition(self.topic, p) for p in range(partitions)]
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._latest: dict[int, StateRecord] = {}
        self._invalid: dict[int, str] = {}
        self._owners: dict[int, Owner] = {}  # each site's latest claim
        self._invalid_claims: dict[int, str] = {}
        self._lock = threading.Lock()
        self._read_since = float("-inf")  # the last complete read began then (monotonic)

    def latest(self, idsite: int, since: float | None = None) -> StateRecord | None:
        """The site's latest committed checkpoint, or None if the topic has none for it.
        `since` (time.monotonic()): what was committed before it is enough, so a read that
        began after it serves too (sites starting together share one read)."""
        with self._lock:
            if since is None or self._read_since < since:
                started = time.monotonic()
                self._catch_up()
                self._read_since = started
            problem = self._invalid.get(idsite)
            if problem is not None:
                raise CheckpointError(
                    f"state topic {self.topic!r}: the latest checkpoint of site {idsite} is "
                    f"invalid ({problem}); `matomo-kafka reset --site {idsite} --date DAY` "
                    "writes a valid one"
                )
            return self._latest.get(idsite)

    def owner(self, idsite: int) -> Owner | None:
        """The owner named by the site's latest claim read so far (None: never claimed).
        CheckpointError if that claim is not one."""
        with self._lock:
            problem = self._invalid_claims.get(idsite)
            if problem is not None:
                raise CheckpointError(
                    f"state topic {self.topic!r}: the latest claim of site {idsite} is invalid "
                    f"({problem}): delete it with a tombstone (key "
                    f"'{CLAIM_PREFIX}{idsite}', null value), then run again"
                )
            return self._owners.get(idsite)

    def legacy(self, idsite: int) -> bool:
        """The site's latest checkpoint read so far was committed by its own transactional
        id (a version before claims), and no claim names an owner since."""
        with self._lock:
            record = self._latest.get(idsite)
            unclaimed = idsite not in self._owners and idsite not in self._invalid_claims
            return record is not None and record.txn is None and unclaimed

    def read_to_end(self, patience: float | None) -> bool:
        """Reads what is committed up to the partitions' current ends; False (nothing lost:
        a later read goes on) if a transaction still open holds the read back longer than
        `patience` seconds."""
        with self._lock:
            started = time.monotonic()
            done = self._catch_up(patience)
            if done:
                self._read_since = started
            return done

    def _catch_up(self, patience: float | None = None) -> bool:
        ends: dict[int, int] = {}
        try:
            for tp in self._partitions:
                low, high = self._ends.get_watermark_offsets(tp, timeout=self.timeout, cached=False)
                if high > low:
                    ends[tp.partition] = high
        except KafkaException as exc:
            raise KafkaDeliveryError(
                f"Kafka state topic {self.topic!r} cannot be read: {_text(exc)}"
            ) from None
        started = time.monotonic()
        warned = False
        while ends:
            try:
                for message in self._consumer.consume(num_messages=1000, timeout=0.02):
                    self._apply(message)
                positions = self._consumer.position([TopicPartition(self.topic, p) for p in ends])
            except KafkaException as exc:
                raise KafkaDeliveryError(
                    f"Kafka state topic {self.topic!r} cannot be read: {_text(exc)}"
                ) from None
            for tp in positions:
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
            waited = time.monotonic() - started
            if ends and patience is not None and waited > patience:
                return False
            if ends and not warned and waited > 5:
                warned = True
                log.warning(
                    "state topic %s: waiting for a transaction still open on partition(s) %s "
                    "(another instance; one that died is aborted by Kafka within %.0fs)",
                    self.topic, sorted(ends), self.wait_limit - 30,
                )  # fmt: skip
            if ends and waited > self.wait_limit:
                raise KafkaDeliveryError(
                    f"Kafka state topic {self.topic!r}: partition(s) {sorted(ends)} could not be "
                    f"read to their end within {self.wait_limit:.0f}s (a transaction stays open)"
                )
        return True

    def _apply(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaDeliveryError(f"Kafka state topic {self.topic!r}: {error.str()}")
        key = message.key()
        text = key.decode(errors="replace") if key else ""
        if text.startswith(CLAIM_PREFIX) and text[len(CLAIM_PREFIX) :].isdigit():
            self._apply_claim(int(text[len(CLAIM_PREFIX) :]), message)
            return
        if not text.isdigit():
            return  # not a site's checkpoint: ignored
        idsite = int(text)
        value = message.value()
        where = f"partition {message.partition()}, offset {message.offset()}"
        if value is None:  # tombstone: the site's checkpoint was deleted on purpose
            self._latest.pop(idsite, None)
            self._invalid.pop(idsite, None)
            return
        try:
            record = decode(idsite, value)
        except ValueError as exc:
            self._invalid[idsite] = f"{where}: {exc}"
            return
        current = self._latest.get(idsite)
        if current is None or record.seq >= current.seq or idsite in self._invalid:
            self._latest[idsite] = record
            self._invalid.pop(idsite, None)

    def _apply_claim(self, idsite: int, message: Any) -> None:
        value = message.value()
        self._invalid_claims.pop(idsite, None)
        if value is None:  # tombstone: the claim was deleted on purpose
            self._owners.pop(idsite, None)
            return
        try:
            self._owners[idsite] = decode_claim(idsite, value)
        except ValueError as exc:
            self._owners.pop(idsite, None)
            where = f"partition {message.partition()}, offset {message.offset()}"
            self._invalid_claims[idsite] = f"{where}: {exc}"

    def close(self) -> None:
        for consumer in (self._consumer, self._ends):
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()


def _text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
