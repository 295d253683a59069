"""The re-scan window (issue #3, MATOMO_RESCAN_DAYS): visits that arrive late (log imports,
queued tracking) or change after their day was sent are found by a later run and re-sent,
once, with the same key; what did not change is not sent again. Through the real broker."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.state.sent_log import SentLog
from support.cli import run_cli
from support.kafka import read_records
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LATE_DAY, GROW_DAY = "2024-03-02", "2024-03-03"


def sites() -> list[SimSite]:
    return [
        SimSite(idsite=1, name="late UTC", timezone="UTC", default_visits=12,
                visits={"2024-03-01": 40, LATE_DAY: 30, GROW_DAY: 25}, late={LATE_DAY: 5}),
        SimSite(idsite=2, name="quiet Paris", timezone="Europe/Paris", default_visits=9),
    ]  # fmt: skip


def run(tmp_path: Path, simulator: MatomoSimulator, topic: str, run_date: str,
        **overrides: str) -> dict[str, Any]:  # fmt: skip
    values = base_values(tmp_path, simulator.url, topic, **{"MATOMO_RESCAN_DAYS": "2", **overrides})
    parm = write_parm(tmp_path / "parm", **values)
    summary = tmp_path / f"summary-{run_date}.json"
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", run_date,
                     "--summary-file", str(summary))  # fmt: skip
    assert result.code == 0, result.output
    report: dict[str, Any] = json.loads(summary.read_text())
    return {site["site"]: site["rescan"] for site in report["sites"]}


def latest(records: list[tuple[str, bytes | None]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for key, value in records:
        assert value is not None
        last[key] = orjson.loads(value)
    return last


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_late_and_changed_visits_are_resent_once(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory(sites())
    hidden = {f"1:{i}" for i in simulator.hidden_visit_ids(1, LATE_DAY)}
    assert len(hidden) == 5
    first = run(tmp_path, simulator, topic, "2024-03-04", DELIVERY=delivery)
    assert first[1] == {"days": 0, "new": 0, "changed": 0}  # nothing sent before: no window
    sent = Counter(key for key, _ in read_records(topic))
    assert not hidden & set(sent)

    simulator.release_late()
    grown = {f"1:{i}" for i in simulator.grow_visits(1, GROW_DAY, 3)}
    second = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert second[1] == {"days": 2, "new": 5, "changed": 3}
    assert second[2] == {"days": 2, "new": 0, "changed": 0}
    records = read_records(topic)
    counts = Counter(key for key, _ in records)
    assert {key for key in counts if counts[key] > 1} == grown  # changed: sent twice
    assert hidden <= set(counts) and all(counts[key] == 1 for key in hidden)  # late: once
    newest = latest(records)
    now = {f"1:{v['idVisit']}": v for v in simulator.expected_visits(1, GROW_DAY)}
    for key in grown:
        assert newest[key]["lastActionTimestamp"] == now[key]["lastActionTimestamp"]

    third = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert third[1] == {"days": 2, "new": 0, "changed": 0}
    assert Counter(key for key, _ in read_records(topic)) == counts  # nothing re-sent
    # The third run started at 03-05 with a window of 2 days: what was sent for the days
    # before 03-03 is forgotten, since no later run re-scans them.
    recorded = SentLog(str(tmp_path / "data" / "filterdate")).directory(1)
    assert sorted(path.stem for path in recorded.glob("*.bin")) == [GROW_DAY, "2024-03-04"]


def test_first_rescan_without_records_resends_the_window(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Days sent before the window was turned on have no record: all their visits are
    re-sent (updates of the same keys), never silently assumed unchanged."""
    simulator = sim_factory(sites())
    run(tmp_path, simulator, topic, "2024-03-04", MATOMO_RESCAN_DAYS="0")
    report = run(tmp_path, simulator, topic, "2024-03-04")
    assert report[1] == {"days": 2, "new": 25 + 25, "changed": 0}  # 25 visible + 25 visits
