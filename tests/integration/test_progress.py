"""Progress and logs (issue #5): one log line per page and per day under a scheduler, a live
display on a terminal, JSON log lines with LOG_FORMAT=json (still redacted)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conftest import SALT, TOKEN, run_cli, two_sites
from matomo_kafka.errors import Redactor
from matomo_kafka.logsetup import JsonFormatter, setup_logging
from matomo_kafka.pipeline import SiteReport
from matomo_kafka.progress import LogProgress, Observers, RichProgress
from ops_support import LIMIT, RUN_DATE, cli_env, parm, run_on_tty

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


@pytest.fixture
def clean_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)


def test_json_lines_are_redacted(tmp_path: Path, clean_root_logger: None) -> None:
    redactor = Redactor([TOKEN, SALT])
    setup_logging(tmp_path, redactor, logging.INFO, "PROD-7", json_format=True)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler) and isinstance(
        handler.formatter, JsonFormatter
    )
    handler.setStream(stream)
    logger = logging.getLogger("matomo_kafka.test")
    logger.info("token %s and salt %s", TOKEN, SALT, extra={"fields": {"echo": TOKEN}})
    try:
        raise ValueError(f"bad {TOKEN}")
    except ValueError:
        logger.exception("failed\nwith two lines")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "a multi-line message stays one JSON line"
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "token *** and salt ***" and first["echo"] == "***"
    assert first["logger"] == "matomo_kafka.test" and first["clusterid"] == "PROD-7"
    assert second["level"] == "ERROR" and "ValueError: bad ***" in second["message"]
    assert TOKEN not in stream.getvalue() and SALT not in stream.getvalue()


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


def _drive(observer: Any, idsite: int, days: int, pages: int) -> SiteReport:
    site = SiteReport(idsite, last_closed=date(2024, 3, days))
    observer.site_started(site, date(2024, 3, 1))
    for d in range(1, days + 1):
        for _ in range(pages):
            site.pages += 1
            site.visits += 10
            observer.page_done(site, date(2024, 3, d), 10)
        observer.day_done(site, date(2024, 3, d), 10 * pages, 0.01)
    site.status = "done"
    observer.site_finished(site)
    return site


def test_observers_are_thread_safe(caplog: pytest.LogCaptureFixture) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    display = RichProgress(console)
    lines = LogProgress()
    both = Observers(display, lines)
    caplog.set_level(logging.INFO, logger="matomo_kafka.progress")
    with display.live():
        threads = [threading.Thread(target=_drive, args=(both, idsite, 5, 20))
                   for idsite in range(1, 9)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    tasks = display.progress.tasks
    assert len(tasks) == 8
    assert all(task.completed == 5 and task.fields["visits"] == 1000 for task in tasks)
    assert all(task.fields["outcome"] == "done" for task in tasks)
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if " page " in m]) == 8 * 5 * 20
    assert len([m for m in messages if " done: " in m]) == 8 * 5
    assert sum("5/5 days, ETA 0:00:00" in m for m in messages) == 8
