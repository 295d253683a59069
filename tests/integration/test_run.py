"""End to end: the `matomo-kafka run` command against the simulator over HTTP and the real
broker, every visit read back from the topic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.transform.pseudonymise import pseudonymise
from support.cli import clean_env, run_cli
from support.kafka import REPO, SASL_PORT, read_topic
from support.parm import SALT, base_values, write_parm
from support.runs import two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIMIT = 10
RUN_DATE = "2024-03-06"  # reads 2024-03-01 .. 2024-03-05
DAYS = [date(2024, 3, d) for d in range(1, 6)]


def expected(simulator: MatomoSimulator, sites: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    return {
        f"{idsite}:{int(visit['idVisit'])}": visit
        for idsite in sites
        for day in DAYS
        for visit in simulator.expected_visits(idsite, day)
    }


def checkpoint(tmp_path: Path, idsite: int) -> Cursor | None:
    store = CheckpointStore(
        str(tmp_path / "data" / "filterdate"), str(tmp_path / "data" / "last_filter_offset")
    )
    return store.load(idsite)


def test_full_run_then_rerun_sends_nothing(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic))
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output

    want = expected(simulator)
    assert len(want) == 2 * (0 + 9 + 10 + 11 + 20)
    records = read_topic(topic)
    counts = Counter(record.key for record in records)
    assert set(counts) == set(want), "missing or unexpected visits"
    assert max(counts.values()) == 1, "a visit was sent twice"

    key = SALT.encode()
    for record in records:
        raw = want[record.key]
        visit = json.loads(record.value)
        idsite = int(record.key.split(":")[0])
        assert record.headers["matomo.idsite"] == str(idsite).encode()
        assert record.headers["matomo.day"].decode() in {d.isoformat() for d in DAYS}
        assert record.headers["producer"].startswith(b"matomo-kafka/")
        assert "dimension1" not in visit and visit.get("Plan") == raw.get("dimension1")
        assert visit["visitIp"] == pseudonymise(key, raw["visitIp"])
        assert visit["visitorId"] == pseudonymise(key, raw["visitorId"])
        assert visit["userId"] == (
            None if raw["userId"] is None else pseudonymise(key, raw["userId"])
        )
        for before, after in zip(raw["actionDetails"], visit["actionDetails"], strict=True):
            assert "dimension2" not in after
            assert after.get("Page Type") == before.get("dimension2")
            if before.get("url") is not None:
                assert after["url"] == pseudonymise(key, before["url"])
            if before["type"] == "goal":
                assert after["goalName"] in ("Thank-you page", "Newsletter signup")
        assert raw["visitIp"] not in record.value.decode()

    for idsite in (1, 2):
        assert checkpoint(tmp_path, idsite) == Cursor(date(2024, 3, 6), 0)
    assert "visits sent" in result.stdout

    again = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert again.code == 0, again.output
    assert len(read_topic(topic)) == len(records)

    # One more day closes: only that day is read.
    later = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-07")
    assert later.code == 0, later.output
    assert len(read_topic(topic)) == len(records) + 2 * 3  # default_visits on 03-06


def test_resumes_from_seed_checkpoint_inside_a_day(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic,
                                                        MATOMO_ID_SITE="1"))  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-05")  # 20 visits; 10 already sent
    (data / "last_filter_offset1.txt").write_text("10")
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    keys = sorted(record.key for record in read_topic(topic))
    day_visits = simulator.expected_visits(1, date(2024, 3, 5))
    assert keys == sorted(f"1:{int(v['idVisit'])}" for v in day_visits[10:])


def test_lock_refuses_a_second_run(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic))
    store = CheckpointStore(
        str(tmp_path / "data" / "filterdate"), str(tmp_path / "data" / "last_filter_offset")
    )
    with store.lock([2]):
        result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 3
    assert "another matomo-kafka run" in result.stderr
    assert read_topic(topic) == []


def test_broker_unreachable_fails_fast(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    values = base_values(tmp_path, simulator.url, topic, KAFKA_SERVERS="127.0.0.1:1")
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 1
    assert "Kafka unreachable" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("matomo-kafka: error:")
    assert checkpoint(tmp_path, 1) is None
    assert not [r for r in simulator.requests if r["method"] == "Live.getLastVisitsDetails"]


def test_missing_topic(tmp_path: Path, sim_factory: Any, kafka_bootstrap: str) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm",
                      **base_values(tmp_path, simulator.url, "no.such.topic.here"))  # fmt: skip
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 1
    assert "no.such.topic.here" in result.stderr


def test_check_and_status(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic))
    checked = run_cli("check", "--parm-dir", str(parm))
    assert checked.code == 0, checked.output
    assert "Europe/Paris" in checked.stdout and "5.0.2" in checked.stdout

    before = run_cli("status", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert before.code == 0 and "never run" in before.stdout
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE).code == 0
    after = run_cli("status", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert after.code == 0 and "2024-03-06" in after.stdout

    bad = base_values(tmp_path, simulator.url, "no.such.topic", MATOMO_API_TOKEN="wrong")
    failing = run_cli("check", "--parm-dir", str(write_parm(tmp_path / "bad", **bad)))
    assert failing.code == 1
    assert "FAIL" in failing.stdout


def test_control_m_launcher(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic))
    launcher = REPO / "shell" / "DDWA7AJA0_KFK.KSH"
    env = clean_env(PARM_DIR=str(parm), MATOMO_KAFKA_VENV=str(Path(sys.executable).parents[1]))
    ok = subprocess.run(["sh", str(launcher), "20240306"], env=env, capture_output=True,
                        text=True, timeout=180)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "exit code 0" in ok.stdout
    assert len(read_topic(topic)) == 2 * 50
    (parm / "wa7_conf.ini").write_text("START_DATE: not-a-date\n")
    bad = subprocess.run(["sh", str(launcher), "20240306"], env=env, capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert bad.returncode == 2
    assert "exit code 2" in bad.stdout


def test_start_date_after_run_date_does_nothing(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    values = base_values(tmp_path, simulator.url, topic, START_DATE="2024-03-10")
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    assert read_topic(topic) == []
    assert checkpoint(tmp_path, 1) is None


def test_yesterday_in_site_timezone_without_run_date(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    today = date.today()
    sites = [SimSite(idsite=1, name="u", timezone="UTC", default_visits=2, visits={})]
    simulator = sim_factory(sites)
    start = (today - timedelta(days=3)).isoformat()
    values = base_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1", START_DATE=start,
                         MATOMO_SETTLE_MINUTES="0")  # fmt: skip
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)))
    assert result.code == 0, result.output
    cursor = checkpoint(tmp_path, 1)
    assert cursor is not None and cursor.day in (today, today + timedelta(days=1))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_sasl_listener(tmp_path: Path, topic: str, sim_factory: Any, mechanism: str) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    sasl = {
        "KAFKA_SERVERS": f"127.0.0.1:{SASL_PORT}",
        "KAFKA_USER": "matomo",
        "KAFKA_PASSWORD": "matomo-local-secret",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": mechanism,
    }
    values = base_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1", **sasl)
    ok = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "ok", **values)),
                 "--run-date", RUN_DATE)  # fmt: skip
    assert ok.code == 0, ok.output
    assert len(read_topic(topic)) == 50

    values["KAFKA_PASSWORD"] = "kafka-pw-do-not-print"
    values["FILE_PATH_FILTERDATE"] = str(tmp_path / "other" / "filterdate")
    bad = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "bad", **values)),
                  "--run-date", RUN_DATE)  # fmt: skip
    assert bad.code == 1
    assert "Authentication failed" in bad.stderr or "authentication" in bad.stderr.lower()
    assert "kafka-pw-do-not-print" not in bad.output


def test_sigterm_stops_cleanly_after_the_page_in_flight(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    sites = [SimSite(idsite=1, name="slow", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 95, "2024-03-02": 37})]  # fmt: skip
    simulator = sim_factory(sites, latency_s=0.15)
    values = base_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", "2024-03-03"]  # fmt: skip
    process = subprocess.Popen(args, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cursor = checkpoint(tmp_path, 1)
        if cursor is not None and cursor.offset >= 20:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    stopped_at = checkpoint(tmp_path, 1)
    assert stopped_at is not None and stopped_at.offset < 95
    assert len(read_topic(topic)) == stopped_at.offset  # acknowledged == checkpointed

    assert run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-03").code == 0
    counts = Counter(record.key for record in read_topic(topic))
    assert len(counts) == 95 + 37 and max(counts.values()) == 1  # a clean stop re-sends nothing
