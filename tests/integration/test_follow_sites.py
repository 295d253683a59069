"""`follow` with MATOMO_ID_SITE=all picks up the sites created in Matomo while it runs: the real
command as a service, the simulator over HTTP (a site added with MatomoSimulator.add_site) and
the real broker, one moving clock for both (tests/support/follow.py). The new site is followed
from the cycle after it appears, from START_DATE, each visit once, in both delivery modes; one
whose checkpoint lock another instance holds is said once and skipped, the service going on,
and picked up once the lock is free; a listing Matomo fails keeps the sites followed."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import Fault, MatomoSimulator, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.follow import (
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

FIRST = date(2024, 3, 4)
SITES = {1: "UTC", 2: "Europe/Paris"}
NEW = {3: "Europe/Paris"}
LISTING = "SitesManager.getSitesIdWithAtLeastViewAccess"


def sim_sites() -> list[SimSite]:
    return [
        SimSite(1, "UTC site", "UTC", default_visits=48),
        SimSite(2, "Paris site", "Europe/Paris", default_visits=48, tie_group=3),
    ]


def new_site() -> SimSite:
    return SimSite(3, "New site", "Europe/Paris", default_visits=30, tie_group=2)


def start_all(
    tmp_path: Path, simulator: MatomoSimulator, topic: str, clock: MovingClock, **overrides: str
) -> FollowProcess:
    """follow with MATOMO_ID_SITE=all (every site the token can view, listed by Matomo)."""
    port = free_port()
    values = base_values(tmp_path, simulator.url, topic, START_DATE=FIRST.isoformat(),
                         MATOMO_ID_SITE="all", **follow_values(port, **overrides))  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    return FollowProcess(parm, follow_env(clock), tmp_path / "follow.log", port).start()


def store_of(tmp_path: Path) -> CheckpointStore:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def check_topic(
    topic: str, simulator: MatomoSimulator, sites: dict[int, str], horizon: int
) -> None:
    """Exactly the visits of `sites` up to the horizon, once each (read_committed)."""
    counts = Counter(key for key, _ in read_records(topic))
    want = expected_up_to(simulator, sites, FIRST, horizon)
    assert set(counts) == set(want), sorted(set(counts) ^ set(want))[:10]
    assert max(counts.values()) == 1


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_site_created_while_follow_runs_is_followed(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    """Site 3 is created after the first cycles: the next cycle takes it on from START_DATE
    (one info line naming it), and from then on it is followed like the others."""
    simulator = sim_factory(sim_sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    follow = start_all(tmp_path, simulator, topic, clock, DELIVERY=delivery)
    try:
        follow.wait_cycle(SITES, clock.horizon)
        clock.advance(600)
        follow.wait_cycle(SITES, clock.horizon)
        check_topic(topic, simulator, SITES, clock.horizon)
        simulator.add_site(new_site())
        follow.wait_cycle([3], clock.horizon)  # the same clock: the next cycle
        check_topic(topic, simulator, {**SITES, **NEW}, clock.horizon)
        for _ in range(2):
            clock.advance(1800)
            follow.wait_cycle([1, 2, 3], clock.horizon)
            check_topic(topic, simulator, {**SITES, **NEW}, clock.horizon)
    finally:
        code = follow.stop(signal.SIGTERM)
    assert code == 0, follow.output[-3000:]
    assert follow.output.count("follow: site(s) 3 added") == 1
    assert len(expected_up_to(simulator, NEW, FIRST, clock.horizon)) > 30  # 03-04 and today
    cursor = store_of(tmp_path).load(3)
    assert cursor is not None and cursor.day == date(2024, 3, 5)


def test_a_new_site_another_instance_holds_waits_for_its_lock(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """The test holds site 3's checkpoint lock, as another instance would: one warning naming
    it, the service goes on with sites 1 and 2 cycle after cycle; once the lock is free, site
    3 is followed, each visit once."""
    simulator = sim_factory(sim_sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    follow = start_all(tmp_path, simulator, topic, clock)
    warning = "follow: site 3, new in Matomo's list, is not followed: another instance (pid"
    try:
        follow.wait_cycle(SITES, clock.horizon)
        with store_of(tmp_path).lock([3]):
            simulator.add_site(new_site())
            wait_until(lambda: warning in follow.output, 30, lambda: follow.output[-3000:])
            for _ in range(3):
                clock.advance(600)
                follow.wait_cycle(SITES, clock.horizon)
            assert follow.alive()
            assert follow.metric("matomo_kafka_follow_horizon_timestamp_seconds", site="3") is None
            check_topic(topic, simulator, SITES, clock.horizon)
        follow.wait_cycle([1, 2, 3], clock.horizon)
        check_topic(topic, simulator, {**SITES, **NEW}, clock.horizon)
    finally:
        code = follow.stop(signal.SIGTERM)
    assert code == 0, follow.output[-3000:]
    assert follow.output.count(warning) == 1
    assert follow.output.count("follow: site(s) 3 added") == 1


def test_a_listing_matomo_fails_keeps_the_sites_followed(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """While SitesManager fails (HTTP 502 after the first listing), a warning per cycle and
    sites 1 and 2 go on; once it answers again, site 3, created meanwhile, is taken on."""
    simulator = sim_factory(sim_sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    follow = start_all(tmp_path, simulator, topic, clock, MATOMO_MAX_RETRIES="1")
    try:
        follow.wait_cycle(SITES, clock.horizon)
        simulator.add_fault(Fault("status", method=LISTING, status=502, times=-1))
        simulator.add_site(new_site())
        clock.advance(600)
        follow.wait_cycle(SITES, clock.horizon)
        wait_until(lambda: "follow: cannot list the sites" in follow.output, 30,
                   lambda: follow.output[-3000:])  # fmt: skip
        assert follow.alive()
        assert follow.metric("matomo_kafka_follow_horizon_timestamp_seconds", site="3") is None
        simulator.clear_faults()
        follow.wait_cycle([1, 2, 3], clock.horizon)
        check_topic(topic, simulator, {**SITES, **NEW}, clock.horizon)
    finally:
        code = follow.stop(signal.SIGTERM)
    assert code == 0, follow.output[-3000:]
