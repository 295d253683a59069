"""Erasures and anonymisation inside the re-scan window reach Kafka by themselves (issue 22):
a visit sent for a day that Matomo's fresh listing of the day no longer holds gets a tombstone
(same key, null value, matomo.op: delete), once; a visit Matomo anonymised goes again as an
update (matomo.op: update), once; a day Matomo purged is reported, never tombstoned; more
erasures than MATOMO_MAX_ERASE send none. `run` and `follow`, both delivery modes, through the
real broker and the simulator over HTTP."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections import Counter
from datetime import UTC, date, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.state.sent_log import SentLog
from support.cli import clean_env, run_cli
from support.follow import FollowProcess, MovingClock, follow_env, follow_values, utc
from support.kafka import Record, read_committed, read_topic
from support.parm import base_values, write_parm
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

MODES = ["at_least_once", "exactly_once"]
ERASE_DAY = "2024-03-02"
REPO = Path(__file__).resolve().parents[2]
#: The last commit before tombstones (main when issue 22's re-scan work began): its code
#: writes the sent logs an upgraded installation finds.
OLD_MAIN = "9ed180f"


def sites() -> list[SimSite]:
    return [
        SimSite(idsite=1, name="UTC", timezone="UTC", default_visits=6,
                visits={"2024-03-01": 12, ERASE_DAY: 15, "2024-03-03": 10}),
        SimSite(idsite=2, name="Paris", timezone="Europe/Paris", default_visits=5),
    ]  # fmt: skip


def parm_of(tmp_path: Path, simulator: MatomoSimulator, topic: str, **overrides: str) -> Path:
    settings = {"MATOMO_RESCAN_DAYS": "2", "START_DATE": "2024-03-01", **overrides}
    values = base_values(tmp_path, simulator.url, topic, **settings)
    return write_parm(tmp_path / "parm", **values)


def run(tmp_path: Path, simulator: MatomoSimulator, topic: str, run_date: str, code: int = 0,
        env: dict[str, str] | None = None, **overrides: str) -> dict[int, Any]:  # fmt: skip
    """One `run`; each site's line of the summary file."""
    parm = parm_of(tmp_path, simulator, topic, **overrides)
    summary = tmp_path / f"summary-{run_date}.json"
    summary.unlink(missing_ok=True)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", run_date,
                     "--summary-file", str(summary), env=env)  # fmt: skip
    assert result.code == code, result.output
    report: dict[str, Any] = json.loads(summary.read_text())
    return {site["site"]: site for site in report["sites"]}


def tombstones(records: list[Record]) -> list[Record]:
    return [r for r in records if r.value is None]


