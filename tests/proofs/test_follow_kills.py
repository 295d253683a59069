"""`follow` under SIGKILL (issue 15): the service is killed at random moments (inside catch-up
and intraday cycles, inside transactions) while the clock moves, and restarted. Never a visit
before its horizon; at the end none lost; exactly-once: none twice for read_committed;
at-least-once: at most the pages in flight re-sent per kill.

The seed is random per run and printed; replay a failure with RELIABILITY_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from matomo_kafka.simulator import SimSite
from support.follow import (
    FollowProcess,
    MovingClock,
    expected_up_to,
    follow_env,
    follow_values,
    utc,
)
from support.kafka import read_records
from support.parm import base_values, write_parm
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator, pytest.mark.slow]

SITES = {1: "UTC", 2: "Europe/Paris"}
FIRST = date(2024, 3, 3)
LIMIT = 5
TIE_GROUP = 3
CONCURRENCY = 2
ROUNDS = 6


def _seed() -> int:
    chosen = os.environ.get("RELIABILITY_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(1, 2**31)


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_follow_killed_and_restarted_loses_nothing(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    seed = _seed()
    print(f"reliability seed {seed} (replay: RELIABILITY_SEED={seed})")
    rng = random.Random(seed)
    simulator = sim_factory(
        [SimSite(1, "UTC site", "UTC", default_visits=96),
         SimSite(2, "Paris site", "Europe/Paris", default_visits=96, tie_group=TIE_GROUP)],
        latency_s=0.02,
    )  # fmt: skip
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 08:00"))
    port = free_port()
    values = base_values(tmp_path, simulator.url, topic, START_DATE=FIRST.isoformat(),
                         MATOMO_FILTER_LIMIT=str(LIMIT), DELIVERY=delivery,
                         MATOMO_MAX_CONCURRENCY=str(CONCURRENCY),
                         **follow_values(port))  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    env = follow_env(clock)
    for round_ in range(ROUNDS):
        follow = FollowProcess(parm, env, tmp_path / f"follow{round_}.log", port).start()
        time.sleep(rng.uniform(0.6, 2.0))
        if rng.random() < 0.6:
            clock.advance(rng.randint(300, 4 * 3600))
            time.sleep(rng.uniform(0.0, 1.0))
        follow.kill()
        early = {key: stamp for key, stamp in _stamps(topic).items() if stamp > clock.horizon}
        assert not early, f"round {round_}: visits sent before their horizon: {early}"

    clock.set(utc("2024-03-06 02:00"))
    follow = FollowProcess(parm, env, tmp_path / "follow-last.log", port).start()
    try:
        follow.wait_cycle(SITES, clock.horizon, timeout=120)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
    committed = Counter(key for key, _ in read_records(topic))
    assert set(committed) == set(want), "a visit was lost (or sent early)"
    duplicates = sum(count - 1 for count in committed.values())
    print(f"{len(want)} visits, {ROUNDS} kills, {duplicates} duplicate record(s)")
    if delivery == "exactly_once":
        assert duplicates == 0
    else:
        assert duplicates <= ROUNDS * CONCURRENCY * (LIMIT + TIE_GROUP)


def _stamps(topic: str) -> dict[str, int]:
    """Every record's last action time, aborted ones included (read_uncommitted)."""
    found: dict[str, int] = {}
    for key, value in read_records(topic, "read_uncommitted"):
        stamp = orjson.loads(value or b"")["lastActionTimestamp"]
        found[key] = max(stamp, found.get(key, stamp))
    return found
