"""The topic id file beside the checkpoints (issue 28): recorded when absent, compared, refused
when it changed unless accepted; an unreadable file is one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from matomo_kafka.errors import EXIT_CONFIG, CheckpointError, TopicChangedError
from matomo_kafka.state.topic_id import check_topic_id, record_topic_id, topic_id_path

OLD, NEW = "AoS9mOrcR+2Yz7fv5RIyvw", "Zq1s8Vd3Q0m1cX9vYw2kAA"


def test_recorded_when_absent_then_compared(tmp_path: Path) -> None:
    prefix = str(tmp_path / "filterdate")
    path = topic_id_path(prefix, "visits")
    assert path == tmp_path / "filterdatetopic.visits.id"
    assert check_topic_id(prefix, "visits", OLD) == OLD, "to record once checkpointed"
    assert not path.exists(), "a run that checkpoints nothing leaves nothing"
    record_topic_id(prefix, "visits", OLD)
    assert path.read_text().strip() == OLD
    assert check_topic_id(prefix, "visits", OLD) is None  # the same topic: goes on
    with pytest.raises(TopicChangedError) as refused:
        check_topic_id(prefix, "visits", NEW)
    assert refused.value.exit_code == EXIT_CONFIG
    assert str(path) in str(refused.value) and "--accept-new-topic" in str(refused.value)
    assert path.read_text().strip() == OLD, "a refusal records nothing"
    assert check_topic_id(prefix, "visits", NEW, accept_new=True) is None
    assert path.read_text().strip() == NEW, "accepted: recorded at once"
    assert check_topic_id(prefix, "other", OLD) == OLD  # another topic name: its own file


def test_no_id_from_the_broker_records_nothing(tmp_path: Path) -> None:
    assert check_topic_id(str(tmp_path / "fd"), "visits", None) is None
    assert not topic_id_path(str(tmp_path / "fd"), "visits").exists()


def test_an_unreadable_id_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = topic_id_path(str(tmp_path / "fd"), "visits")
    path.write_text("secret-looking garbage!\n")
    with pytest.raises(CheckpointError) as unreadable:
        check_topic_id(str(tmp_path / "fd"), "visits", OLD)
    assert str(path) in str(unreadable.value) and "garbage" not in str(unreadable.value)
    path.unlink()  # what the line says to do
    assert check_topic_id(str(tmp_path / "fd"), "visits", OLD) == OLD
