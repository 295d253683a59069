"""`follow` against a Matomo whose clock is off (issue 24): the simulator's `Date` header says
Matomo's clock (`date_skew_s` from the simulated time, which the tool's clock follows). A host
ahead of Matomo by more than the settle margin reads today only up to Matomo's clock minus the
margins, so that no unsettled visit is sent, and says so once; a host behind is said once and
left alone. Both export the skew."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import MatomoSimulator, SimSite
from support.follow import (
    MARGIN,
    FollowProcess,
    MovingClock,
    expected_up_to,
    follow_env,
    follow_values,
    utc,
    wait_until,
)
from support.kafka import read_records
from support.parm import base_values, write_parm
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

HOUR = 3600.0
SKEW_METRIC = "matomo_kafka_follow_matomo_clock_skew_seconds"
SITES = {1: "UTC", 2: "Europe/Paris"}
FIRST = date(2024, 3, 4)


def sites() -> list[SimSite]:
    return [
        SimSite(1, "UTC site", "UTC", default_visits=48),
        SimSite(2, "Paris site", "Europe/Paris", default_visits=48, tie_group=3),
    ]


def start_follow(
    tmp_path: Path, simulator: MatomoSimulator, topic: str, clock: MovingClock
) -> FollowProcess:
    port = free_port()
    values = base_values(tmp_path, simulator.url, topic, START_DATE=FIRST.isoformat(),
                         **follow_values(port))  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    return FollowProcess(parm, follow_env(clock), tmp_path / "follow.log", port).start()


def _cycles(follow: Any) -> float:
    return follow.metric("matomo_kafka_follow_cycles_total", outcome="ok") or 0.0


def test_a_host_ahead_of_matomo_reads_up_to_matomos_clock(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """This host 1 h ahead of Matomo (more than MATOMO_SETTLE_MINUTES): after several cycles
    the topic holds exactly the visits up to Matomo's clock minus the margins, none later; one
    warning with both times; the skew on /metrics."""
    simulator = sim_factory(sites(), date_skew_s=-HOUR)
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 14:00"))
    matomo_horizon = int(clock.now - HOUR) - MARGIN
    follow = start_follow(tmp_path, simulator, topic, clock)
    try:
        wait_until(lambda: _cycles(follow) >= 3, 60, lambda: follow.output[-3000:])
        skew = follow.metric(SKEW_METRIC)
        want = expected_up_to(simulator, SITES, FIRST, matomo_horizon)
        counts = Counter(key for key, _ in read_records(topic))
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    assert set(counts) == set(want), "visits later than Matomo's clock minus the margins"
    assert max(counts.values()) == 1
    assert len(expected_up_to(simulator, SITES, FIRST, clock.horizon)) > len(want)
    assert skew is not None and abs(skew - HOUR) < 60, skew
    output = follow.output
    said = "follow: this host's clock (2024-03-05 14:00:00Z) is 3600s ahead of Matomo's"
    assert output.count(said) == 1, output[-3000:]
    assert "(2024-03-05 13:00:00Z, its Date header)" in output
    assert "today is read only up to Matomo's clock minus" in output
    assert "follow: cycle 1 up to 2024-03-05 12:20:00Z" in output


def test_a_host_behind_matomo_is_said_once_and_reads_up_to_its_own_clock(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Matomo 1 h ahead of this host: the horizon stays this host's (it only sends later than
    it could), one warning with both times, the skew (negative) on /metrics."""
    simulator = sim_factory(sites(), date_skew_s=HOUR)
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 14:00"))
    follow = start_follow(tmp_path, simulator, topic, clock)
    try:
        wait_until(lambda: _cycles(follow) >= 3, 60, lambda: follow.output[-3000:])
        skew = follow.metric(SKEW_METRIC)
        want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
        counts = Counter(key for key, _ in read_records(topic))
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    assert set(counts) == set(want) and max(counts.values()) == 1
    assert skew is not None and abs(skew + HOUR) < 60, skew
    output = follow.output
    said = ("follow: this host's clock (2024-03-05 14:00:00Z) and Matomo's (2024-03-05 "
            "15:00:00Z, its Date header) differ by 3600s (this host behind)")  # fmt: skip
    assert output.count(said) == 1, output[-3000:]
    assert "today is read only up to" not in output
    assert "follow: cycle 1 up to 2024-03-05 13:20:00Z" in output


def test_clocks_that_agree_say_nothing(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """The simulator's Date follows its clock (as Matomo's follows its own): no warning, a
    skew of about 0."""
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 14:00"))
    follow = start_follow(tmp_path, simulator, topic, clock)
    try:
        wait_until(lambda: _cycles(follow) >= 2, 60, lambda: follow.output[-3000:])
        skew = follow.metric(SKEW_METRIC)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    assert skew is not None and abs(skew) < 60, skew
    assert "Matomo's (" not in follow.output
