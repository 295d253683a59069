"""`matomo-kafka reconcile` (issue 22): any range of days made equal to Matomo's raw log, a dry
run first. Missing, changed (more actions, anonymisation) and erased visits over 10 days:
after `--apply` the compacted view of the topic (newest record per key, tombstones remove)
equals Matomo's listing of every day, a second `--apply` sends nothing; a SIGKILL during
`--apply` and a rerun give the same end state (exactly-once: no record twice); purged days
are kept; bad input is one line, exit 2, nothing sent. Real broker, simulator over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import Fault, MatomoSimulator, SimSite
from support.cli import clean_env, cli_command, run_cli
from support.kafka import Record, read_committed
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

MODES = ["at_least_once", "exactly_once"]
FIRST, LAST = "2024-03-01", "2024-03-10"
LATE_DAY, GROW_DAY, ANON_DAY, ERASE_DAY = "2024-03-02", "2024-03-04", "2024-03-06", "2024-03-08"


def sites() -> list[SimSite]:
    return [SimSite(idsite=1, name="UTC", timezone="UTC", default_visits=8, late={LATE_DAY: 3})]


def parm_of(tmp_path: Path, simulator: MatomoSimulator, topic: str, **overrides: str) -> Path:
    values = base_values(tmp_path, simulator.url, topic, START_DATE=FIRST, MATOMO_ID_SITE="1",
                         **overrides)  # fmt: skip
    return write_parm(tmp_path / "parm", **values)


def reconcile(parm: Path, tmp_path: Path, *extra: str, first: str = FIRST, last: str = LAST,
              code: int | None = None) -> tuple[dict[str, Any], str]:  # fmt: skip
    summary = tmp_path / "reconcile.json"
    summary.unlink(missing_ok=True)
    result = run_cli("reconcile", "--parm-dir", str(parm), "--site", "1", "--from", first,
                     "--to", last, "--summary-file", str(summary), *extra)  # fmt: skip
    if code is not None:
        assert result.code == code, result.output
    return json.loads(summary.read_text()), result.output


def differences(simulator: MatomoSimulator) -> dict[str, set[str]]:
    """Late visits appear (missing), visits grow and are anonymised (changed), 3 are erased."""
    simulator.release_late()
    missing = {f"1:{i}" for i in _ids(simulator, LATE_DAY)} - SENT_BEFORE[id(simulator)]
    grown = {f"1:{i}" for i in simulator.grow_visits(1, GROW_DAY, 2)}
    day = date.fromisoformat(ANON_DAY)
    simulator.anonymize_raw_data([1], day, day, ip=True, location=True, user_id=True)
    ids = _ids(simulator, ERASE_DAY)
    erased = ids[1:4]
    simulator.delete_visits([(1, i) for i in erased])
    return {"missing": missing, "changed": grown | {f"1:{i}" for i in _ids(simulator, ANON_DAY)},
            "erased": {f"1:{i}" for i in erased}}  # fmt: skip


SENT_BEFORE: dict[int, set[str]] = {}


def _ids(simulator: MatomoSimulator, day: str) -> list[int]:
    return [int(v["idVisit"]) for v in simulator.expected_visits(1, day)]


def compacted(records: list[Record]) -> dict[str, bytes]:
    view: dict[str, bytes | None] = {}
    for record in records:  # a key has one partition, read in offset order
        view[record.key] = record.value
    return {key: value for key, value in view.items() if value is not None}


def matomo_keys(simulator: MatomoSimulator) -> set[str]:
    days = [date.fromisoformat(FIRST) + timedelta(days=n) for n in range(10)]
    return {f"1:{v['idVisit']}" for day in days for v in simulator.expected_visits(1, day)}


def first_run(tmp_path: Path, simulator: MatomoSimulator, topic: str, delivery: str) -> Path:
    parm = parm_of(tmp_path, simulator, topic, DELIVERY=delivery)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-11")
    assert result.code == 0, result.output
    SENT_BEFORE[id(simulator)] = {r.key for r in read_committed(topic)}
    return parm


@pytest.mark.parametrize("delivery", MODES)
def test_apply_makes_every_day_equal_to_matomo_and_a_second_apply_sends_nothing(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory(sites())
    parm = first_run(tmp_path, simulator, topic, delivery)
    want = differences(simulator)
    before = len(read_committed(topic))

    dry, output = reconcile(parm, tmp_path, code=1)
    assert len(read_committed(topic)) == before  # a dry run sends nothing
    totals = dry["totals"]
    assert (totals["missing"], totals["changed"], totals["erased"]) == (3, 10, 3), output
    assert totals["sent"] == 0 and dry["not_reconciled"] == []
    by_day = {row["day"]: row for row in dry["days"]}
    assert by_day[ERASE_DAY]["erased"] == 3 and by_day[LATE_DAY]["missing"] == 3
    assert by_day["2024-03-01"] == {**by_day["2024-03-01"], "missing": 0, "changed": 0,
                                    "erased": 0, "equal": 8}  # fmt: skip

    audit = run_cli("audit", "--parm-dir", str(parm), "--site", "1", "--from", FIRST,
                    "--to", LAST)  # fmt: skip
    assert audit.code == 1 and f"note: {ANON_DAY}: 8 visit(s) changed" in audit.stdout

    applied, output = reconcile(parm, tmp_path, "--apply", code=0)
    assert applied["totals"]["sent"] == 16, output
    records = read_committed(topic)
    new = [r for r in records if r.headers.get("matomo.reconcile") == b"1"]
    ops = {r.key: r.headers["matomo.op"] for r in new}
    assert Counter(r.key for r in new) == Counter(
        dict.fromkeys(want["missing"] | want["changed"] | want["erased"], 1)
    )
    assert {k for k, op in ops.items() if op == b"insert"} == want["missing"]
    assert {k for k, op in ops.items() if op == b"update"} == want["changed"]
    assert {k for k, op in ops.items() if op == b"delete"} == want["erased"]
    assert all(r.value is None for r in new if r.key in want["erased"])
    assert set(compacted(records)) == matomo_keys(simulator)
    assert "tombstone for 1:" in output

    again, output = reconcile(parm, tmp_path, "--apply", code=0)
    assert again["totals"]["sent"] == 0, output
    assert len(read_committed(topic)) == len(records)
    equal, _ = reconcile(parm, tmp_path, code=0)  # the dry run now finds every day equal
    audit = run_cli("audit", "--parm-dir", str(parm), "--site", "1", "--from", FIRST,
                    "--to", LAST)  # fmt: skip
    assert audit.code == 0 and "changed" not in audit.stdout, audit.output  # tombstones count
    assert equal["totals"]["equal"] == len(matomo_keys(simulator))


@pytest.mark.parametrize("delivery", MODES)
def test_a_killed_apply_and_a_rerun_reach_the_same_end_state(
    tmp_path: Path, topic: str, sim_factory: Any, delivery: str
) -> None:
    simulator = sim_factory(sites())
    parm = first_run(tmp_path, simulator, topic, delivery)
    want = differences(simulator)
    simulator.config.latency_s = 0.3  # a few seconds a day: time to kill it midway
    command = cli_command("reconcile", "--parm-dir", str(parm), "--site", "1", "--from", FIRST,
                          "--to", LAST, "--apply")  # fmt: skip
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.monotonic() + 120
        while f"{LATE_DAY}: " not in log.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL, log.read_text()
    simulator.config.latency_s = 0.0
    rerun, output = reconcile(parm, tmp_path, "--apply", code=0)
    assert rerun["totals"]["sent"] < 16, output  # LATE_DAY was done by the killed one
    records = read_committed(topic)
    assert set(compacted(records)) == matomo_keys(simulator)
    sent = Counter(r.key for r in records if r.headers.get("matomo.reconcile") == b"1")
    assert set(sent) == want["missing"] | want["changed"] | want["erased"]
    if delivery == "exactly_once":
        assert max(sent.values()) == 1  # no record twice
    again, _ = reconcile(parm, tmp_path, "--apply", code=0)
    assert again["totals"]["sent"] == 0


def test_purged_days_are_kept_unless_asked(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites())
    parm = first_run(tmp_path, simulator, topic, "at_least_once")
    today = datetime.now(UTC).date()
    simulator.purge_raw_data_older_than((today - date(2024, 3, 4)).days)  # 03-01 .. 03-03
    dry, output = reconcile(parm, tmp_path, last="2024-03-05", code=0)
    assert dry["totals"]["purged_days"] == ["2024-03-01", "2024-03-02", "2024-03-03"], output
    assert dry["totals"]["erased"] == 0 and "purged by Matomo" in output
    kept, _ = reconcile(parm, tmp_path, "--apply", last="2024-03-05", code=0)
    assert kept["totals"]["sent"] == 0
    assert not [r for r in read_committed(topic) if r.value is None]
    erased, output = reconcile(parm, tmp_path, "--apply", "--erase-purged-days",
                               last="2024-03-05", code=0)  # fmt: skip
    assert erased["totals"]["sent"] == 8 + 5 + 8, output  # 03-02's 3 late ones were never sent
    assert len([r for r in read_committed(topic) if r.value is None]) == 21


def test_more_erasures_than_the_limit_need_yes(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites())
    parm = first_run(tmp_path, simulator, topic, "at_least_once")
    simulator.delete_visits([(1, i) for i in _ids(simulator, ERASE_DAY)[:4]])
    parm = parm_of(tmp_path, simulator, topic, MATOMO_MAX_ERASE="2")
    held, output = reconcile(parm, tmp_path, "--apply", code=1, first=ERASE_DAY, last=ERASE_DAY)
    assert held["totals"]["withheld"] == 4 and held["totals"]["sent"] == 0, output
    assert "MATOMO_MAX_ERASE" in output and "--yes" in output.strip().splitlines()[-1]
    assert not [r for r in read_committed(topic) if r.value is None]
    done, _ = reconcile(parm, tmp_path, "--apply", "--yes", code=0, first=ERASE_DAY,
                        last=ERASE_DAY)  # fmt: skip
    assert done["totals"]["sent"] == 4
    assert len([r for r in read_committed(topic) if r.value is None]) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--from", "2024-03-05", "--to", "2024-03-01"), "is after --to"),
        (("--from", "2024-01-01", "--to", "2024-06-30"), "MATOMO_MAX_RECONCILE_DAYS=92"),
        (("--site", "99"), "99"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_sent(
    tmp_path: Path, topic: str, sim_factory: Any, args: tuple[str, ...], expected: str
) -> None:
    simulator = sim_factory(sites())
    parm = parm_of(tmp_path, simulator, topic)
    base = {"--site": "1", "--from": FIRST, "--to": LAST}
    for option, value in zip(args[::2], args[1::2], strict=True):
        base[option] = value
    flat = [part for pair in base.items() for part in pair]
    result = run_cli("reconcile", "--parm-dir", str(parm), *flat, "--apply")
    assert result.code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert read_committed(topic) == []


def test_a_refused_token_exits_with_its_code(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sites())
    parm = parm_of(tmp_path, simulator, topic, MATOMO_API_TOKEN="0" * 32)
    result = run_cli("reconcile", "--parm-dir", str(parm), "--site", "1", "--from", FIRST,
                     "--to", LAST, "--apply")  # fmt: skip
    assert result.code not in (0, 2), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and read_committed(topic) == []


def test_matomo_failing_midway_keeps_the_days_done(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(sites())
    parm = first_run(tmp_path, simulator, topic, "at_least_once")
    differences(simulator)
    parm = parm_of(tmp_path, simulator, topic, MATOMO_MAX_RETRIES="1")
    simulator.add_fault(Fault("status", method="Live.getLastVisitsDetails", idsite=1,
                              date=GROW_DAY, times=-1))  # fmt: skip
    failed, output = reconcile(parm, tmp_path, "--apply", code=1)
    assert [row["day"] for row in failed["days"]] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert failed["not_reconciled"][0] == GROW_DAY and len(failed["not_reconciled"]) == 7
    assert failed["totals"]["sent"] == 3 and "not reconciled" in output
