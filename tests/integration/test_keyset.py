"""Keyset paging end to end (issue #3): days full of visits ending in the same second, served
in a different tie order by every request (as MySQL may), read through the real broker:
every visit exactly once, also across a failed run resumed from its boundary checkpoint and in
exactly-once mode. Offset paging (MATOMO_PAGING=offset) is shown to fail on the same days."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import Fault, MatomoSimulator, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import run_cli
from support.kafka import read_records
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

RUN_DATE = "2024-03-04"  # reads 2024-03-01 .. 2024-03-03
DAYS = [date(2024, 3, d) for d in range(1, 4)]
LIVE = "Live.getLastVisitsDetails"


def tied_sites() -> list[SimSite]:
    """Groups of 7 visits share each last action second; pages of 10 cut through them."""
    return [
        SimSite(idsite=1, name="ties UTC", timezone="UTC", tie_group=7,
                visits={"2024-03-01": 95, "2024-03-02": 0, "2024-03-03": 61}),
        SimSite(idsite=2, name="ties Paris", timezone="Europe/Paris", tie_group=7,
                visits={"2024-03-01": 70, "2024-03-02": 33, "2024-03-03": 140}),
    ]  # fmt: skip


def expected(simulator: MatomoSimulator) -> Counter[str]:
    return Counter(
        f"{idsite}:{int(visit['idVisit'])}"
        for idsite in (1, 2)
        for day in DAYS
        for visit in simulator.expected_visits(idsite, day)
    )


def run(tmp_path: Path, simulator: MatomoSimulator, topic: str, **overrides: str) -> Any:
    values = base_values(tmp_path, simulator.url, topic, **overrides)
    parm = write_parm(tmp_path / "parm", **values)
    return run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)


def test_unstable_ties_every_visit_once(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(tied_sites(), unstable_ties=True)
    result = run(tmp_path, simulator, topic)
    assert result.code == 0, result.output
    got = Counter(key for key, _ in read_records(topic))
    assert got == expected(simulator)
    requests = [r for r in simulator.requests if r["method"] == LIVE]
    assert any("minTimestamp" in r["params"] for r in requests), "no page boundary was repaired"


def test_offset_paging_loses_or_repeats_on_the_same_days(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """The failure keyset paging prevents, on the same data: so the test above can fail."""
    simulator = sim_factory(tied_sites(), unstable_ties=True)
    assert run(tmp_path, simulator, topic, MATOMO_PAGING="offset").code == 0
    got = Counter(key for key, _ in read_records(topic))
    assert got != expected(simulator)


def test_failed_run_resumes_at_its_boundary(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """A run that fails mid-day checkpoints the page boundary (second and ids); the rerun
    anchors there with minTimestamp: nothing skipped, nothing sent twice."""
    fault = Fault(kind="status", method=LIVE, status=500, times=-1, idsite=1,
                  date="2024-03-01", offset=30)  # fmt: skip
    simulator = sim_factory(tied_sites(), unstable_ties=True, faults=[fault])
    first = run(tmp_path, simulator, topic, MATOMO_MAX_RETRIES="1")
    assert first.code == 1, first.output
    data = tmp_path / "data"
    stopped = CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset")).load(1)
    assert stopped is not None and stopped.day == date(2024, 3, 1)
    assert stopped.offset >= 20 and stopped.last_action is not None and stopped.ids
    simulator.clear_faults()
    assert run(tmp_path, simulator, topic).code == 0
    assert Counter(key for key, _ in read_records(topic)) == expected(simulator)


def test_exactly_once_with_unstable_ties(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(tied_sites(), unstable_ties=True)
    result = run(tmp_path, simulator, topic, DELIVERY="exactly_once")
    assert result.code == 0, result.output
    got = Counter(key for key, _ in read_records(topic, "read_committed"))
    assert got == expected(simulator)
