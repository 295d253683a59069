"""`matomo-kafka audit` (issue #5): the topic read back against VisitsSummary and a fresh
Live listing, per day; exit 1 on a missing or extra visit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, two_sites
from matomo_kafka.simulator import SimSite
from ops_support import LIMIT, RUN_DATE, parm


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by day: [sent, distinct, duplicates, summary, live, missing, extra, ok]."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells and re.fullmatch(r"\d{4}-\d\d-\d\d", cells[0]):
            found[cells[0]] = cells[1:]
    return found


def audit(directory: Path, site: int, first: str, last: str) -> Any:
    return run_cli("audit", "--parm-dir", str(directory), "--site", str(site),
                   "--from", first, "--to", last)  # fmt: skip


def test_full_run_audits_ok_then_new_visits_show_as_missing(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0

    ok = audit(directory, 1, "2024-03-01", "2024-03-05")
    assert ok.code == 0, ok.output
    table = rows(ok.stdout)
    assert list(table) == [f"2024-03-0{d}" for d in range(1, 6)]
    assert table["2024-03-05"] == ["20", "20", "0", "20", "20", "0", "0", "ok"]
    assert table["2024-03-01"] == ["0", "0", "0", "0", "0", "0", "0", "ok"]
    assert all(row[-1] == "ok" for row in table.values())

    # Late-tracked visits on a closed day: Matomo now has 4 the topic never got.
    simulator.set_visits(1, "2024-03-03", LIMIT + 4)
    late = audit(directory, 1, "2024-03-01", "2024-03-05")
    assert late.code == 1, late.output
    table = rows(late.stdout)
    assert table["2024-03-03"] == ["10", "10", "0", "14", "14", "4", "0", "MISMATCH"]
    assert table["2024-03-04"][-1] == "ok"
    assert late.stderr.strip().splitlines()[-1] == (
        "matomo-kafka: error: site 1: 1 of 5 day(s) differ: 4 visit(s) missing from the "
        "topic, 0 extra"
    )

    # Visits deleted in Matomo (GDPR tool): the topic has 3 that Live no longer lists.
    simulator.set_visits(1, "2024-03-04", 8)
    deleted = audit(directory, 1, "2024-03-04", "2024-03-04")
    assert deleted.code == 1, deleted.output
    assert rows(deleted.stdout)["2024-03-04"] == ["11", "11", "0", "8", "8", "0", "3", "MISMATCH"]

    # The other site is untouched; a day past the checkpoint is reported as not sent yet.
    ahead = audit(directory, 2, "2024-03-05", "2024-03-06")
    assert ahead.code == 1, ahead.output
    table = rows(ahead.stdout)
    assert table["2024-03-05"][-1] == "ok"
    assert table["2024-03-06"] == ["0", "0", "0", "3", "3", "3", "0", "NOT SENT"]


def test_duplicates_are_shown_but_are_not_a_mismatch(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="2")
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    reset = run_cli("reset", "--parm-dir", str(directory), "--site", "2", "--date",
                    "2024-03-02", "--yes")  # fmt: skip
    assert reset.code == 0, reset.output
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-04").code == 0
    result = audit(directory, 2, "2024-03-01", "2024-03-04")
    assert result.code == 0, result.output
    table = rows(result.stdout)
    assert table["2024-03-01"] == ["20", "20", "0", "20", "20", "0", "0", "ok"]
    assert table["2024-03-02"] == ["22", "11", "11", "11", "11", "0", "0", "ok"]
    assert table["2024-03-03"][:3] == ["20", "10", "10"]


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--site", "1", "--from", "2024-03-05", "--to", "2024-03-01"], 2, "is after --to"),
        (["--site", "1", "--from", "2024-03-01", "--to", "soon"], 2, "--to 'soon' is not a date"),
        (["--site", "1", "--from", "2023-01-01", "--to", "2024-03-01"], 2, "at most 366 days"),
        (["--site", "99", "--from", "2024-03-01", "--to", "2024-03-01"], 1, "site 99"),
    ],
)
def test_bad_audit_arguments(
    tmp_path: Path, topic: str, sim_factory: Any, args: list[str], code: int, expected: str
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    result = run_cli("audit", "--parm-dir", str(parm(tmp_path, simulator, topic)), *args)
    assert result.code == code, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_audit_counts_right_despite_unstable_ties(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Visits ending in the same second, served in a new order by every request: the Live
    listing of `audit` pages by keyset too, so it neither misses nor double-counts them."""
    site = SimSite(idsite=1, name="ties", timezone="UTC", tie_group=6,
                   visits={"2024-03-04": 7 * LIMIT + 3, "2024-03-05": 5 * LIMIT})  # fmt: skip
    simulator = sim_factory([site], unstable_ties=True)
    directory = parm(tmp_path, simulator, topic, MATOMO_ID_SITE="1")
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    result = audit(directory, 1, "2024-03-04", "2024-03-05")
    assert result.code == 0, result.output
    table = rows(result.stdout)
    assert table["2024-03-04"] == ["73", "73", "0", "73", "73", "0", "0", "ok"]
    assert table["2024-03-05"] == ["50", "50", "0", "50", "50", "0", "0", "ok"]
