"""The id of the topic the checkpoints were written against, remembered beside them.

Kafka gives every topic a unique id (a UUID) when it is created: a topic deleted and created
again under the same name gets a new one, and the history it held is gone. The checkpoints
only say how far each site got, so a run resuming from them on a recreated topic would exit 0
and the history would be missing without a word (`audit` alone would show it).

So the id is kept in `<FILE_PATH_FILTERDATE>topic.<KAFKA_TOPIC>.id` (one line, the id as
librdkafka prints it) and compared before every run and every `follow` cycle:
- no file (a first run, or checkpoint files written by a version that did not keep it): the
  run goes on and the topic's id is recorded once it has checkpointed something: upgrading
  loses nothing and asks nothing;
- the same id: the run goes on;
- another id: the run refuses (TopicChangedError, exit 2) before reading Matomo, until the
  operator decides: re-send the history (`reset` the sites to START_DATE, then run with
  `--accept-new-topic`) or accept the loss (run with `--accept-new-topic`), which records the
  new id (docs/operations.md, troubleshooting: topic not usable).
A broker that gives no id (before Kafka 2.8) or will not describe the topic is warned about
once a run, and the run goes on as before.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from matomo_kafka.config.kafka_clients import client_config
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import CheckpointError, TopicChangedError
from matomo_kafka.model import RunReport
from matomo_kafka.sink.producer import librdkafka_log
from matomo_kafka.state.checkpoint_files import _write_atomic

log = logging.getLogger(__name__)

#: librdkafka prints a topic id as base64 (22 characters); Kafka's tools as base64url.
_ID_RE = re.compile(r"^[A-Za-z0-9+/_-]{16,64}={0,2}$")
#: Kafka's "no id" (a broker before 2.8): all zeros.
_NO_ID = {"AAAAAAAAAAAAAAAAAAAAAA", ""}


def topic_id_path(filterdate_prefix: str, topic: str) -> Path:
    """Beside the checkpoint files, one per topic name: `<FILE_PATH_FILTERDATE>topic.<name>.id`."""
    return Path(f"{filterdate_prefix}topic.{topic}.id")


def read_topic_id(settings: Settings) -> str | None:
    """The topic's id from the broker, or None (said in a warning) when it gives none."""
    timeout = float(settings.KAFKA_CONNECT_TIMEOUT)
    # librdkafka's own lines go through the run's logging (redacted, once each), not stderr.
    config: dict[str, Any] = {**client_config(settings, "admin"), "logger": librdkafka_log}
    admin = AdminClient(config)
    try:
        futures = admin.describe_topics(
            TopicCollection([settings.KAFKA_TOPIC]), request_timeout=timeout
        )
        description = futures[settings.KAFKA_TOPIC].result(timeout=timeout + 5)
    except (KafkaException, TimeoutError) as exc:
        detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        log.warning("Kafka topic %s: cannot read its topic id (%s): not compared with the "
                    "one the checkpoints were written against", settings.KAFKA_TOPIC,
                    detail)  # fmt: skip
        return None
    topic_id = str(getattr(description, "topic_id", "") or "")
    if topic_id in _NO_ID:
        log.warning(
            "Kafka topic %s has no topic id (a broker before Kafka 2.8): not compared with the "
            "one the checkpoints were written against", settings.KAFKA_TOPIC,
        )  # fmt: skip
        return None
    return topic_id


def check_topic_id(
    filterdate_prefix: str, topic: str, current: str | None, accept_new: bool = False
) -> str | None:
    """Compares the topic's id with the one recorded beside the checkpoints (see above):
    TopicChangedError when it changed, unless `accept_new` (then the new id is recorded at
    once: the operator's decision). Returns the id to record once something is checkpointed
    when none is recorded yet (record_topic_id), else None."""
    if current is None:
        return None
    path = topic_id_path(filterdate_prefix, topic)
    recorded = _read_recorded(path)
    if recorded == current:
        return None
    if recorded is None:
        return current
    if not accept_new:
        raise topic_changed(topic, path, recorded, current)
    _write(path, current)
    log.warning("Kafka topic %s: new id %s accepted (--accept-new-topic), was %s; recorded in "
                "%s", topic, current, recorded, path)  # fmt: skip
    return None


def record_topic_id(filterdate_prefix: str, topic: str, topic_id: str) -> None:
    """Records the id the checkpoints are now written against (none was recorded)."""
    path = topic_id_path(filterdate_prefix, topic)
    _write(path, topic_id)
    log.info("Kafka topic %s: id %s recorded in %s", topic, topic_id, path)


class TopicGuard:
    """What `run` and each `follow` cycle do: compare before reading Matomo (`check`), and
    record the id once the run has checkpointed something against it (`checkpointed`): a run
    that did nothing (Matomo refused, say) leaves no new state behind."""

    def __init__(self, settings: Settings, accept_new: bool = False) -> None:
        self.settings = settings
        self.accept_new = accept_new
        self.pending: str | None = None

    def check(self) -> None:
        prefix, topic = self.settings.FILE_PATH_FILTERDATE, self.settings.KAFKA_TOPIC
        self.pending = check_topic_id(prefix, topic, read_topic_id(self.settings),
                                      self.accept_new)  # fmt: skip
        self.accept_new = False  # accepted once: later cycles compare with it

    def checkpointed(self, report: RunReport) -> None:
        if self.pending is None or not any(s.pages or s.days_done for s in report.sites):
            return
        prefix, topic = self.settings.FILE_PATH_FILTERDATE, self.settings.KAFKA_TOPIC
        try:
            record_topic_id(prefix, topic, self.pending)
        except CheckpointError as exc:  # the data is safe: the next run records it
            log.error("%s; the next run records it", exc)
        self.pending = None


def _write(path: Path, topic_id: str) -> None:
    try:
        _write_atomic(path, topic_id)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the topic id file {path}: {exc.strerror or exc}"
        ) from None


def topic_changed(topic: str, path: Path, recorded: str, current: str) -> TopicChangedError:
    """The one line of a changed topic id: what happened and the two ways on."""
    return TopicChangedError(
        f"Kafka topic {topic!r} is not the topic the checkpoints were written against: its "
        f"id is {current}, {path} holds {recorded} (deleted and created again?), so what "
        "was sent before is not in it; to re-send it, `reset` each site to START_DATE, "
        "then run with --accept-new-topic; to go on from the checkpoints without it, run "
        "with --accept-new-topic (docs/operations.md: topic not usable)"
    )


def recorded_topic_id(filterdate_prefix: str, topic: str) -> str | None:
    """The id recorded beside the checkpoints, if any (`check` compares without writing)."""
    return _read_recorded(topic_id_path(filterdate_prefix, topic))


def _read_recorded(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"topic id file {path} cannot be read ({type(exc).__name__}); fix its rights, or "
            "delete it (the next run records the topic's id again)"
        ) from None
    if not _ID_RE.match(text):
        raise CheckpointError(
            f"topic id file {path} does not hold a Kafka topic id; delete it (the next run "
            "records the topic's id again)"
        )
    return text
