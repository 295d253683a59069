"""Values from Matomo and parm/ are printed as text, never as rich markup (issue 27): a site named
`[/x] Shop` crashed `check`; a checkpoint path holding `[/x]` crashed `status` and the end of
`run` (its summary names the files), after every visit was sent. Markup, emoji codes and
control characters from outside show as they are (controls escaped), through the simulator
over HTTP and the real broker, on a pipe and on a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import Fault, SimSite
from support.cli import clean_env, run_cli
from support.parm import base_values, write_parm
from support.runs import RUN_DATE, expected_keys, run_on_tty, topic_counts

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

#: Rich markup that crashes (an unmatched closing tag), restyles or links; an emoji code; an
#: escape sequence that clears the screen; a right-to-left override.
NAME = "[/x] Shop [bold]big[/bold] [link=https://evil.example]a[/link] :smile: \x1b[2J\u202eok"
SHOWN = "[/x] Shop [bold]big[/bold] [link=https://evil.example]a[/link] :smile: \\x1b[2J\\u202eok"
#: A checkpoint directory whose path reads as markup ("[/x]" closes a tag never opened).
DATA = "data[/x]"


def sites() -> list[SimSite]:
    return [
        SimSite(idsite=1, name=NAME, timezone="UTC", default_visits=3),
        SimSite(idsite=2, name="[bold]plain[/bold]", timezone="Europe/Paris", default_visits=3),
    ]


def parm(tmp_path: Path, url: str, topic: str) -> Path:
    data = tmp_path / DATA
    values = base_values(tmp_path, url, topic, FILE_PATH_FILTERDATE=str(data / "filterdate"),
                         FILE_PATH_LAST_OFFSET=str(data / "last_filter_offset"))  # fmt: skip
    return write_parm(tmp_path / "parm", **values)


def compact(text: str) -> str:
    """Without whitespace: a table wraps a long cell or caption over lines."""
    return "".join(text.split())


def test_check_shows_site_names_as_they_are(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites())
    checked = run_cli("check", "--parm-dir", str(parm(tmp_path, simulator.url, topic)),
                      env=clean_env(COLUMNS="400"))  # fmt: skip
    assert checked.code == 0, checked.output
    assert SHOWN in checked.stdout and "'[bold]plain[/bold]'" in checked.stdout
    assert "\x1b" not in checked.stdout and "\u202e" not in checked.stdout
    assert "Traceback" not in checked.output


def test_run_status_and_audit_show_paths_as_they_are(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """`run` on a pipe (log lines, summary) and on a terminal (live progress, summary),
    `status` before and after, `audit`: each exits 0 and shows the path whole."""
    simulator = sim_factory(sites())
    parm_dir = parm(tmp_path, simulator.url, topic)
    wide = clean_env(COLUMNS="400")
    before = run_cli("status", "--parm-dir", str(parm_dir), "--run-date", RUN_DATE, env=wide)
    assert before.code == 0, before.output
    assert f"{tmp_path / DATA / 'filterdate'}1.txt" in before.stdout
    piped = run_cli("run", "--parm-dir", str(parm_dir), "--run-date", "2024-03-04", env=wide)
    assert piped.code == 0, piped.output
    files = f"files{tmp_path / DATA / 'filterdate'}<site>.txt"  # the caption, wrapped
    assert files in compact(piped.stdout)
    code, shown = run_on_tty(["run", "--parm-dir", str(parm_dir), "--run-date", RUN_DATE],
                             env=clean_env(TERM="xterm", COLUMNS="400"))  # fmt: skip
    assert code == 0, shown
    assert files in compact(shown)
    assert topic_counts(topic) == dict.fromkeys(expected_keys(simulator, (1, 2)), 1)
    after = run_cli("status", "--parm-dir", str(parm_dir), "--run-date", RUN_DATE, env=wide)
    assert after.code == 0 and "2024-03-06" in after.stdout, after.output
    audited = run_cli("audit", "--site", "1", "--from", "2024-03-01", "--to", "2024-03-05",
                      "--parm-dir", str(parm_dir), env=wide)  # fmt: skip
    assert audited.code == 0, audited.output
    for output in (before.output, piped.output, shown, after.output, audited.output):
        assert "Traceback" not in output and "MarkupError" not in output


def test_matomo_error_text_reaches_no_terminal_raw(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """An error message from Matomo with markup and an escape sequence: `check` (its table),
    `run` (its log lines and its last line) show it as text, the sequence escaped."""
    simulator = sim_factory(sites())
    message = "Table \x1b]0;owned\x07[/x] crashed: [bold]repair it[/bold]"
    simulator.add_fault(Fault("envelope", method="Live.getLastVisitsDetails", idsite=1, times=-1,
                              message=message))  # fmt: skip
    parm_dir = parm(tmp_path, simulator.url, topic)
    wide = clean_env(COLUMNS="400")
    checked = run_cli("check", "--parm-dir", str(parm_dir), env=wide)
    ran = run_cli("run", "--parm-dir", str(parm_dir), "--run-date", RUN_DATE, env=wide)
    assert checked.code == 1 and ran.code == 1, checked.output + ran.output
    shown = "Table \\x1b]0;owned\\x07[/x] crashed: [bold]repair it[/bold]"
    assert shown in checked.stdout, checked.stdout
    assert shown in ran.stderr, ran.stderr
    for output in (checked.output, ran.output):
        raw = [line for line in output.splitlines() if "\x1b" in line or "\x07" in line]
        assert not raw, raw
        assert "Traceback" not in output
