"""The real local Kafka broker of scripts/kafka-local.sh: its addresses (KAFKA_PORT and the
ports the script derives from it), starting it, fresh topics, and reading a topic back."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO / "scripts" / "kafka-local.sh"
LOCALHOST = "127.0.0.1"
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BOOTSTRAP = f"{LOCALHOST}:{KAFKA_PORT}"
#: The broker's SASL_PLAINTEXT, SASL_SSL and mutual-TLS listeners, and the throwaway CA that
#: scripts/kafka-local.sh made for them (absolute, or relative to the cwd, as the script has it).
SASL_PORT = int(os.environ.get("KAFKA_SASL_PORT", str(KAFKA_PORT + 2)))
KAFKA_SSL_PORT = int(os.environ.get("KAFKA_SSL_PORT", str(KAFKA_PORT + 3)))
KAFKA_MTLS_PORT = int(os.environ.get("KAFKA_MTLS_PORT", str(KAFKA_PORT + 4)))
KAFKA_SSL_DIR = Path(os.environ.get("KAFKA_LOCAL_DIR") or REPO / ".kafka-local").absolute() / "ssl"
SASL_USER = os.environ.get("KAFKA_LOCAL_SASL_USER", "matomo")
SASL_PASSWORD = os.environ.get("KAFKA_LOCAL_SASL_PASSWORD", "matomo-local-secret")


def start_local_broker(timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """scripts/kafka-local.sh start (idempotent: exits 0 at once when this checkout's broker is
    up); the caller checks the return code."""
    return subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


# -- topics ----------------------------------------------------------------------------------


def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "reliability.visits") -> str:
    """A fresh topic, returned once the broker's metadata shows all its partitions: created is
    not yet visible, and a reader that saw fewer partitions would miss their messages."""
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1)])  # fmt: skip
    for future in futures.values():
        future.result(timeout=60)
    deadline = time.monotonic() + 30
    while True:
        topics = admin.list_topics(name, timeout=10).topics
        if name in topics and topics[name].error is None \
                and len(topics[name].partitions) == partitions:  # fmt: skip
            return name
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name}: its {partitions} partitions not visible in 30s")
        time.sleep(0.1)


def delete_topic(bootstrap: str, name: str) -> None:
    """Best effort: the shared broker should not keep the proofs' topics."""
    with contextlib.suppress(Exception):
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
        for future in admin.delete_topics([name], operation_timeout=10).values():
            future.result(timeout=15)


def recreate_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    """Deletes the topic and creates it again under the same name (a new topic id, empty), as
    an operator's mistake would; returns once its partitions are visible. Creating it again
    is refused for a moment while the deletion completes: tried again for up to 60 s."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
            admin.create_topics([topic])[name].result(timeout=30)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    while True:
        found = admin.list_topics(name, timeout=10).topics.get(name)
        if found is not None and found.error is None and len(found.partitions) == partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name}: not visible again within 60s")
        time.sleep(0.1)


def create_retained_topic(bootstrap: str, prefix: str, partitions: int = 3) -> str:
    """A fresh topic that keeps everything (retention.ms=-1): records stamped weeks ago would
    otherwise be deleted by the broker's 7-day retention while a test or the bench runs."""
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1,
                     config={"retention.ms": "-1"})  # fmt: skip
    admin.create_topics([topic])[name].result(timeout=60)
    deadline = time.monotonic() + 30
    while True:
        found = admin.list_topics(name, timeout=10).topics.get(name)
        if found is not None and found.error is None and len(found.partitions) == partitions:
            return name
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name}: its {partitions} partitions not visible in 30s")
        time.sleep(0.1)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result(timeout=60)


OLDER_SPAN = timedelta(days=30)


def fill_older(
    bootstrap: str, topic: str, count: int, before: datetime, sites: tuple[int, ...] = (1, 9)
) -> None:
    """`count` small records stamped (CreateTime, set explicitly) over the 30 days before
    `before`, oldest first, keyed `<site>:<n>` in turn for each of `sites`, with the headers the
    tool writes and the day of their timestamp (UTC) as `matomo.day`."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.size": 1_000_000, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000, "log_level": 4})  # fmt: skip
    first_ms = int((before - OLDER_SPAN).timestamp() * 1000)
    step = OLDER_SPAN / timedelta(milliseconds=1) / max(count, 1)
    value = b'{"idVisit":0,"older":true,"pad":"' + b"x" * 24 + b'"}'
    site_headers = [(site, str(site).encode()) for site in sites]
    day_of: dict[int, bytes] = {}
    produce, poll = producer.produce, producer.poll
    for n in range(count):
        stamp = first_ms + int(n * step)
        site, site_header = site_headers[n % len(site_headers)]
        day_index = stamp // 86_400_000
        day = day_of.get(day_index)
        if day is None:
            day = datetime.fromtimestamp(stamp / 1000, UTC).date().isoformat().encode()
            day_of[day_index] = day
        headers = [("matomo.idsite", site_header), ("matomo.day", day)]
        while True:
            try:
                produce(topic, value=value, key=f"{site}:{n}", headers=headers, timestamp=stamp)
                break
            except BufferError:
                poll(0.05)
        if n % 10_000 == 0:
            poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"{topic}: older records not all acknowledged in 120s")


# -- reading a topic back ----------------------------------------------------------------------


@dataclass
class Record:
    key: str
    value: bytes
    headers: dict[str, bytes]
    partition: int
    timestamp: tuple[int, int] = (0, 0)  # (TIMESTAMP_CREATE_TIME or ..., milliseconds)


def read_topic(topic: str, bootstrap: str = BOOTSTRAP) -> list[Record]:
    """Every message of the topic, read from the beginning up to the current high marks (as
    librdkafka's default consumer sees them: read_committed)."""
    return read_isolated(topic, "read_committed", bootstrap)


def read_records(topic: str, isolation: str = "read_committed") -> list[tuple[str, bytes | None]]:
    """(key, value) of every record a consumer with this isolation level gets (read_isolated)."""
    return [(record.key, record.value) for record in read_isolated(topic, isolation)]


def read_committed(topic: str) -> list[Record]:
    """Every record a read_committed consumer gets, with headers (read_isolated)."""
    return read_isolated(topic, "read_committed")


def read_isolated(topic: str, isolation: str, bootstrap: str = BOOTSTRAP) -> list[Record]:
    """Every record a consumer with this isolation level gets, read up to each partition's
    high watermark by position, not by the last offset: transactional topics end with
    commit/abort markers that are never delivered."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
    }
    consumer, probe = Consumer(config), Consumer({**config, "isolation.level": "read_uncommitted"})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), 30, cached=False)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        todo = {p for p in partitions if ends[p] > 0}
        records: list[Record] = []
        deadline = time.monotonic() + 60
        while todo:
            assert time.monotonic() < deadline, f"{topic}: partitions {todo} not read to the end"
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    raise RuntimeError(message.error().str())
                records.append(_record(message))
                deadline = time.monotonic() + 60  # 60 s without a record: stuck
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return records
    finally:
        consumer.close()
        probe.close()


def _record(message: Message) -> Record:
    return Record(
        key=message.key().decode(),
        value=message.value(),
        headers={k: v for k, v in (message.headers() or [])},
        partition=message.partition(),
        timestamp=message.timestamp(),
    )
