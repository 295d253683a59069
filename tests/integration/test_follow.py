"""`matomo-kafka follow` end to end (issue 15): the real command as a service, the simulator over
HTTP and the real broker, one moving clock for both (tests/support/follow.py). After each cycle
at clock T the topic holds exactly the visits whose last action is at or before
T - MATOMO_VISIT_LENGTH - MATOMO_SETTLE_MINUTES: none early, none twice, none lost, across
the midnights of UTC and Europe/Paris, in both delivery modes; `run` and `follow` take over
from each other's checkpoints."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.ops.health import MAX_CONNECTIONS
from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import run_cli
from support.follow import (
    FollowProcess,
    MovingClock,
    expected_up_to,
    follow_env,
    follow_values,
    horizon_day,
    site_zone,
    utc,
    wait_until,
)
from support.kafka import read_records, read_topic
from support.parm import TOKEN, base_values, write_parm
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

SITES = {1: "UTC", 2: "Europe/Paris"}
FIRST = date(2024, 3, 4)
MODES = ["at_least_once", "exactly_once"]

#: Clock times of the main test: hours, then either side of Paris' midnight (23:00 UTC in
#: March) and of UTC's, as the horizon (40 minutes earlier) reaches them.
STEPS = [
    "2024-03-05 10:00", "2024-03-05 10:07", "2024-03-05 10:30", "2024-03-05 13:00",
    "2024-03-05 18:59", "2024-03-05 23:39:59", "2024-03-05 23:40", "2024-03-05 23:55",
    "2024-03-06 00:39:59", "2024-03-06 00:40", "2024-03-06 01:30", "2024-03-06 03:00",
]  # fmt: skip


def sites(visits: int = 48) -> list[SimSite]:
    """A visit every half hour or so; Paris with same-second ties."""
    return [
        SimSite(1, "UTC site", "UTC", default_visits=visits),
        SimSite(2, "Paris site", "Europe/Paris", default_visits=visits, tie_group=3),
    ]


def store_of(tmp_path: Path) -> CheckpointStore:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def follow_parm(
    tmp_path: Path, simulator: MatomoSimulator, topic: str, port: int, **overrides: str
) -> Path:
    values = base_values(tmp_path, simulator.url, topic, START_DATE=FIRST.isoformat(),
                         **follow_values(port, **overrides))  # fmt: skip
    return write_parm(tmp_path / "parm", **values)


def start_follow(
    tmp_path: Path, simulator: MatomoSimulator, topic: str, clock: MovingClock, **overrides: str
) -> FollowProcess:
    port = free_port()
    parm = follow_parm(tmp_path, simulator, topic, port, **overrides)
    return FollowProcess(parm, follow_env(clock), tmp_path / "follow.log", port).start()


def topic_counts(topic: str, isolation: str = "read_committed") -> Counter[str]:
    return Counter(key for key, _ in read_records(topic, isolation))


def check_checkpoints(store: CheckpointStore, want: dict[str, Any], horizon: int) -> None:
    """Each site's files hold the horizon's day (in its timezone), the visits of that day sent
    and, keyset, the boundary second: the seed's meaning, today included."""
    for idsite, zone in SITES.items():
        day = horizon_day(horizon, zone)
        of_day = [v["lastActionTimestamp"] for k, v in want.items()
                  if k.startswith(f"{idsite}:") and v["serverDatePretty"] and
                  _local_day(v, zone) == day]  # fmt: skip
        cursor = store.load(idsite)
        assert cursor is not None
        assert (cursor.day, cursor.offset) == (day, len(of_day)), (idsite, horizon)
        assert cursor.last_action == (max(of_day) if of_day else None)
        assert store.date_path(idsite).read_text().strip() == day.isoformat()
        assert store.offset_path(idsite).read_text().strip() == str(len(of_day))


def _local_day(visit: dict[str, Any], zone: str) -> date:
    return horizon_day(visit["lastActionTimestamp"], zone)


