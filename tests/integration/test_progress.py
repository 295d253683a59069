"""Progress and logs (issue #5): one log line per page and per day under a scheduler, a live
display on a terminal, JSON log lines with LOG_FORMAT=json (still redacted)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.runs import LIMIT, RUN_DATE, cli_env, parm, run_on_tty, two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

# two_sites(10): pages per site = sum over its days of (visits // 10 + 1).
PAGES_PER_SITE = sum(n // LIMIT + 1 for n in (0, 9, 10, 11, 20))


def test_scheduler_gets_one_line_per_page_and_per_day(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    result = run_cli("run", "--parm-dir", str(parm(tmp_path, simulator, topic)),
                     "--run-date", RUN_DATE)  # fmt: skip
    assert result.code == 0, result.output
    lines = result.stderr.splitlines()
    pages = [line for line in lines if re.search(r"site \d: 2024-03-0\d page \d+: ", line)]
    days = [line for line in lines if re.search(r"site \d: 2024-03-0\d done: ", line)]
    assert len(pages) == 2 * PAGES_PER_SITE
    assert len(days) == 2 * 5
    assert all("days, ETA " in line and "[TEST01]" in line for line in days)
    assert any("site 1: 2024-03-05 done: 20 visits, 3 page(s)" in line for line in days)
    # The pipeline's shorter per-day line is not repeated beside it.
    assert not [line for line in lines if re.search(r"done, \d+ visits sent \(", line)]

    quiet = run_cli("run", "-q", "--parm-dir", str(parm(tmp_path, simulator, topic)),
                    "--run-date", "2024-03-07")  # fmt: skip
    assert quiet.code == 0, quiet.output
    assert " page " not in quiet.stderr and "INFO" not in quiet.stderr


def test_json_logs_every_line_an_object(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic, LOG_FORMAT="json", MATOMO_ID_SITE="1,2,77")
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE)
    assert result.code == 1, result.output  # site 77 is unknown: one site fails
    lines = result.stderr.strip().splitlines()
    verdict = [line for line in lines if line.startswith("matomo-kafka: ")]
    assert verdict == lines[-2:], "only the final verdict lines are plain text"
    assert lines[-1] == "matomo-kafka: error: 1 of 3 site(s) failed"
    records = [json.loads(line) for line in lines[:-2]]
    assert len(records) > 2 * PAGES_PER_SITE
    for record in records:
        assert {"time", "level", "logger", "message", "clusterid"} <= record.keys()
        assert record["clusterid"] == "TEST01"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert any(r["level"] == "ERROR" and "site 77" in r["message"] for r in records)
    page = next(r for r in records if r["logger"] == "matomo_kafka.progress" and "page" in r)
    assert page["site"] in (1, 2) and page["day"].startswith("2024-03-0")

    # The same key from the environment, in upper case, works too.
    env = cli_env(LOG_FORMAT="JSON")
    text = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="1")
    again = run_cli("run", "--parm-dir", str(text), "--run-date", "2024-03-07", env=env)
    assert again.code == 0, again.output
    assert all(json.loads(line)["message"] for line in again.stderr.strip().splitlines())


def test_bad_log_format_is_a_config_error(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    result = run_cli("run", "--parm-dir", str(parm(tmp_path, simulator, topic, LOG_FORMAT="xml")))
    assert result.code == 2 and "LOG_FORMAT" in result.stderr
    assert not (tmp_path / "data").exists()


def test_progress_display_on_a_terminal(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT), latency_s=0.05)
    directory = parm(tmp_path, simulator, topic)
    code, shown = run_on_tty(["run", "--parm-dir", str(directory), "--run-date", RUN_DATE])
    assert code == 0, shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert re.search(r"site +1 .*5/5 days 2024-03-05 9 pages 50 visits \d+ visits/s", plain)
    assert re.search(r"site +2 .*5/5 days .* done", plain)
    assert "ETA" in plain
    assert " page 1: " not in plain, "the display replaces the per-page log lines"
