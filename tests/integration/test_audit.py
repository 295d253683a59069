"""`matomo-kafka audit` (issue #5): the topic read back against VisitsSummary and a fresh
Live listing, per day; exit 1 on a missing or extra visit."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Producer

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import SimSite
from support.cli import run_cli
from support.kafka import (
    BOOTSTRAP,
    Record,
    create_retained_topic,
    delete_topics,
    fill_older,
    read_topic,
)
from support.runs import LIMIT, RUN_DATE, parm, store, two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

OLDER = 50_000


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


def read_counts(stdout: str) -> tuple[int, int, str]:
    """(records read, records in the topic, UTC minute the read started at) of the audit."""
    match = re.search(r"^read ([\d,]+) records of ([\d,]+) in the topic's partitions \(from "
                      r"the first one produced at or after (\d{4}-\d\d-\d\d \d\d:\d\d) UTC\)$",
                      stdout, re.MULTILINE)  # fmt: skip
    assert match, stdout
    return int(match[1].replace(",", "")), int(match[2].replace(",", "")), match[3]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
def kept_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh 3-partition topic with retention.ms=-1: records stamped in 2024 would otherwise
    be past the broker's 7-day retention and could be deleted during the test."""
    name = create_retained_topic(kafka_bootstrap, "test.visits")
    yield name
    delete_topics(kafka_bootstrap, [name])  # 50,000 records: not left behind


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

    # The other site is untouched; a day at or past the checkpoint is not due yet: reported
    # as such, and no error (issue 28).
    ahead = audit(directory, 2, "2024-03-05", "2024-03-06")
    assert ahead.code == 0, ahead.output
    table = rows(ahead.stdout)
    assert table["2024-03-05"][-1] == "ok"
    assert table["2024-03-06"] == ["0", "0", "0", "3", "3", "3", "0", "NOT DUE"]
    assert "1 day(s) not due yet (at or after the checkpoint, 2024-03-06 offset 0): 3 " \
        "visit(s) the next run sends, not an error" in ahead.stdout  # fmt: skip


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


def test_audit_reads_from_the_first_days_start_and_finds_what_a_whole_read_finds(
    tmp_path: Path, kept_topic: str, sim_factory: Any
) -> None:
    """50,000 older records (site 1's and site 9's, headers of older days, stamped over the 30
    days before 2024-03-01 00:00 UTC) then a real run: the audit counts exactly what reading
    the whole topic counts, but reads only the records stamped at or after its first day's
    start (in the site's timezone) minus an hour."""
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, kept_topic)
    fill_older(BOOTSTRAP, kept_topic, OLDER, datetime(2024, 3, 1, tzinfo=UTC))
    before_run = time.time()
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0

    everything = read_topic(kept_topic)
    # The premise of the read: the run's records carry their produce time (CreateTime).
    assert {record.timestamp[0] for record in everything} == {TIMESTAMP_CREATE_TIME}
    run_records = [r for r in everything if r.timestamp[1] >= int(before_run * 1000)]
    assert len(run_records) == 100  # two_sites: 50 visits a site over 2024-03-01 .. 05
    assert len(everything) == OLDER + len(run_records)

    # (site, first day, last day, where the read starts: the first day's start - 1 h in UTC)
    audits = [(1, "2024-03-02", "2024-03-05", "2024-03-01 23:00"),
              (2, "2024-03-01", "2024-03-04", "2024-02-29 22:00")]  # fmt: skip
    for site, first, last, start in audits:
        result = audit(directory, site, first, last)
        assert result.code == 0, result.output
        table = rows(result.stdout)
        assert all(row[-1] == "ok" for row in table.values())
        assert same_as_a_whole_read(table, everything, site)
        read, total, since = read_counts(result.stdout)
        assert since == start
        assert read == stamped_since(everything, since)
        assert read < len(run_records) + 200  # Paris's extra hour: ~140 older records
        # The former whole-topic read would have read every record.
        assert total == len(everything) >= read + OLDER - 200

    # Days the older records are of (stamped on them): read and counted like the run's (Live
    # lists 3 visits a day there, so they show as extra; the counts are what matters here).
    older = audit(directory, 1, "2024-02-27", "2024-02-28")
    assert older.code == 1, older.output
    table = rows(older.stdout)
    assert int(table["2024-02-27"][0]) > 500
    assert same_as_a_whole_read(table, everything, 1)
    read, total, since = read_counts(older.stdout)
    assert since == "2024-02-26 23:00"
    assert read == stamped_since(everything, since) < len(everything) // 5