@pytest.mark.parametrize("delivery", MODES)
def test_follow_delivers_each_visit_once_when_it_settles(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    """Twelve clock steps over a day and both midnights; some visits go on after their first
    last action (grown): never sent in their old form. After each cycle: exactly the visits
    up to the horizon, once each, with their final content; the files hold the horizon's day."""
    simulator = sim_factory(sites())
    for idsite in SITES:
        simulator.grow_visits(idsite, "2024-03-05", 6)
    clock = MovingClock(tmp_path / "clock", [simulator], utc(STEPS[0]))
    follow = start_follow(tmp_path, simulator, topic, clock, DELIVERY=delivery)
    store = store_of(tmp_path)
    try:
        for step in STEPS:
            clock.set(utc(step))
            follow.wait_cycle(SITES, clock.horizon)
            want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
            records = read_records(topic)
            counts = Counter(key for key, _ in records)
            assert set(counts) == set(want), f"at {step}: missing or early visits"
            assert max(counts.values()) == 1, f"at {step}: a visit sent twice"
            stamps = {key: orjson.loads(value or b"")["lastActionTimestamp"]
                      for key, value in records}  # fmt: skip
            assert stamps == {key: v["lastActionTimestamp"] for key, v in want.items()}
            check_checkpoints(store, want, clock.horizon)
        assert follow.get("/readyz")[0] == 200
    finally:
        code = follow.stop()
    assert code == 0, follow.output[-3000:]
    assert topic_counts(topic, "read_uncommitted") == topic_counts(topic)  # nothing aborted
    assert len(want) > 4 * 48
    lag = follow.output  # the service said what it did, one line a cycle
    assert "follow: cycle 1 up to 2024-03-05 09:20:00Z" in lag
    assert "follow: stopped" in lag


@pytest.mark.parametrize("delivery", MODES)
def test_run_and_follow_take_over_from_each_other(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    """follow stops mid-day (SIGTERM: exit 0); a daily run reads the rest of that day from
    follow's boundary; follow goes on the next day from the run's checkpoint; a run that finds
    the checkpoint on today's date sends nothing. Every visit once. While follow runs, a run on
    the same sites is refused (exit 3)."""
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 14:00"))
    follow = start_follow(tmp_path, simulator, topic, clock, DELIVERY=delivery)
    parm = follow.parm
    try:
        follow.wait_cycle(SITES, clock.horizon)
        locked = run_cli("run", "--parm-dir", str(parm), env=follow_env(clock))
        assert locked.code == 3, locked.output
    finally:
        assert follow.stop(signal.SIGTERM) == 0, follow.output[-3000:]
    sent_by_follow = topic_counts(topic)
    assert 0 < len(sent_by_follow) < len(expected_up_to(simulator, SITES, FIRST, utc("2024-03-06")))

    clock.set(utc("2024-03-06 00:20"))  # 03-05 has ended and settled in both timezones
    daily = run_cli("run", "--parm-dir", str(parm), env=follow_env(clock))
    assert daily.code == 0, daily.output
    counts = topic_counts(topic)
    whole_days = {  # 03-04 and 03-05 of each site, in its timezone
        **expected_up_to(simulator, {1: "UTC"}, FIRST, int(utc("2024-03-05 23:59:59"))),
        **expected_up_to(simulator, {2: "Europe/Paris"}, FIRST, int(utc("2024-03-05 22:59:59"))),
    }
    assert set(counts) == set(whole_days) and max(counts.values()) == 1
    assert set(sent_by_follow) < set(counts)
    store = store_of(tmp_path)
    assert store.load(1) == store.load(2) == Cursor(date(2024, 3, 6), 0)

    clock.set(utc("2024-03-06 09:00"))
    follow = FollowProcess(parm, follow_env(clock), tmp_path / "follow2.log", follow.port).start()
    try:
        follow.wait_cycle(SITES, clock.horizon)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
    counts = topic_counts(topic)
    assert set(counts) == set(want) and max(counts.values()) == 1

    again = run_cli("run", "--parm-dir", str(parm), env=follow_env(clock))
    assert again.code == 0, again.output
    assert topic_counts(topic) == counts  # the checkpoint is on today: nothing to send
    assert topic_counts(topic, "read_uncommitted") == counts


def test_health_readiness_and_metrics(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """/livez answers at once; /readyz only once the first cycle completed, 503 while a site
    fails (the others go on; the failed one is retried with back-off and catches up); /metrics
    has the lag per site, visits and cycle durations. SIGTERM: exit 0."""
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    with simulator.hold():  # the first cycle waits for Matomo
        follow = start_follow(tmp_path, simulator, topic, clock)
        _until(lambda: follow.get("/livez")[0] == 200, follow)
        status, body = follow.get("/readyz")
        assert status == 503 and "first cycle" in body
    try:
        follow.wait_cycle(SITES, clock.horizon)
        _until(lambda: follow.get("/readyz")[0] == 200, follow)
        simulator.add_fault(Fault("envelope", method="Live.getLastVisitsDetails", idsite=2,
                                  times=-1, message="Mysql server has gone away"))  # fmt: skip
        clock.advance(3600)
        follow.wait_cycle([1], clock.horizon)
        status, body = follow.get("/readyz")
        assert status == 503 and "site(s) 2 failing" in body, body
        assert (follow.metric("matomo_kafka_follow_cycles_total", outcome="failed") or 0) >= 1
        assert follow.metric("matomo_kafka_follow_site_errors_total", kind="MatomoError")
        simulator.clear_faults()
        follow.wait_cycle(SITES, clock.horizon)
        _until(lambda: follow.get("/readyz")[0] == 200, follow)
        want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
        counts = topic_counts(topic)
        assert set(counts) == set(want) and max(counts.values()) == 1
        for idsite in SITES:
            newest = max(v["lastActionTimestamp"] for k, v in want.items()
                         if k.startswith(f"{idsite}:"))  # fmt: skip
            lag = follow.metric("matomo_kafka_follow_lag_seconds", site=str(idsite))
            assert lag == clock.now - newest
            visits = follow.metric("matomo_kafka_follow_visits_total", site=str(idsite))
            assert visits == sum(1 for k in want if k.startswith(f"{idsite}:"))
        assert (follow.metric("matomo_kafka_follow_cycle_duration_seconds_count") or 0) >= 3
        assert follow.get("/nothing")[0] == 404
    finally:
        code = follow.stop(signal.SIGTERM)
    assert code == 0, follow.output[-3000:]
    assert "site 2:" in follow.output and "tried again in" in follow.output


def _until(predicate: Any, follow: FollowProcess, timeout: float = 30) -> None:
    wait_until(predicate, timeout, lambda: follow.output[-3000:])


#: `ulimit -n` of the flood test (issue 27 saw cycles fail with 249 idle requests under 256).
FLOOD_OPEN_FILES = 256


def test_health_endpoint_under_a_flood_of_idle_connections(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """More idle, half-sent requests than the endpoint serves at once and than the process may
    open files (`ulimit -n` 256): the cycles meanwhile still succeed (no "Too many open
    files"), each idle connection is closed at its deadline, /livez answers again, and no
    traceback reaches the output."""
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    port = free_port()
    parm = follow_parm(tmp_path, simulator, topic, port)
    follow = FollowProcess(parm, follow_env(clock), tmp_path / "follow.log", port)
    follow.start(open_files=FLOOD_OPEN_FILES)
    flood: list[socket.socket] = []
    try:
        follow.wait_cycle(SITES, clock.horizon)
        assert follow.process is not None
        in_use = len(os.listdir(f"/proc/{follow.process.pid}/fd"))
        assert in_use + 64 < FLOOD_OPEN_FILES, f"{in_use} files open: no room for a cycle"
        for _ in range(FLOOD_OPEN_FILES):
            connection = socket.socket()
            connection.settimeout(2)
            try:
                connection.connect(("127.0.0.1", port))
                connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never ends
            except OSError:  # the kernel's queue is full: the flood is big enough
                connection.close()
                continue
            flood.append(connection)
        assert len(flood) > 2 * MAX_CONNECTIONS
        for _ in range(2):  # two cycles with new visits while every idle connection is open
            clock.advance(3600)
            done = f"up to {datetime.fromtimestamp(clock.horizon, UTC):%Y-%m-%d %H:%M:%S}Z: "
            _until(lambda done=done: done in follow.output, follow, 60)
            lines = [line for line in follow.output.splitlines() if done in line]
            assert not any("failed" in line for line in lines), follow.output[-3000:]
        still_open = _left_open_by_server(flood, 60)
        assert not still_open, f"{still_open} idle connection(s) still open after 60s"
        _until(lambda: follow.get("/livez")[0] == 200, follow)
        want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
        counts = topic_counts(topic)
        assert set(counts) == set(want) and max(counts.values()) == 1
    finally:
        for connection in flood:
            connection.close()
        code = follow.stop(signal.SIGTERM)
    assert code == 0, follow.output[-3000:]
    assert "Too many open files" not in follow.output, follow.output[-3000:]
    assert "Traceback" not in follow.output, follow.output[-3000:]


def _left_open_by_server(connections: list[socket.socket], timeout: float) -> int:
    """How many of these idle connections the server has not ended (EOF or reset) within
    `timeout` seconds."""
    waiting = set(connections)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(list(waiting), [], [], 0.5)
        for connection in readable:
            with contextlib.suppress(OSError):  # the server never answers: readable = ended
                connection.recv(1024)
            waiting.discard(connection)
    return len(waiting)


def test_a_refused_token_stops_follow_at_once(tmp_path: Path, topic: str) -> None:
    """Exit 1 after one request: retrying a refused login every cycle risks an IP ban."""
    other = SimConfig(token=TOKEN + "-not-this-one", sites=sites())
    with MatomoSimulator(other) as simulator:
        clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
        follow = start_follow(tmp_path, simulator, topic, clock)
        assert follow.wait(60) == 1, follow.output
        assert len(simulator.requests) == 1
    assert "MATOMO_API_TOKEN" in follow.output.splitlines()[-1]
    assert topic_counts(topic) == Counter()


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("MATOMO_FOLLOW_INTERVAL", "0.5", "MATOMO_FOLLOW_INTERVAL"),
        ("MATOMO_VISIT_LENGTH", "-1", "MATOMO_VISIT_LENGTH"),
        ("MATOMO_HEALTH_PORT", "70000", "MATOMO_HEALTH_PORT"),
        ("MATOMO_HEALTH_BIND", "localhost", "MATOMO_HEALTH_BIND"),
    ],
)
def test_invalid_follow_keys_exit_2(
    tmp_path: Path, topic: str, sim_factory: Any, key: str, value: str, problem: str
) -> None:
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    follow = start_follow(tmp_path, simulator, topic, clock, **{key: value})
    assert follow.wait(60) == 2, follow.output
    assert f"matomo-kafka: config: {problem}:" in follow.output
    assert simulator.requests == []


def test_a_test_clock_that_cannot_be_read_exits_2(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    parm = follow_parm(tmp_path, simulator, topic, free_port())
    for bad in ("yesterday", "@" + str(tmp_path / "missing")):
        result = run_cli("follow", "--parm-dir", str(parm),
                         env=follow_env(clock, MATOMO_TEST_NOW=bad))  # fmt: skip
        assert result.code == 2, result.output
        assert "MATOMO_TEST_NOW" in result.stderr


def test_a_health_port_in_use_exits_2(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites())
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    first = start_follow(tmp_path, simulator, topic, clock)
    try:
        first.wait_cycle(SITES, clock.horizon)
        values = base_values(tmp_path / "other", simulator.url, topic,
                             **follow_values(first.port))  # fmt: skip
        parm = write_parm(tmp_path / "other" / "parm", **values)
        second = run_cli("follow", "--parm-dir", str(parm), env=follow_env(clock))
        assert second.code == 2, second.output
        assert f"MATOMO_HEALTH_PORT: cannot listen on port {first.port}" in second.stderr
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize("delivery", MODES)
def test_sigterm_mid_cycle_stops_after_the_page_in_flight(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    """SIGTERM while a long catch-up cycle runs: exit 0 soon, what Kafka holds is exactly what
    the checkpoint says; the restart sends each visit once."""
    simulator = sim_factory(sites(visits=60), latency_s=0.05)
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 12:00"))
    follow = start_follow(tmp_path, simulator, topic, clock, DELIVERY=delivery,
                          MATOMO_FILTER_LIMIT="5")  # fmt: skip
    store = store_of(tmp_path)
    wait_until(lambda: store.date_path(1).exists() and store.date_path(2).exists(), 60,
               lambda: follow.output[-3000:])  # fmt: skip
    started = time.monotonic()
    assert follow.stop(signal.SIGTERM) == 0, follow.output[-3000:]
    assert time.monotonic() - started < 10
    assert "cycle 1 stopped by a signal" in follow.output
    counts = topic_counts(topic)
    assert counts and max(counts.values()) == 1
    sent = {idsite: sum(1 for key in counts if key.startswith(f"{idsite}:")) for idsite in SITES}
    for idsite in SITES:  # the files say what Kafka holds: days before, plus the offset
        cursor = store.load(idsite)
        assert cursor is not None
        before = expected_up_to(simulator, {idsite: SITES[idsite]}, FIRST,
                                int(_day_start(cursor.day, SITES[idsite])) - 1)  # fmt: skip
        assert sent[idsite] == len(before) + cursor.offset
    follow = FollowProcess(follow.parm, follow.env, tmp_path / "again.log", follow.port).start()
    try:
        follow.wait_cycle(SITES, clock.horizon)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    counts = topic_counts(topic)
    want = expected_up_to(simulator, SITES, FIRST, clock.horizon)
    assert set(counts) == set(want) and max(counts.values()) == 1
    if delivery == "exactly_once":
        states = [orjson.loads(value or b"") for _, value in read_records(f"{topic}.state")]
        assert states and {state["by"] for state in states} == {"follow"}


def _day_start(day: date, zone: str) -> float:
    return datetime.combine(day, datetime.min.time(), tzinfo=site_zone(zone)).timestamp()


def test_the_rescan_window_is_read_once_a_day(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """MATOMO_RESCAN_DAYS=1: the day before the start day is re-read by the first cycle after
    each day change, not every cycle; late visits it finds go out with matomo.rescan: 1."""
    late_site = [SimSite(1, "UTC site", "UTC", default_visits=48, late={"2024-03-04": 3})]
    simulator = sim_factory(late_site)
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    keys = {"MATOMO_ID_SITE": "1", "MATOMO_RESCAN_DAYS": "1"}

    def reads_of(day: str) -> int:
        return sum(1 for r in simulator.requests if r.get("method") == "Live.getLastVisitsDetails"
                   and r["params"].get("date") == day)  # fmt: skip

    first_process = start_follow(tmp_path, simulator, topic, clock, **keys)
    try:
        first_process.wait_cycle([1], clock.horizon)  # 03-04 caught up; 03-05 up to the horizon
    finally:
        # Stopped before the late visits show: its next cycle, a second later, starts on 03-05
        # and would re-scan 03-04 before them if this test were slow to release them.
        assert first_process.stop() == 0, first_process.output[-3000:]
    hidden = {f"1:{i}" for i in simulator.hidden_visit_ids(1, "2024-03-04")}
    simulator.release_late(1, "2024-03-04")
    first = reads_of("2024-03-04")
    follow = start_follow(tmp_path, simulator, topic, clock, **keys)
    try:
        clock.advance(600)
        follow.wait_cycle([1], clock.horizon)  # starts on 03-05: re-scans 03-04
        rescanned = reads_of("2024-03-04")
        assert rescanned > first
        for _ in range(3):
            clock.advance(600)
            follow.wait_cycle([1], clock.horizon)
        assert reads_of("2024-03-04") == rescanned  # not every cycle
        clock.advance(86_400)  # a day change in the same process: 03-05 closes
        for _ in range(3):
            follow.wait_cycle([1], clock.horizon)
            clock.advance(600)
        follow.wait_cycle([1], clock.horizon)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    assert follow.output.count("site 1: re-scan of 2024-03-04") == 1, follow.output[-3000:]
    assert follow.output.count("site 1: re-scan of 2024-03-05") == 1, follow.output[-3000:]
    records = read_topic(topic)
    late = [r for r in records if r.headers.get("matomo.rescan") == b"1"]
    assert len(hidden) == 3 and {r.key for r in late} == hidden
    want = expected_up_to(simulator, {1: "UTC"}, FIRST, clock.horizon)
    assert Counter(r.key for r in records) == Counter(dict.fromkeys(want, 1))
