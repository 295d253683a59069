"""`matomo-kafka reset` (issue #5): moves a checkpoint on purpose, says what changed, asks
first (or needs --yes), and is refused while a run holds the site's lock."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from support.cli import run_cli
from support.kafka import read_topic
from support.runs import LIMIT, RUN_DATE, cursor, expected_keys, parm, run_on_tty, store, two_sites

pytestmark = [pytest.mark.simulator]


@pytest.mark.kafka
def test_reset_then_run_resends_from_that_day(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    sent_once = Counter(record.key for record in read_topic(topic))

    result = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                     "2024-03-04", "--yes")  # fmt: skip
    assert result.code == 0, result.output
    assert "site 1: checkpoint 2024-03-06 offset 0 -> 2024-03-04 offset 0" in result.stdout
    assert "re-sends" in result.stdout
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 4), 0)
    assert cursor(tmp_path, 2) == Cursor(date(2024, 3, 6), 0), "other sites untouched"
    assert (tmp_path / "data" / "last_filter_offset1.txt").read_text().strip() == "0"

    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    counts = Counter(record.key for record in read_topic(topic))
    resent = expected_keys(simulator, (1,), [date(2024, 3, 4), date(2024, 3, 5)])
    assert counts - sent_once == Counter(resent)

    same = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                   "2024-03-06", "--yes")  # fmt: skip
    assert same.code == 0 and "nothing to change" in same.stdout


@pytest.mark.kafka
def test_reset_mid_day_offset_and_never_run_site(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    store(tmp_path).save(1, Cursor(date(2024, 3, 5), 10))
    result = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                     "20240305", "--yes")  # fmt: skip
    assert result.code == 0, result.output
    assert "2024-03-05 offset 10 -> 2024-03-05 offset 0" in result.stdout
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 5), 0)

    fresh = run_cli("reset", "--parm-dir", str(directory), "--site", "2", "--date",
                    "2024-03-03", "--yes")  # fmt: skip
    assert fresh.code == 0, fresh.output
    assert "none (would start at START_DATE 2024-03-01) -> 2024-03-03 offset 0" in fresh.stdout
    assert "will NOT be sent" not in fresh.stdout
    assert cursor(tmp_path, 2) == Cursor(date(2024, 3, 3), 0)


def test_an_unreadable_checkpoint_can_be_reset(tmp_path: Path, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, "t")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "filterdate1.txt").write_text("garbage\n")
    result = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                     "2024-03-02", "--yes")  # fmt: skip
    assert result.code == 0, result.output
    assert "unreadable -> 2024-03-02 offset 0" in result.stdout
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 0)


def test_confirmation(tmp_path: Path, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, "t")
    store(tmp_path).save(1, Cursor(date(2024, 3, 2), 0))
    args = ["reset", "--parm-dir", str(directory), "--site", "1", "--date", "2024-03-04"]

    no_terminal = run_cli(*args)  # stdin is not a terminal, no --yes: refused
    assert no_terminal.code == 2
    assert "no terminal to confirm the reset: pass --yes" in no_terminal.stderr
    assert "checkpoint 2024-03-02 offset 0 -> 2024-03-04 offset 0 not done, checkpoint " \
        "unchanged" in no_terminal.stderr  # fmt: skip
    assert no_terminal.stdout == "", "nothing printed as if it had moved (issue 28)"
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 0)

    code, shown = run_on_tty(args, answer=b"n\n")
    assert code == 2 and "cancelled" in shown, shown
    assert "will NOT be sent" in shown, "moving forward skips days: say so before asking"
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 0)

    code, shown = run_on_tty(args, answer=b"y\n")
    assert code == 0, shown
    assert "site 1: checkpoint 2024-03-02 offset 0 -> 2024-03-04 offset 0" in shown
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 4), 0)


def test_refused_while_a_run_holds_the_site(tmp_path: Path, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, "t")
    store(tmp_path).save(1, Cursor(date(2024, 3, 2), 7))
    with store(tmp_path).lock([1]):
        result = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                         "2024-03-01", "--yes")  # fmt: skip
    assert result.code == 3, result.output
    assert "another matomo-kafka run" in result.stderr
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 7)
    with store(tmp_path).lock([2]):  # another site's lock does not matter
        other = run_cli("reset", "--parm-dir", str(directory), "--site", "1", "--date",
                        "2024-03-01", "--yes")  # fmt: skip
    assert other.code == 0, other.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--site", "1", "--date", "2024-02-30"], "--date '2024-02-30' is not a date"),
        (["--site", "1", "--date", "2999-01-01"], "in the future"),
        (["--site", "0", "--date", "2024-03-01"], "--site"),
        (["--date", "2024-03-01"], "--site"),
    ],
)
def test_bad_reset_arguments(
    tmp_path: Path, sim_factory: Any, args: list[str], expected: str
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, "t")
    store(tmp_path).save(1, Cursor(date(2024, 3, 2), 7))
    result = run_cli("reset", "--parm-dir", str(directory), "--yes", *args)
    assert result.code == 2, result.output
    assert expected in result.stderr
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 7)
