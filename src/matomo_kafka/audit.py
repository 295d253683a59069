"""`matomo-kafka audit`: did every visit of a site's days reach the topic, once?

Per day it compares what the tool sent (read back from the topic: messages keyed
`<idSite>:<idVisit>` with header `matomo.day` = the day) with Matomo's own counts: the
archived VisitsSummary.get nb_visits and a fresh Live.getLastVisitsDetails listing (every
page, ascending, MATOMO_FILTER_LIMIT visits a page). Missing visits (in Live, not in the topic)
and extra ones (in the topic, not in Live) are mismatches; duplicates are not (delivery is
at-least-once, keys make re-sends idempotent), and neither is a VisitsSummary that disagrees
with Live (archives lag behind the raw log), which is only noted.

Reading the topic back means scanning it from the beginning to its current end: the cost
grows with the topic, not with the days audited.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from matomo_kafka.checkpoint import Cursor
from matomo_kafka.config import Settings
from matomo_kafka.days import day_range
from matomo_kafka.errors import KafkaReadError
from matomo_kafka.matomo import MatomoClient, as_int, last_action_time, parse_visits
from matomo_kafka.paging import Batch, Pager, Request
from matomo_kafka.schedule import PageScheduler, drive
from matomo_kafka.state import client_config

STALL_SECONDS = 30.0


@dataclass(frozen=True)
class DayAudit:
    day: date
    sent: int  # messages of the day in the topic
    distinct: int  # distinct idVisit among them
    summary: int | None  # VisitsSummary.get nb_visits
    live: int  # visits in a fresh Live listing
    missing: int  # in Live, not in the topic
    extra: int  # in the topic, not in Live

    @property
    def duplicates(self) -> int:
        return self.sent - self.distinct

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0

    @property
    def summary_differs(self) -> bool:
        return self.summary is not None and self.summary != self.live


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


def read_sent(settings: Settings, idsite: int, first: date, last: date) -> dict[date, Counter[int]]:
    """idVisit -> number of messages, per day in [first, last], for one site."""
    sent: dict[date, Counter[int]] = {day: Counter() for day in day_range(first, last)}
    days = {day.isoformat().encode(): day for day in sent}
    prefix = f"{idsite}:".encode()
    topic = settings.KAFKA_TOPIC
    timeout = settings.KAFKA_CONNECT_TIMEOUT
    consumer = Consumer(consumer_config(settings))
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                reason = described.error.str() if described and described.error else "not found"
                raise KafkaReadError(f"Kafka topic {topic!r} is not usable: {reason}")
            ends: dict[int, int] = {}
            for partition in sorted(described.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
                if high > low:
                    ends[partition] = high
        except KafkaException as exc:
            detail = exc.args[0].str() if exc.args else str(exc)
            raise KafkaReadError(
                f"Kafka unreachable at {settings.KAFKA_SERVERS}: {detail}"
            ) from None
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        todo = set(ends)
        progress_at = time.monotonic()
        while todo:
            messages = consumer.consume(num_messages=1000, timeout=1.0)
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
                if partition in todo and offset is not None and offset + 1 >= ends[partition]:
                    todo.discard(partition)
                key = message.key()
                if not key or not key.startswith(prefix):
                    continue
                header_day = next(
                    (pair[1] for pair in message.headers() or [] if pair[0] == "matomo.day"), None
                )
                day = days.get(header_day) if isinstance(header_day, bytes) else None
                idvisit = as_int(key[len(prefix) :].decode(errors="replace"))
                if day is not None and idvisit is not None:
                    sent[day][idvisit] += 1
    finally:
        consumer.close()
    return sent


def live_ids(matomo: MatomoClient, idsite: int, day: date, limit: int) -> set[int]:
    """Every idVisit of the day in a fresh Live listing, read with keyset paging (paging.py)
    so visits ending in the same second are neither missed nor counted twice."""

    def fetch(request: Request) -> Batch[int]:
        raw = matomo.visits_page_raw(idsite, day, request.limit, request.offset, request.after)
        visits = parse_visits(raw, idsite, day, request.limit)
        ids = [int(visit["idVisit"]) for visit in visits]  # checked by parse_visits
        stamps = [last_action_time(v, idsite, i) for v, i in zip(visits, ids, strict=True)]
        return Batch(ids, ids, stamps)

    with PageScheduler(slots=1, budget=2, name="audit-fetch") as scheduler:
        pager = Pager(fetch, scheduler.submit, Cursor(day, 0), day, limit)
        return {idvisit for page in drive(iter(pager), scheduler) for idvisit in page.items}


def audit_site(
    settings: Settings, matomo: MatomoClient, idsite: int, first: date, last: date
) -> list[DayAudit]:
    matomo.site(idsite)  # fails fast, with Matomo's own message, on an unknown site
    sent = read_sent(settings, idsite, first, last)
    rows: list[DayAudit] = []
    for day in day_range(first, last):
        in_topic = sent[day]
        live = live_ids(matomo, idsite, day, settings.MATOMO_FILTER_LIMIT)
        summary = matomo.visits_summary_count(idsite, day)
        rows.append(
            DayAudit(
                day=day,
                sent=sum(in_topic.values()),
                distinct=len(in_topic),
                summary=summary,
                live=len(live),
                missing=len(live - set(in_topic)),
                extra=len(set(in_topic) - live),
            )
        )
    return rows
