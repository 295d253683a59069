"""Sites (issue #5): MATOMO_ID_SITE=all resolved at run time, sites whose visitor log is
disabled skipped (or failed with MATOMO_STRICT_SITES=true), and `--shard i/n` splitting the
sites between instances that run at once on the same parm/ and checkpoint files."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.config.load import load_settings
from matomo_kafka.model import Cursor
from matomo_kafka.simulator import SimSite
from matomo_kafka.source.sites import shard_of
from support.cli import clean_env, run_cli
from support.runs import cursor, expected_keys, parm, topic_counts

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

RUN_DATE = "2024-03-04"  # reads 2024-03-01 .. 2024-03-03
DAYS = [date(2024, 3, d) for d in range(1, 4)]


def sites(*ids: int, disabled: tuple[int, ...] = ()) -> list[SimSite]:
    return [SimSite(idsite=i, name=f"site {i}", timezone="UTC", default_visits=12,
                    live_disabled=i in disabled) for i in ids]  # fmt: skip


def test_all_sites_skips_a_disabled_visitor_log(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites(1, 2, 3, 4, 5, disabled=(4,)), denied_sites=[5])
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="all")
    summary = tmp_path / "summary.json"
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                     "--summary-file", str(summary))  # fmt: skip
    assert result.code == 0, result.output
    assert "the token can view 4 site(s)" in result.stderr
    assert "site 4: visitor log disabled in Matomo, skipped" in result.stderr
    assert set(topic_counts(topic)) == expected_keys(simulator, (1, 2, 3), DAYS)
    assert max(topic_counts(topic).values()) == 1
    report = json.loads(summary.read_text())
    assert report["site_selection"] == "all" and report["outcome"] == "ok"
    outcomes = {site["site"]: site["outcome"] for site in report["sites"]}
    assert outcomes == {1: "done", 2: "done", 3: "done", 4: "disabled"}
    assert "Visits log is deactivated" in report["sites"][3]["error"]
    assert cursor(tmp_path, 4) is None, "nothing read, nothing checkpointed"
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 4), 0)
    assert not [r for r in simulator.requests if r["params"].get("idSite") == "5"]

    # An explicit list gets the same policy.
    explicit = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                       "--sites", "4,1")  # fmt: skip
    assert explicit.code == 0, explicit.output

    strict = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="all", MATOMO_STRICT_SITES="true")
    failed = run_cli("run", "--parm-dir", str(strict), "--run-date", RUN_DATE)
    assert failed.code == 1, failed.output
    assert "matomo-kafka: site 4: " in failed.stderr
    assert "Visits log is deactivated" in failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == "matomo-kafka: error: 1 of 4 site(s) failed"


def test_all_is_resolved_at_run_time_after_validation(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites(1, 2))
    invalid = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="ALL", START_DATE="x")
    result = run_cli("run", "--parm-dir", str(invalid), "--run-date", RUN_DATE)
    assert result.code == 2 and "START_DATE" in result.stderr
    assert "MATOMO_ID_SITE" not in result.stderr
    assert simulator.requests == [], "nothing reaches Matomo before the config is valid"

    refused = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="all", MATOMO_API_TOKEN="wrong")
    result = run_cli("run", "--parm-dir", str(refused), "--run-date", RUN_DATE)
    assert result.code == 1 and "token refused" in result.stderr
    assert [r["method"] for r in simulator.requests] == [
        "SitesManager.getSitesIdWithAtLeastViewAccess"
    ]
    assert not (tmp_path / "data").exists()

    settings = load_settings(parm(tmp_path, simulator, topic, MATOMO_ID_SITE=" All "), {})
    assert settings.MATOMO_ID_SITE == "all" and settings.all_sites


def test_status_and_check_with_all(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites(1, 2, 3, disabled=(3,)))
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="all")
    checked = run_cli("check", "--parm-dir", str(directory))
    assert checked.code == 0, checked.output
    assert "all: 1,2,3" in checked.stdout and "disabled" in checked.stdout
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    status = run_cli("status", "--parm-dir", str(directory), "--run-date", RUN_DATE)
    assert status.code == 0, status.output
    assert "the 2 site(s) with a checkpoint file" in status.stdout
    lines = [line for line in status.stdout.splitlines() if "2024-03-04" in line]
    assert len(lines) == 2

    strict = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="all", MATOMO_STRICT_SITES="1")
    assert run_cli("check", "--parm-dir", str(strict)).code == 1


def test_two_shards_at_once_on_the_same_parm(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    ids = (1, 2, 3, 4, 5, 6)
    simulator = sim_factory(sites(*ids), latency_s=0.05)
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE=",".join(map(str, ids)))

    def start(index: int) -> subprocess.Popen[str]:
        args = ["run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                "--summary-file", str(tmp_path / f"s{index}.json")]  # fmt: skip
        return subprocess.Popen(
            [sys.executable, "-m", "matomo_kafka.cli", *args],
            env=clean_env(MATOMO_SHARD=f"{index}/2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    processes = [start(0), start(1)]  # both at once, on the same parm/ and checkpoint files
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    counts = topic_counts(topic)
    assert set(counts) == expected_keys(simulator, ids, DAYS)
    assert max(counts.values()) == 1, "each visit delivered once"
    done = [[site["site"] for site in json.loads((tmp_path / f"s{i}.json").read_text())["sites"]]
            for i in (0, 1)]  # fmt: skip
    assert done == [[4, 5, 6], [1, 2, 3]]
    assert [json.loads((tmp_path / f"s{i}.json").read_text())["shard"] for i in (0, 1)] == [
        "0/2",
        "1/2",
    ]
    assert all(cursor(tmp_path, idsite) == Cursor(date(2024, 3, 4), 0) for idsite in ids)


def test_a_shard_without_sites_does_nothing(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites(1))
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="1")
    assert shard_of(1, 4) == 3
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                     "--shard", "0/4")  # fmt: skip
    assert result.code == 0, result.output
    assert "shard 0/4 has no site" in result.stderr
    assert topic_counts(topic) == {} and cursor(tmp_path, 1) is None
