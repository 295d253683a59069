"""What the topic holds for a site's days, read back: every record of the site keyed
`<idSite>:<idVisit>` with header `matomo.day`, from the first record produced at or after the
first day's start (in the site's timezone) minus START_MARGIN, up to each partition's end when
the read began (see `read_start`). `audit` counts it, `reconcile` compares it with Matomo.
The cost grows with the records produced since the days began, not with the topic.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from matomo_kafka.config.kafka_clients import client_config
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import KafkaReadError
from matomo_kafka.source.days import day_end, day_range
from matomo_kafka.source.responses import as_int
from matomo_kafka.state.sent_log import digest

STALL_SECONDS = 30.0
#: How far before the first day's start the read begins: slack for clocks behind (see read_start).
START_MARGIN = timedelta(hours=1)


def consumer_config(settings: Settings) -> dict[str, Any]:
    """A reading client with the run's connection and security settings (secrets included:
    never log this dict); no group membership, no offset commits."""
    config = client_config(settings, "audit")
    config.update(
        {
            "client.id": f"matomo-kafka-{settings.CLUSTERID}-audit",
            "group.id": f"matomo-kafka-audit-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    return config


def read_start(first: date, tz: tzinfo) -> datetime:
    """The instant (UTC) the topic is read from: `first`'s start in the site's timezone minus
    START_MARGIN.

    Nothing of the days audited comes before it. A message's timestamp is its produce time:
    CreateTime, the producer's clock (the tool never sets one), or LogAppendTime, the broker's,
    if the topic is configured so. A visit of day D exists in Matomo only once D has begun, so
    any producer sends it after D began; this tool reads a day only once it is closed, so it
    sends it after D ended. A message of D could be stamped before this instant only by a clock
    behind by more than START_MARGIN (a producer that read open days), or by more than a day
    plus START_MARGIN (this tool); `audit` would not count it: a visit only there shows as
    missing, never as ok. A midnight skipped by a DST change is read with the offset before
    the change (days.day_end)."""
    return (day_end(first - timedelta(days=1), tz) - START_MARGIN).astimezone(UTC)


@dataclass(frozen=True)
class SentRead:
    """What the topic holds for a site's days, and what reading it cost."""

    sent: dict[date, Counter[int]]  # idVisit -> messages (values, not tombstones), per day
    since: datetime  # the read started at the first record stamped at or after this (UTC)
    read: int  # records read (every key: the topic is shared by all sites)
    total: int  # records in the topic's partitions (offsets from low to high watermark)
    #: idVisit -> digest of its newest record, None for a tombstone, per day (reconcile.py)
    latest: dict[date, dict[int, bytes | None]] = field(default_factory=dict)


def read_sent(
    settings: Settings, idsite: int, first: date, last: date, since: datetime
) -> SentRead:
    """idVisit -> number of messages, per day in [first, last], for one site; and the digest
    of each one's newest record (a key has one partition: read in offset order), None when it
    is a tombstone.

    Each partition is read from `Consumer.offsets_for_times(since)` (the first offset whose
    timestamp is at or after `since`: every later record is read too, whatever its timestamp)
    up to its high watermark taken before, so messages produced during the audit are not
    waited for. A partition with no record that recent (offsets_for_times answers -1, or an
    offset at or past the watermark) has nothing to read. `total` counts offsets: on a
    transactional topic, commit markers too."""
    sent: dict[date, Counter[int]] = {day: Counter() for day in day_range(first, last)}
    latest: dict[date, dict[int, bytes | None]] = {day: {} for day in sent}
    days = {day.isoformat().encode(): day for day in sent}
    prefix = f"{idsite}:".encode()

    def count(message: KafkaMessage) -> None:
        key = message.key()
        if not key or not key.startswith(prefix):
            return
        header_day = next(
            (pair[1] for pair in message.headers() or [] if pair[0] == "matomo.day"), None
        )
        day = days.get(header_day) if isinstance(header_day, bytes) else None
        idvisit = as_int(key[len(prefix) :].decode(errors="replace"))
        if day is not None and idvisit is not None:
            value = message.value()
            if value is not None:
                sent[day][idvisit] += 1
            latest[day][idvisit] = None if value is None else digest(value)

    consumer = Consumer(consumer_config(settings))
    try:
        try:
            starts, ends, total = _read_ranges(consumer, settings, since)
        except KafkaException as exc:
            detail = exc.args[0].str() if exc.args else str(exc)
            raise KafkaReadError(
                f"Kafka unreachable at {settings.KAFKA_SERVERS}: {detail}"
            ) from None
        read = _read_records(consumer, settings.KAFKA_TOPIC, starts, ends, count)
    finally:
        consumer.close()
    return SentRead(sent, since, read, total, latest)


def _read_ranges(
    consumer: Consumer, settings: Settings, since: datetime
) -> tuple[dict[int, int], dict[int, int], int]:
    """Per partition, the first offset to read (produced at or after `since`) and the high
    watermark to stop at; and how many offsets the partitions hold in all."""
    topic, timeout = settings.KAFKA_TOPIC, settings.KAFKA_CONNECT_TIMEOUT
    metadata = consumer.list_topics(topic, timeout=timeout)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        reason = described.error.str() if described and described.error else "not found"
        raise KafkaReadError(f"Kafka topic {topic!r} is not usable: {reason}")
    ends: dict[int, int] = {}
    total = 0
    for partition in sorted(described.partitions):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout
        )
        total += max(0, high - low)
        if high > low:
            ends[partition] = high
    starts: dict[int, int] = {}
    if not ends:
        return starts, ends, total
    since_ms = int(since.timestamp() * 1000)
    found = consumer.offsets_for_times(
        [TopicPartition(topic, p, since_ms) for p in ends], timeout=timeout
    )
    for tp in found:
        if tp.error is not None:
            raise KafkaReadError(
                f"Kafka topic {topic!r}: partition {tp.partition}: no offset for "
                f"{since:%Y-%m-%d %H:%M} UTC: {tp.error.str()}"
            )
        # -1: no record stamped that recently; at or past the end: only ones produced since
        # the watermarks were read. Nothing to read either way.
        if 0 <= tp.offset < ends[tp.partition]:
            starts[tp.partition] = tp.offset
    return starts, ends, total


def _read_records(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    count: Callable[[KafkaMessage], None],
) -> int:
    """Reads each partition from its start to its end, handing every record to `count`;
    returns how many were read."""
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    todo = set(starts)
    read = 0
    progress_at = time.monotonic()
    while todo:
        # consume() waits for the whole batch or the timeout: a short one, else the last
        # batch of every read (fewer than 1000 records left) cost a full second.
        messages = consumer.consume(num_messages=1000, timeout=0.1)
        if not messages:
            positions = consumer.position([TopicPartition(topic, p) for p in todo])
            todo -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
            if todo and time.monotonic() - progress_at > STALL_SECONDS:
                raise KafkaReadError(
                    f"Kafka topic {topic!r}: partitions {sorted(todo)} could not be read "
                    f"to their end within {STALL_SECONDS:.0f}s"
                )
            continue
        progress_at = time.monotonic()
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaReadError(f"Kafka topic {topic!r}: {error.str()}")
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue  # not a fetched record (librdkafka sets both on every one)
            if offset >= ends[partition]:
                todo.discard(partition)  # produced after the audit began: not counted
                continue
            read += 1
            if offset + 1 >= ends[partition]:
                todo.discard(partition)
            count(message)
    return read
