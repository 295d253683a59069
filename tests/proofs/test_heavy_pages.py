"""Pages too heavy for the Matomo server (PHP memory or time limit: HTTP 500 and Matomo's
error page) are asked for again in halves, never fatal while a page of 50 visits passes;
the checkpoint keeps its meaning; counted in the summary; one clear line when even the
smallest page fails. Simulator over real HTTP, real broker."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import Fault, MatomoSimulator, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import run_cli
from support.kafka import read_topic
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

DAYS = {"2024-03-01": 260, "2024-03-02": 40, "2024-03-03": 130}


def run(tmp_path: Path, simulator: MatomoSimulator, topic: str) -> tuple[Any, dict[str, Any]]:
    values = base_values(tmp_path, simulator.url, topic, MATOMO_FILTER_LIMIT="200",
                         MATOMO_ID_SITE="1")  # fmt: skip
    summary = tmp_path / "summary.json"
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)),
                     "--run-date", "2024-03-04", "--summary-file", str(summary))  # fmt: skip
    return result, json.loads(summary.read_text())


def checkpoint(tmp_path: Path) -> Cursor | None:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset")).load(1)


@pytest.mark.parametrize(("kind", "said"), [("memory", "ran out of memory"),
                                            ("time", "hit its time limit")])  # fmt: skip
def test_heavy_pages_are_split_and_every_visit_arrives_once(
    tmp_path: Path, topic: str, sim_factory: Any, kind: str, said: str
) -> None:
    """Matomo fails any answer of more than 70 visits: pages of 200 are asked for again as
    100, then 50; the next pages start at 200 again."""
    site = SimSite(idsite=1, name="heavy", timezone="UTC", default_visits=0, visits=DAYS)
    simulator = sim_factory([site], page_limit_visits=70, page_limit_kind=kind)
    result, summary = run(tmp_path, simulator, topic)
    assert result.code == 0, result.output
    keys = Counter(record.key for record in read_topic(topic))
    expected = {f"1:{int(v['idVisit'])}" for day in DAYS
                for v in simulator.expected_visits(1, date.fromisoformat(day))}  # fmt: skip
    assert set(keys) == expected and max(keys.values()) == 1
    assert checkpoint(tmp_path) == Cursor(date(2024, 3, 4), 0)
    assert summary["sites"][0]["pages_split"] > 0
    assert summary["totals"]["pages_split"] == summary["sites"][0]["pages_split"]
    warnings = [line for line in result.stderr.splitlines() if "too heavy for Matomo" in line]
    assert len(warnings) == 2, warnings  # once a day: 03-01 and 03-03 (03-02 fits)
    assert all(said in line for line in warnings)
    lives = [r for r in simulator.requests if r["method"] == "Live.getLastVisitsDetails"]
    limits = [int(r["params"]["filter_limit"]) for r in lives]
    assert 200 in limits and 100 in limits and 50 in limits
    assert max(limits) == 200  # never above the configured size


def test_even_the_smallest_page_failing_stops_the_site_with_one_line(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    site = SimSite(idsite=1, name="heavy", timezone="UTC", default_visits=0, visits=DAYS)
    simulator = sim_factory([site], page_limit_visits=20)
    result, summary = run(tmp_path, simulator, topic)
    assert result.code == 1, result.output
    lines = result.stderr.splitlines()
    line = next(line for line in lines if line.startswith("matomo-kafka: site 1"))
    assert "even a page of 50 visits fails on 2024-03-01 after 0 visits of the day" in line
    assert "memory_limit" in line
    assert summary["sites"][0]["outcome"] == "failed"
    assert read_topic(topic) == [] and checkpoint(tmp_path) is None  # nothing sent or moved
    sizes = [
        int(r["params"]["filter_limit"])
        for r in simulator.requests
        if r["method"] == "Live.getLastVisitsDetails" and r["params"]["date"] == "2024-03-01"
    ]
    # The run's first Live request is the probe of visits' size, already at the floor of 50
    # (paging.PageSizes): tried twice, then it stops. The halving from 200 is proved above.
    assert sizes == [50, 50]


def test_a_struggling_server_gets_fewer_requests(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Matomo answers 503 (then recovers): the run halves the requests it keeps in flight,
    says so in one log line and in the summary, and still delivers every visit once."""
    site = SimSite(idsite=1, name="busy", timezone="UTC", default_visits=0, visits=DAYS)
    fault = Fault(kind="status", status=503, method="Live.getLastVisitsDetails", times=1)
    simulator = sim_factory([site], faults=[fault])
    values = base_values(tmp_path, simulator.url, topic, MATOMO_FILTER_LIMIT="20",
                         MATOMO_ID_SITE="1", MATOMO_MAX_CONCURRENCY="4")  # fmt: skip
    summary_file = tmp_path / "summary.json"
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)),
                     "--run-date", "2024-03-04", "--summary-file", str(summary_file))  # fmt: skip
    assert result.code == 0, result.output
    assert "Matomo requests in flight: 4 -> 2 (Matomo strained: " in result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["totals"]["matomo_concurrency"]["lowest"] <= 2  # (slow pages: maybe fewer)
    keys = Counter(record.key for record in read_topic(topic))
    assert len(keys) == sum(DAYS.values()) and max(keys.values()) == 1
