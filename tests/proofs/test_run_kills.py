"""A run SIGKILLed mid-day, or mid-run with several sites read at once, then rerun: nothing lost,
at most the pages in flight re-sent (one per Matomo slot). Simulator over HTTP, real broker; the
long randomised kill loop is tests/proofs/test_kills.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import clean_env, run_cli
from support.kafka import read_topic
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIMIT = 10


def checkpoint(tmp_path: Path, idsite: int) -> Cursor | None:
    store = CheckpointStore(
        str(tmp_path / "data" / "filterdate"), str(tmp_path / "data" / "last_filter_offset")
    )
    return store.load(idsite)


def test_sigkill_mid_day_then_rerun_loses_nothing(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    sites = [SimSite(idsite=1, name="slow", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 95, "2024-03-02": 37})]  # fmt: skip
    simulator = sim_factory(sites, latency_s=0.15)
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic,
                                                        MATOMO_ID_SITE="1"))  # fmt: skip
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", "2024-03-03"]  # fmt: skip
    process = subprocess.Popen(args, env=clean_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cursor = checkpoint(tmp_path, 1)
        if cursor is not None and cursor.offset >= 30:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoint(tmp_path, 1)
    assert killed_at is not None and killed_at.day == date(2024, 3, 1)
    assert 30 <= killed_at.offset < 95, "the kill should land mid-day"

    result = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-03")
    assert result.code == 0, result.output
    counts = Counter(record.key for record in read_topic(topic))
    want = {f"1:{int(v['idVisit'])}" for d in (1, 2)
            for v in simulator.expected_visits(1, date(2024, 3, d))}  # fmt: skip
    assert set(counts) == want
    duplicates = sum(count - 1 for count in counts.values())
    assert duplicates <= LIMIT, "at most the page in flight is re-sent"


def test_concurrent_sites_then_sigkill_and_rerun(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Five sites, three requests at a time: killed mid-run, then rerun; every visit arrives,
    and at most MATOMO_MAX_CONCURRENCY (3) pages are sent twice in all."""
    zones = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC+5.5"]
    sites = [
        SimSite(idsite=i + 1, name=f"s{i + 1}", timezone=zone, default_visits=0,
                visits={"2024-03-01": 23 + i, "2024-03-02": 10 * i})
        for i, zone in enumerate(zones)
    ]  # fmt: skip
    simulator = sim_factory(sites, latency_s=0.2)
    values = base_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1,2,3,4,5",
                         MATOMO_MAX_CONCURRENCY="3")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", "2024-03-03"]  # fmt: skip
    process = subprocess.Popen(args, env=clean_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(checkpoint(tmp_path, s) for s in range(1, 6)):  # a first page checkpointed
            break
        time.sleep(0.005)
    process.kill()
    process.wait()
    done = Cursor(date(2024, 3, 3), 0)
    assert any(checkpoint(tmp_path, s) != done for s in range(1, 6)), "killed too late"
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-03")
    assert result.code == 0, result.output
    counts = Counter(record.key for record in read_topic(topic))
    want = {f"{s}:{int(v['idVisit'])}" for s in range(1, 6) for d in (1, 2)
            for v in simulator.expected_visits(s, date(2024, 3, d))}  # fmt: skip
    assert set(counts) == want
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 3 * LIMIT, f"{duplicates} duplicates"
    for idsite in range(1, 6):
        assert checkpoint(tmp_path, idsite) == Cursor(date(2024, 3, 3), 0)
