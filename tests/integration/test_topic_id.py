"""The topic id remembered beside the checkpoints (issue 28, point 3): a topic deleted and
created again is refused (exit 2) instead of resuming silently without its history; state
written by the version before (no id file) keeps working, the id recorded at the first run."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.state.topic_id import topic_id_path
from support.cli import clean_env, run_cli
from support.kafka import BOOTSTRAP, read_topic, recreate_topic
from support.old_code import BEFORE_TOPIC_ID, old_source
from support.runs import LIMIT, cursor, expected_keys, parm, two_sites

pytestmark = [pytest.mark.simulator, pytest.mark.kafka]


def id_file(tmp_path: Path, topic: str) -> Path:
    return topic_id_path(str(tmp_path / "data" / "filterdate"), topic)


def test_upgrade_records_the_topic_id_then_a_recreated_topic_is_refused(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    old = old_source(BEFORE_TOPIC_ID, tmp_path / "old")
    if old is None:
        pytest.skip(f"this checkout lacks commit {BEFORE_TOPIC_ID[:7]} (shallow clone)")
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    # The version before: checkpoints without any topic id.
    before = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-04",
                     env=clean_env(PYTHONPATH=str(old)))  # fmt: skip
    assert before.code == 0, before.output
    assert not id_file(tmp_path, topic).exists(), "the old code ran, not this one"
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 4), 0)

    # This version on the same files and topic: goes on, and records the id.
    upgraded = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-06")
    assert upgraded.code == 0, upgraded.output
    recorded = id_file(tmp_path, topic).read_text().strip()
    assert recorded and "recorded" in upgraded.stderr
    assert Counter(r.key for r in read_topic(topic)) == Counter(expected_keys(simulator, (1, 2)))

    recreate_topic(BOOTSTRAP, topic)
    refused = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-07")
    assert refused.code == 2, refused.output
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not the topic the checkpoints were written against" in errors[0]
    assert "--accept-new-topic" in errors[0] and str(id_file(tmp_path, topic)) in errors[0]
    assert read_topic(topic) == [], "nothing sent"
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 6), 0), "checkpoints untouched"
    assert id_file(tmp_path, topic).read_text().strip() == recorded

    # Accepted: goes on from the checkpoints, the new id recorded; later runs compare with it.
    accepted = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-07",
                       "--accept-new-topic")  # fmt: skip
    assert accepted.code == 0, accepted.output
    assert id_file(tmp_path, topic).read_text().strip() not in ("", recorded)
    days = [date(2024, 3, 6)]
    assert Counter(r.key for r in read_topic(topic)) == Counter(
        expected_keys(simulator, (1, 2), days)
    )
    again = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-07")
    assert again.code == 0, again.output


def test_follow_refuses_a_recreated_topic(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-06").code == 0
    recreate_topic(BOOTSTRAP, topic)
    result = run_cli("follow", "--parm-dir", str(directory), timeout=120)
    assert result.code == 2, result.output
    assert "not the topic the checkpoints were written against" in result.stderr
    assert read_topic(topic) == []