def same_as_a_whole_read(table: dict[str, list[str]], everything: list[Record], site: int) -> bool:
    """Each day's sent and distinct sent are those of every record of the topic."""
    for day, row in table.items():
        of_day = [r.key for r in everything if r.key.startswith(f"{site}:")
                  and r.headers.get("matomo.day") == day.encode()]  # fmt: skip
        assert row[:2] == [str(len(of_day)), str(len(set(of_day)))], (site, day)
    return True


def stamped_since(everything: list[Record], since: str) -> int:
    """Records stamped at or after `since` (UTC minute): what a read from there gets, as the
    records of each partition are oldest first (offsets_for_times starts at the first)."""
    since_ms = ms(datetime.fromisoformat(since).replace(tzinfo=UTC))
    return sum(1 for record in everything if record.timestamp[1] >= since_ms)


def test_audit_of_days_nothing_was_produced_after(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """An empty topic, and a day after every record: nothing to read, no error; the rows
    follow from Live alone."""
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic)
    store(tmp_path).save(1, Cursor(date(2024, 3, 6), 0))  # the days are due: sent, it says
    empty = audit(directory, 1, "2024-03-04", "2024-03-05")
    assert empty.code == 1, empty.output  # the verdict: Matomo has visits the topic has not
    table = rows(empty.stdout)
    assert table["2024-03-04"] == ["0", "0", "0", "11", "11", "11", "0", "MISMATCH"]
    assert table["2024-03-05"] == ["0", "0", "0", "20", "20", "20", "0", "MISMATCH"]
    assert read_counts(empty.stdout) == (0, 0, "2024-03-03 23:00")
    assert "day(s) differ: 31 visit(s) missing" in empty.stderr

    store(tmp_path).save(1, Cursor(date(2024, 3, 1), 0))  # back: the run sends every day
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    later = datetime.now(UTC).date() + timedelta(days=2)  # every partition's records are older
    simulator.set_visits(1, later, 0)
    ahead = audit(directory, 1, str(later), str(later))
    assert ahead.code == 0, ahead.output
    assert rows(ahead.stdout)[str(later)] == ["0"] * 7 + ["ok"]
    read, total, _ = read_counts(ahead.stdout)
    assert (read, total) == (0, 100)


def test_audit_starts_an_hour_before_the_first_day_in_the_sites_timezone(
    tmp_path: Path, kept_topic: str, sim_factory: Any
) -> None:
    """Site 2 is in Paris: 2024-03-05 begins at 2024-03-04 23:00 UTC, so the read starts at
    22:00 UTC. Of messages of that day stamped 1 ms before, at and 1 ms after, the last two
    are read (and show as extra: Live has no visit that day)."""
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, kept_topic, MATOMO_ID_SITE="2")
    start = ms(datetime(2024, 3, 4, 22, tzinfo=UTC))
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    headers = [("matomo.idsite", b"2"), ("matomo.day", b"2024-03-05")]
    for idvisit, stamp, partition in ((7, start - 1, 0), (8, start, 0), (9, start + 1, 0),
                                      (10, start - 1, 1)):  # fmt: skip
        producer.produce(kept_topic, key=f"2:{idvisit}", value=b"{}", headers=headers,
                         timestamp=stamp, partition=partition)  # fmt: skip
    assert producer.flush(30) == 0
    result = audit(directory, 2, "2024-03-05", "2024-03-05")
    assert result.code == 1, result.output
    assert rows(result.stdout)["2024-03-05"] == ["2", "2", "0", "0", "0", "0", "2", "MISMATCH"]
    assert read_counts(result.stdout) == (2, 4, "2024-03-04 22:00")