def erase(simulator: MatomoSimulator, idsite: int, day: str, count: int) -> set[str]:
    """Erases `count` visits of the day (spread over it) as the GDPR tools do; their keys."""
    ids = [int(v["idVisit"]) for v in simulator.expected_visits(idsite, day)]
    chosen = ids[1 :: max(1, len(ids) // count)][:count]
    simulator.delete_visits([(idsite, idvisit) for idvisit in chosen])
    return {f"{idsite}:{idvisit}" for idvisit in chosen}


def newest(records: list[Record]) -> dict[str, bytes]:
    """The compacted view: the newest record per key, tombstones remove the key."""
    view: dict[str, bytes | None] = {}
    for record in records:  # per partition in offset order: a key has one partition
        view[record.key] = record.value
    return {key: value for key, value in view.items() if value is not None}


@pytest.mark.parametrize("delivery", MODES)
def test_erased_visits_get_one_tombstone_each(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory(sites())
    run(tmp_path, simulator, topic, "2024-03-04", DELIVERY=delivery)
    before = read_committed(topic)
    erased = erase(simulator, 1, ERASE_DAY, 3)
    second = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert second[1]["erasures"] == {"tombstones": 3, "withheld": 0, "purged_days": []}
    assert second[2]["erasures"]["tombstones"] == 0
    records = read_committed(topic)
    added = [r for r in records if r not in before]
    dead = tombstones(records)
    assert {r.key for r in dead} == erased and len(dead) == 3
    for record in dead:
        assert record.headers["matomo.idsite"] == b"1"
        assert record.headers["matomo.day"] == ERASE_DAY.encode()
        assert record.headers["matomo.op"] == b"delete"
        assert record.headers["producer"].startswith(b"matomo-kafka/")
    # Nothing else of the re-scanned days: only 2024-03-04, the new day, was sent besides.
    days = Counter(r.headers["matomo.day"] for r in added if r.value is not None)
    assert set(days) == {b"2024-03-04"}, days
    assert all(r.headers["matomo.op"] == b"insert" for r in added if r.value is not None)
    # The sent log forgot them: the next run sends no tombstone again.
    known = SentLog(str(tmp_path / "data" / "filterdate")).load(1, date.fromisoformat(ERASE_DAY))
    assert not {f"1:{i}" for i in known} & erased and len(known) == 15 - 3
    third = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert third[1]["erasures"]["tombstones"] == 0
    assert len(tombstones(read_committed(topic))) == 3
    live = {f"1:{v['idVisit']}" for v in simulator.expected_visits(1, ERASE_DAY)}
    view = {k for k in newest(read_committed(topic)) if k.startswith("1:")}
    assert live <= view and not view & erased


@pytest.mark.parametrize("delivery", MODES)
def test_anonymised_visits_go_once_as_updates(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory(sites())
    run(tmp_path, simulator, topic, "2024-03-04", DELIVERY=delivery)
    before = read_committed(topic)
    day = date.fromisoformat("2024-03-03")
    changed = simulator.anonymize_raw_data([1], day, day, ip=True, location=True, user_id=True)
    assert changed == 10
    second = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert second[1]["rescan"] == {"days": 2, "new": 0, "changed": 10}
    assert second[1]["erasures"]["tombstones"] == 0
    records = [r for r in read_committed(topic)
               if r not in before]  # fmt: skip
    updates = [r for r in records if r.headers.get("matomo.op") == b"update"]
    keys = {f"1:{v['idVisit']}" for v in simulator.expected_visits(1, day)}
    assert Counter(r.key for r in updates) == Counter(dict.fromkeys(keys, 1))
    assert all(r.headers["matomo.day"] == b"2024-03-03" for r in updates)
    assert not tombstones(records)
    third = run(tmp_path, simulator, topic, "2024-03-05", DELIVERY=delivery)
    assert third[1]["rescan"]["changed"] == 0


def test_purged_days_are_reported_never_tombstoned(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites())
    run(tmp_path, simulator, topic, "2024-03-04")
    # Matomo's "delete old raw data": every visit before 2024-03-03 00:00 UTC.
    today = datetime.now(UTC).date()
    simulator.purge_raw_data_older_than((today - date(2024, 3, 3)).days)
    assert simulator.expected_visits(1, ERASE_DAY) == []
    second = run(tmp_path, simulator, topic, "2024-03-05")
    assert second[1]["erasures"] == {"tombstones": 0, "withheld": 0, "purged_days": [ERASE_DAY]}
    assert not tombstones(read_topic(topic))
    assert (tmp_path / "summary-2024-03-05.json").exists()


def test_more_erasures_than_the_limit_send_none(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Over MATOMO_MAX_ERASE: exit 1, no tombstone, the sent log keeps them (the site's
    days before the window are not pruned); a re-scan with a higher limit then sends them."""
    simulator = sim_factory(sites())
    run(tmp_path, simulator, topic, "2024-03-04")
    erased = erase(simulator, 1, ERASE_DAY, 3)
    held = run(tmp_path, simulator, topic, "2024-03-05", code=1, MATOMO_MAX_ERASE="2")
    assert held[1]["outcome"] == "failed" and held[1]["error_kind"] == "EraseLimit"
    assert held[1]["erasures"] == {"tombstones": 0, "withheld": 3, "purged_days": []}
    assert held[2]["outcome"] == "done"
    assert not tombstones(read_topic(topic))
    # The checkpoint moved on (its day was sent): a window one day longer reaches ERASE_DAY.
    done = run(tmp_path, simulator, topic, "2024-03-05", MATOMO_MAX_ERASE="3",
               MATOMO_RESCAN_DAYS="3")  # fmt: skip
    assert done[1]["erasures"]["tombstones"] == 3
    assert {r.key for r in tombstones(read_topic(topic))} == erased


@pytest.mark.parametrize("delivery", MODES)
def test_follow_sends_the_tombstones_at_its_next_rescan(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory([SimSite(1, "UTC site", "UTC", default_visits=24)])
    clock = MovingClock(tmp_path / "clock", [simulator], utc("2024-03-05 10:00"))
    port = free_port()
    values = base_values(tmp_path, simulator.url, topic, START_DATE="2024-03-04",
                         **follow_values(port, MATOMO_ID_SITE="1", MATOMO_RESCAN_DAYS="1",
                                         DELIVERY=delivery))  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    first = FollowProcess(parm, follow_env(clock), tmp_path / "first.log", port).start()
    try:
        first.wait_cycle([1], clock.horizon)  # 03-04 caught up; 03-05 up to the horizon
    finally:
        # Stopped before the erasure: its next cycle, a second later, would start on 03-05
        # and re-scan 03-04 before the erasure if this test were slow to make it.
        assert first.stop() == 0, first.output[-3000:]
    erased = erase(simulator, 1, "2024-03-04", 3)
    follow = FollowProcess(parm, follow_env(clock), tmp_path / "follow.log", port).start()
    try:
        clock.advance(600)
        follow.wait_cycle([1], clock.horizon)  # starts on 03-05: re-scans 03-04
        clock.advance(600)
        follow.wait_cycle([1], clock.horizon)  # no re-scan: nothing more
        clock.advance(600)
        follow.wait_cycle([1], clock.horizon)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    records = read_committed(topic)
    dead = tombstones(records)
    assert Counter(r.key for r in dead) == Counter(dict.fromkeys(erased, 1))
    assert all(r.headers["matomo.op"] == b"delete" for r in dead)
    assert "tombstone for 1:" in follow.output


def old_main(tmp_path: Path) -> Path:
    """The old main's source tree (git archive of OLD_MAIN), to run its code."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_MAIN, "src"],
                                 capture_output=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {OLD_MAIN} is not available")
    target = tmp_path / "old-main"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def test_sent_logs_of_the_old_code_are_read(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """An upgrade: the old main's code sends the days and writes the sent log, the new code
    then finds the erasures in them; the old code afterwards still reads the new records."""
    simulator = sim_factory(sites())
    old_env = clean_env(PYTHONPATH=str(old_main(tmp_path)))
    run(tmp_path, simulator, topic, "2024-03-04", env=old_env)
    assert not any("matomo.op" in r.headers for r in read_topic(topic))  # the old code ran
    erased = erase(simulator, 1, ERASE_DAY, 3)
    new = run(tmp_path, simulator, topic, "2024-03-05")
    assert new[1]["erasures"]["tombstones"] == 3
    assert {r.key for r in tombstones(read_topic(topic))} == erased
    again = run(tmp_path, simulator, topic, "2024-03-05", env=old_env)  # a downgrade
    assert again[1]["rescan"]["new"] == 0 and again[1]["rescan"]["changed"] == 0
