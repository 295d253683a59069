"""A standard test run and what it should deliver: its parm/ (support.parm.base_values against
a simulator and a topic), the two standard sites, its checkpoints, the keys expected in the
topic; and the CLI on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import CLI_OUTPUTS, CliResult, clean_env
from support.kafka import read_topic
from support.parm import base_values, write_parm

LIMIT = 10
RUN_DATE = "2024-03-06"  # reads 2024-03-01 .. 2024-03-05
DAYS = [date(2024, 3, d) for d in range(1, 6)]


def two_sites(limit: int) -> list[SimSite]:
    """Site 1 in UTC, site 2 in Paris, with days of 0, L-1, L, L+1 and 2L visits."""
    counts = [0, limit - 1, limit, limit + 1, 2 * limit]
    days = [f"2024-03-{day:02d}" for day in range(1, 6)]
    return [
        SimSite(idsite=1, name="UTC site", timezone="UTC", default_visits=3,
                visits=dict(zip(days, counts, strict=True))),
        SimSite(idsite=2, name="Paris site", timezone="Europe/Paris", default_visits=3,
                visits=dict(zip(days, reversed(counts), strict=True))),
    ]  # fmt: skip


def store(tmp_path: Path) -> CheckpointStore:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def cursor(tmp_path: Path, idsite: int) -> Cursor | None:
    return store(tmp_path).load(idsite)


def parm(tmp_path: Path, simulator: MatomoSimulator, topic: str, **overrides: str) -> Path:
    return write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic, **overrides))


def expected_keys(
    simulator: MatomoSimulator, sites: tuple[int, ...] = (1, 2), days: list[date] = DAYS
) -> set[str]:
    return {
        f"{idsite}:{int(visit['idVisit'])}"
        for idsite in sites
        for day in days
        for visit in simulator.expected_visits(idsite, day)
    }


def topic_counts(topic: str) -> Counter[str]:
    return Counter(record.key for record in read_topic(topic))


def run_on_tty(
    args: list[str], env: dict[str, str] | None = None, answer: bytes | None = None
) -> tuple[int, str]:
    """Runs the CLI with stdin and stderr on a pseudo-terminal (stdout piped away); types
    `answer` once a prompt shows. Returns the exit code and what the terminal showed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "matomo_kafka.cli", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env if env is not None else clean_env(TERM="xterm", COLUMNS="160"),
    )
    os.close(slave)
    shown = b""
    stdout = b""
    answered = answer is None
    open_ends = {master, process.stdout.fileno()} if process.stdout else {master}
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    deadline = time.monotonic() + 120
    while open_ends and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_ends), [], [], 0.1)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the child closed its end of the terminal
                data = b""
            if not data:
                open_ends.discard(fd)
            elif fd == master:
                shown += data
            else:
                stdout += data
        if not answered and b"[y/N]" in shown + stdout:
            os.write(master, answer or b"")
            answered = True
    os.close(master)
    code = process.wait(timeout=10)
    text = (stdout + shown).decode(errors="replace")
    CLI_OUTPUTS.append(text)
    return code, text


def cli_env(**extra: Any) -> dict[str, str]:
    return clean_env(**{key: str(value) for key, value in extra.items()})


def assert_fenced(older: subprocess.Popen[Any], older_stderr: str, newer: CliResult) -> None:
    """Two instances on site 1: the newer finished; the older was refused at its next
    transaction, with exit 3 and one last line naming the site."""
    assert newer.code == 0, newer.output
    assert older.returncode == 3, older_stderr
    last = older_stderr.strip().splitlines()[-1]
    assert last.startswith("matomo-kafka: error: fenced by another instance working on site 1")
