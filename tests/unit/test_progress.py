"""Progress and logs without a run (issue #5): JSON log lines are redacted, the observers are
thread-safe."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from matomo_kafka.model import SiteReport
from matomo_kafka.ops.log_setup import JsonFormatter, setup_logging
from matomo_kafka.ops.progress import LogProgress, Observers, RichProgress
from matomo_kafka.ops.redaction import Redactor
from support.parm import SALT, TOKEN


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


def test_the_pace_is_shown_on_the_terminal_and_in_day_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Matomo's pace (requests in flight, of MATOMO_MAX_CONCURRENCY) is shown as it changes."""
    stream = io.StringIO()
    display = RichProgress(Console(file=stream, force_terminal=True, width=200))
    lines = LogProgress()
    both = Observers(display, lines)
    caplog.set_level(logging.INFO, logger="matomo_kafka.progress")
    with display.live():
        both.pace_changed(4, 4)
        site = SiteReport(1, last_closed=date(2024, 3, 2))
        both.site_started(site, date(2024, 3, 1))
        both.day_done(site, date(2024, 3, 1), 10, 0.1)
        display.progress.refresh()
        both.pace_changed(2, 4)
        both.day_done(site, date(2024, 3, 2), 10, 0.1)
        display.progress.refresh()
        shown = stream.getvalue()
    assert "Matomo requests in flight: 4 of 4" in shown
    assert "Matomo requests in flight: 2 of 4" in shown
    days = [r.getMessage() for r in caplog.records if " done: " in r.getMessage()]
    assert days[0].endswith("Matomo requests in flight: 4 of 4"), days
    assert days[1].endswith("Matomo requests in flight: 2 of 4"), days
