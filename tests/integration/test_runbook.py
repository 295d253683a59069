"""The runbook, executed (issue 28): every entry of docs/operations.md's runbook (recovering
from a failure, topic not usable, backfill, rotating the salt) and every row of its
troubleshooting table, done exactly as written (the same commands and keys) against the
simulator over HTTP and the real broker, checking what the docs say happens: the message,
the exit code, the checkpoints, what reached Kafka and what a rerun does.

Each test is named after its entry (test_runbook_<entry>); the docs and this file change
together. One simulator serves the whole module (put back as it was after each test), each
test has its own topic and checkpoint files, and the data is tiny (two sites, five days of 0
to 20 visits), so the file takes seconds per entry."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig
from matomo_kafka.state.topic_id import topic_id_path
from support import reliability as rel
from support.certs import Certs
from support.cli import CLI_OUTPUTS, CliResult, clean_env, cli_command, run_cli
from support.deploy import VENV_BIN
from support.deploy import run as deploy_run
from support.kafka import BOOTSTRAP, REPO, create_topic, delete_topic, read_topic, recreate_topic
from support.parm import TOKEN, base_values, write_parm
from support.runs import LIMIT, RUN_DATE, cursor, expected_keys, store, two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIVE = "Live.getLastVisitsDetails"
GATEWAY = ("spsuser", "sps-secret-77")


@pytest.fixture(scope="module")
def shared_simulator() -> Iterator[MatomoSimulator]:
    simulator = MatomoSimulator(SimConfig(token=TOKEN, sites=two_sites(LIMIT))).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def sim(shared_simulator: MatomoSimulator, kafka_bootstrap: str) -> Iterator[MatomoSimulator]:
    """The module's simulator, as two_sites(LIMIT) serves it, put back after each test."""
    yield shared_simulator
    config = shared_simulator.config
    shared_simulator.clear_faults()
    config.basic_auth, config.denied_sites = None, []
    config.page_limit_visits, config.latency_s = 0, 0.0
    shared_simulator.set_visits(1, "2024-03-03", LIMIT)


class Ops:
    """The on-call engineer: a parm/ directory (support.parm's values against the simulator
    and a topic) and the commands the runbook gives, run as the CLI."""

    def __init__(self, tmp_path: Path, simulator: MatomoSimulator, topic: str, **keys: str):
        self.tmp_path, self.simulator, self.topic = tmp_path, simulator, topic
        self.keys = base_values(tmp_path, simulator.url, topic, **keys)
        self.parm = write_parm(tmp_path / "parm", **self.keys)

    def set(self, **keys: str) -> None:
        """Edits parm/ (wa7_conf.ini, wa7.env), as the runbook's fix says."""
        self.keys.update(keys)
        self.parm = write_parm(self.parm, **self.keys)

    def drop(self, *keys: str) -> None:
        for key in keys:
            self.keys.pop(key, None)
        self.parm = write_parm(self.parm, **self.keys)

    def __call__(self, command: str, *args: str) -> CliResult:
        return run_cli(command, "--parm-dir", str(self.parm), *args)

    def run(self, *args: str) -> CliResult:
        return self("run", "--run-date", RUN_DATE, *args)

    def sent(self) -> Counter[str]:
        return Counter(record.key for record in read_topic(self.topic))

    def everything(self, sites: tuple[int, ...] = (1, 2)) -> Counter[str]:
        """Each visit of the sites' five days once."""
        return Counter(expected_keys(self.simulator, sites))


def flat(table: str) -> str:
    """A rich table's text as one line: its cells' wrapped lines joined back."""
    return " ".join(table.replace("│", " ").split())


def error_line(result: CliResult) -> str:
    """The one `matomo-kafka: error:` line a failure ends with."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("matomo-kafka: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


DONE = Cursor(date(2024, 3, 6), 0)  # every day up to RUN_DATE's day before sent


# -- troubleshooting: one test per row of the table -----------------------------------------


def test_runbook_gateway_asks_for_credentials(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    sim.config.basic_auth = GATEWAY
    ops = Ops(tmp_path, sim, topic)
    result = ops.run()
    assert result.code == 1
    assert ("HTTP 401: the gateway asks for credentials and MATOMO_SPS_USER/MATOMO_SPS_MDP are "
            "not set") in error_line(result)  # fmt: skip
    assert ops.sent() == Counter() and cursor(tmp_path, 1) is None, "run stops: nothing done"
    ops.set(MATOMO_SPS_USER=GATEWAY[0], MATOMO_SPS_MDP=GATEWAY[1])  # the fix: wa7.env
    assert ops.run().code == 0
    assert ops.sent() == ops.everything()


def test_runbook_gateway_refuses_the_credentials(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    sim.config.basic_auth = GATEWAY
    ops = Ops(tmp_path, sim, topic, MATOMO_SPS_USER=GATEWAY[0], MATOMO_SPS_MDP="not-the-password")
    result = ops.run()
    assert result.code == 1
    assert "HTTP 401 from the gateway: check MATOMO_SPS_USER/MATOMO_SPS_MDP" in error_line(result)
    assert ops.sent() == Counter() and cursor(tmp_path, 1) is None
    ops.set(MATOMO_SPS_MDP=GATEWAY[1])
    assert ops.run().code == 0
    assert ops.sent() == ops.everything()


def test_runbook_token_refused_by_matomo(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_API_TOKEN="expired-token-0000")
    result = ops.run()
    assert result.code == 1
    assert ("token refused by Matomo: MATOMO_API_TOKEN is invalid, expired, or without view "
            "access to any site (Matomo: ") in error_line(result)  # fmt: skip
    assert ops.sent() == Counter() and cursor(tmp_path, 1) is None
    ops.set(MATOMO_API_TOKEN=TOKEN)  # copied again from Matomo
    assert ops.run().code == 0
    assert ops.sent() == ops.everything()


def test_runbook_token_cannot_view_site(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    sim.config.denied_sites = [2]
    ops = Ops(tmp_path, sim, topic)
    result = ops.run()
    assert result.code == 1
    assert ("matomo-kafka: site 2: MATOMO_API_TOKEN cannot view site 2: give the token view "
            "access to it in Matomo, or remove site 2 from MATOMO_ID_SITE") in \
        result.stderr  # fmt: skip
    assert error_line(result) == "matomo-kafka: error: 1 of 2 site(s) failed"
    assert ops.sent() == ops.everything((1,)), "that site alone fails: the others are delivered"
    assert cursor(tmp_path, 1) == DONE and cursor(tmp_path, 2) is None
    # A site named by --sites is said to be there, not in MATOMO_ID_SITE (issue 28).
    unknown = ops.run("--sites", "1,99")
    assert unknown.code == 1
    assert "remove site 99 from --sites" in unknown.stderr, unknown.output
    assert not (tmp_path / "data" / "filterdate99.lock").exists(), "no lock file left behind"
    assert (tmp_path / "data" / "filterdate1.lock").exists()
    check = ops("check", "--sites", "99")
    assert check.code == 1 and "remove site 99 from --sites" in flat(check.stdout), check.output
    # The fix: take 2 out of MATOMO_ID_SITE (or give the token access).
    ops.set(MATOMO_ID_SITE="1")
    assert ops.run().code == 0
    assert ops.sent() == ops.everything((1,))


def test_runbook_matomo_tls_certificate_verify_failed(
    tmp_path: Path, sim_factory: Any, certs: Certs, topic: str
) -> None:
    https = sim_factory(two_sites(LIMIT), tls=certs.server)
    ops = Ops(tmp_path, https, topic)  # MATOMO_CA_BUNDLE not set: the gateway's CA unknown
    result = ops.run()
    assert result.code == 1
    assert "Matomo TLS: certificate verify failed (" in error_line(result)
    assert "MATOMO_CA_BUNDLE" in error_line(result)
    assert ops.sent() == Counter()
    ops.set(MATOMO_CA_BUNDLE=str(certs.ca))  # configuration.md: the gateway's CA
    assert ops.run().code == 0
    assert ops.sent() == ops.everything()


def test_runbook_page_too_heavy(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    sim.config.page_limit_visits = 5  # PHP's memory_limit: a page of more visits fails
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1", MATOMO_MAX_RETRIES="1")
    result = ops.run()
    assert result.code == 1
    assert "matomo-kafka: site 1:" in result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("matomo-kafka: site 1:"))
    assert "even a page of" in line and "fails on 2024-03-02 after 0 visits of the day" in line
    assert line.endswith(
        "raise Matomo's PHP memory_limit or max_execution_time (or MATOMO_TIMEOUT)"
    )
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 2), 0), "that site stops there"
    sim.config.page_limit_visits = 0  # memory_limit raised
    assert ops.run().code == 0
    assert ops.sent() == ops.everything((1,))


@pytest.mark.slow  # a broker of its own, started twice (~30 s)
def test_runbook_kafka_failed_to_deliver(
    tmp_path: Path, sim: MatomoSimulator, kafka_bootstrap: str
) -> None:
    """The cluster stops acknowledging mid-run (a broker of the test's own, killed: the shared
    one is never touched), then comes back."""
    broker = rel.OwnBroker(tmp_path)
    try:
        broker.start()
        topic = create_topic(broker.bootstrap, prefix="test.runbook")
        sim.config.latency_s = 0.2  # the broker dies while pages are still being read
        ops = Ops(tmp_path, sim, topic, KAFKA_SERVERS=broker.bootstrap,
                  KAFKA_DELIVERY_TIMEOUT_MS="2000", MATOMO_MAX_CONCURRENCY="1")  # fmt: skip
        process = subprocess.Popen(cli_command("run", "--parm-dir", str(ops.parm), "--run-date",
                                               RUN_DATE), env=clean_env(), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        checkpoint = tmp_path / "data" / "filterdate1.txt"
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        broker.stop(kill=True)
        stdout, stderr = process.communicate(timeout=120)
        CLI_OUTPUTS.append(stdout + stderr)
        assert process.returncode == 1, stderr
        line = error_line(CliResult(1, stdout, stderr))
        assert "Kafka failed to deliver" in line and "Message timed out" in line, line
        at_failure = {idsite: cursor(tmp_path, idsite) for idsite in (1, 2)}
        broker.start()  # the cluster is back
        rerun = ops.run()
        assert rerun.code == 0, rerun.output
        sent = Counter(r.key for r in read_topic(topic, bootstrap=broker.bootstrap))
        assert set(sent) == set(ops.everything()), "rerun resumes: nothing lost"
        assert sum(sent.values()) - len(sent) <= 2 * LIMIT
        assert all(c is None or c.day < DONE.day for c in at_failure.values()), at_failure
    finally:
        broker.close()


def test_runbook_another_run_holds_the_lock(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic)
    with store(tmp_path).lock([2]):  # another run on site 2
        result = ops.run()
        assert result.code == 3
        line = error_line(result)
        assert "another matomo-kafka run (pid " in line and "filterdate2.lock" in line
    assert ops.sent() == Counter() and cursor(tmp_path, 1) is None, "nothing was done"
    assert ops.run().code == 0  # it ended: a dead process holds no lock either
    assert ops.sent() == ops.everything()


def test_runbook_checkpoint_offset_more_than_the_day_holds(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1")
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-04\n")  # a day of 11 visits
    (data / "last_filter_offset1.txt").write_text("251\n")  # carried over from the seed
    result = ops.run()
    assert result.code == 1
    line = error_line(result)
    assert f"checkpoint {data / 'last_filter_offset1.txt'} holds offset 251 for 2024-03-04, " \
        "more visits than Matomo lists for that day" in line  # fmt: skip
    assert ops.sent() == Counter() and cursor(tmp_path, 1) == Cursor(date(2024, 3, 4), 251)
    fixed = ops("reset", "--site", "1", "--date", "2024-03-04", "--yes")  # or write 0 in it
    assert fixed.code == 0, fixed.output
    assert ops.run().code == 0
    assert ops.sent() == Counter(expected_keys(sim, (1,), [date(2024, 3, 4), date(2024, 3, 5)]))


# -- topic not usable ------------------------------------------------------------------------


def test_runbook_topic_not_usable_missing(tmp_path: Path, sim: MatomoSimulator) -> None:
    name = f"test.runbook.missing.{tmp_path.name[-8:].replace('_', '-')}"
    ops = Ops(tmp_path, sim, name)
    result = ops.run()
    assert result.code == 1
    assert f"Kafka topic '{name}' is not usable: Broker: Unknown topic or partition" in \
        error_line(result)  # fmt: skip
    assert cursor(tmp_path, 1) is None
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(60)
    try:
        time.sleep(0.5)  # created is not yet visible to every client
        assert ops.run().code == 0
        assert ops.sent() == ops.everything()
    finally:
        delete_topic(BOOTSTRAP, name)


def test_runbook_topic_not_usable_created_again(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic)
    assert ops.run().code == 0
    recorded = topic_id_path(str(tmp_path / "data" / "filterdate"), topic).read_text().strip()
    recreate_topic(BOOTSTRAP, topic)
    result = ops.run()
    assert result.code == 2
    assert f"Kafka topic '{topic}' is not the topic the checkpoints were written against: " \
        "its id is " in error_line(result)  # fmt: skip
    assert ops.sent() == Counter() and cursor(tmp_path, 1) == DONE
    check = ops("check")
    assert check.code == 1 and "not the topic the checkpoints were written against" in \
        flat(check.stdout)  # fmt: skip
    # Re-send the history: reset each site to START_DATE, then run with --accept-new-topic.
    for idsite in ("1", "2"):
        assert ops("reset", "--site", idsite, "--date", "2024-03-01", "--yes").code == 0
    assert ops.run().code == 2, "a reset alone does not accept the new topic"
    accepted = ops.run("--accept-new-topic")
    assert accepted.code == 0, accepted.output
    assert ops.sent() == ops.everything()
    now = topic_id_path(str(tmp_path / "data" / "filterdate"), topic).read_text().strip()
    assert now != recorded
    assert ops.run().code == 0


# -- recovering from a failure ---------------------------------------------------------------


def test_runbook_exit_1_rerun_resumes(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_MAX_RETRIES="1")
    sim.add_fault(Fault(kind="status", method=LIVE, status=500, times=-1, idsite=1,
                        date="2024-03-04", offset=10))  # fmt: skip  # Matomo down for it
    result = ops.run()
    assert result.code == 1 and "site 1" in result.stderr
    stopped = cursor(tmp_path, 1)
    assert stopped is not None and (stopped.day, stopped.offset) == (date(2024, 3, 4), 10)
    sim.clear_faults()  # the cause fixed
    assert ops.run().code == 0
    sent = ops.sent()
    assert set(sent) == set(ops.everything())
    assert sum(sent.values()) - len(sent) <= 2 * LIMIT, "at most MATOMO_MAX_CONCURRENCY pages"


def test_runbook_exit_2_fix_parm(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, START_DATE="2024-13-01")
    result = ops.run()
    assert result.code == 2
    assert "invalid configuration (1 problem(s))" in error_line(result)
    assert "START_DATE" in result.stderr
    assert ops.sent() == Counter() and not (tmp_path / "data").exists(), "nothing was done"
    no_yes = ops("reset", "--site", "1", "--date", "2024-03-02")  # the other exit 2: no --yes
    assert no_yes.code == 2
    ops.set(START_DATE="2024-03-01")
    assert ops.run().code == 0
    assert ops.sent() == ops.everything()


def test_runbook_exit_3_another_run_on_the_same_sites(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic)
    lock = store(tmp_path).lock([1])
    with lock:
        result = ops.run()
        assert result.code == 3
        holder = store(tmp_path).lock_path(1).read_text().strip()
        assert f"(pid {holder})" in error_line(result), "its pid is in the .lock file"
    assert ops.sent() == Counter()
    assert ops.run().code == 0


def test_runbook_exit_130_interrupted_rerun_resumes(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    sim.config.latency_s = 0.1  # slow enough to be interrupted mid-way
    ops = Ops(tmp_path, sim, topic, MATOMO_MAX_CONCURRENCY="1")
    process = subprocess.Popen(cli_command("run", "--parm-dir", str(ops.parm), "--run-date",
                                           RUN_DATE), env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    checkpoint = tmp_path / "data" / "last_filter_offset1.txt"
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    CLI_OUTPUTS.append(stdout + stderr)
    assert process.returncode == 130, stderr
    assert cursor(tmp_path, 2) is None or cursor(tmp_path, 2) != DONE
    sim.config.latency_s = 0.0
    assert ops.run().code == 0  # rerun resumes
    sent = ops.sent()
    assert set(sent) == set(ops.everything())
    assert sum(sent.values()) - len(sent) <= LIMIT, "at most the page in flight re-sent"


def test_runbook_checkpoint_reported_unreadable(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1")
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-0x\n")
    result = ops.run()
    assert result.code == 1
    assert f"checkpoint {data / 'filterdate1.txt'} does not hold a YYYY-MM-DD day" \
        in error_line(result)  # fmt: skip
    assert ops.sent() == Counter()
    status = ops("status")
    assert status.code == 1 and "unreadable" in status.stdout
    assert ops("reset", "--site", "1", "--date", "2024-03-03", "--yes").code == 0
    assert ops.run().code == 0
    days = [date(2024, 3, d) for d in (3, 4, 5)]
    assert ops.sent() == Counter(expected_keys(sim, (1,), days))


def test_runbook_date_file_later_than_the_runs_days(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1")
    store(tmp_path).save(1, Cursor(date(2024, 3, 10), 0))  # a hand edit
    result = ops.run()
    assert result.code == 0, result.output
    assert "site 1: its checkpoint is at 2024-03-10, after the day after the last closed day " \
        "(2024-03-05): nothing to read" in result.stderr  # fmt: skip
    assert ops.sent() == Counter()
    assert ops("reset", "--site", "1", "--date", "2024-03-04", "--yes").code == 0
    assert ops.run().code == 0
    assert ops.sent() == Counter(expected_keys(sim, (1,), [date(2024, 3, 4), date(2024, 3, 5)]))


def test_runbook_visits_recorded_late(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1", MATOMO_RESCAN_DAYS="3")
    assert ops.run().code == 0
    sim.set_visits(1, "2024-03-03", LIMIT + 4)  # a log import adds 4 to a day already sent
    within = ops.run()  # 2024-03-03 is within the 3 re-scanned days: re-sent by itself
    assert within.code == 0, within.output
    assert set(ops.sent()) == set(ops.everything((1,)))
    # Older than the window: audit shows them missing; reset to that day and run again.
    ops.set(MATOMO_RESCAN_DAYS="0")
    sim.set_visits(1, "2024-03-03", LIMIT + 6)
    audit = ops("audit", "--site", "1", "--from", "2024-03-01", "--to", "2024-03-05")
    assert audit.code == 1 and "2 visit(s) missing from the topic" in error_line(audit)
    assert ops("reset", "--site", "1", "--date", "2024-03-03", "--yes").code == 0
    assert ops.run().code == 0
    again = ops("audit", "--site", "1", "--from", "2024-03-01", "--to", "2024-03-05")
    assert again.code == 0, again.output


# -- backfill of a new site ------------------------------------------------------------------


def test_runbook_backfill_of_a_new_site(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1")  # 2 kept out of the daily run
    start = ops("reset", "--site", "2", "--date", "2024-03-03", "--yes")
    assert start.code == 0, start.output
    assert "note: site 2 is not in MATOMO_ID_SITE (1): only a run with --sites 2" in start.stdout
    before = ops("status", "--sites", "2")
    assert before.code == 0 and "2024-03-03" in before.stdout, before.output
    with store(tmp_path).lock([2]):  # the backfill runs: the daily run goes on
        assert ops.run().code == 0
    backfill = ops.run("--sites", "2")
    assert backfill.code == 0, backfill.output
    status = ops("status", "--sites", "2", "--run-date", RUN_DATE)
    row = next(line for line in status.stdout.splitlines() if line.strip("│ ").startswith("2 "))
    assert "2024-03-06" in row and " 0 " in row, status.stdout  # behind 0: done
    ops.set(MATOMO_ID_SITE="1,2")  # then add it to the daily run
    assert ops.run().code == 0
    days = [date(2024, 3, d) for d in (3, 4, 5)]
    expected = ops.everything((1,)) + Counter(expected_keys(sim, (2,), days))
    assert ops.sent() == expected, "each visit once: the daily run went on from its checkpoint"


# -- rotating the salt -----------------------------------------------------------------------


def test_runbook_rotating_the_salt(tmp_path: Path, sim: MatomoSimulator, topic: str) -> None:
    ops = Ops(tmp_path, sim, topic, MATOMO_ID_SITE="1")
    assert ops.run().code == 0
    before = {r.key: json.loads(r.value) for r in read_topic(topic)}
    ops.set(SALAGE="a-new-salt-for-2024-b7e1")
    assert ops("reset", "--site", "1", "--date", "2024-03-01", "--yes").code == 0  # START_DATE
    assert ops.run().code == 0
    records = read_topic(topic)
    assert Counter(r.key for r in records) == ops.everything((1,)) + ops.everything((1,))
    latest: dict[str, Any] = {}
    for record in records:
        latest[record.key] = json.loads(record.value)
    changed = [key for key in before if latest[key]["visitorId"] != before[key]["visitorId"]]
    assert changed == list(before), "every visit re-sent under the new salt's pseudonyms"


def test_runbook_created_topic_is_recorded_once(tmp_path: Path, sim: MatomoSimulator) -> None:
    """First run: the topic's id is recorded (check says the next run records it)."""
    topic = create_topic(BOOTSTRAP, prefix="test.runbook")
    try:
        ops = Ops(tmp_path, sim, topic)
        check = ops("check")
        assert check.code == 0 and "recorded by the next run" in flat(check.stdout), check.output
        assert ops.run().code == 0
        assert topic_id_path(str(tmp_path / "data" / "filterdate"), topic).exists()
    finally:
        delete_topic(BOOTSTRAP, topic)


def test_runbook_exit_4_launcher_cannot_create_the_venv(
    tmp_path: Path, sim: MatomoSimulator, topic: str
) -> None:
    """The Control-M launcher: a virtual environment it cannot create is exit 4 (check
    Python, the network, the rights on the host); fixed, the job runs."""
    ops = Ops(tmp_path, sim, topic)
    launcher = REPO / "shell" / "DDWA7AJA0_KFK.KSH"
    broken = clean_env(PARM_DIR=str(ops.parm), MATOMO_KAFKA_VENV="/proc/no-venv-here")
    result = deploy_run(["sh", str(launcher), "20240306"], broken)  # output kept for the scan
    assert result.returncode == 4, result.stdout + result.stderr
    assert "cannot create the virtual environment (exit 4)" in result.stdout + result.stderr
    assert ops.sent() == Counter() and cursor(tmp_path, 1) is None
    fixed = clean_env(PARM_DIR=str(ops.parm), MATOMO_KAFKA_VENV=str(VENV_BIN.parent))
    rerun = deploy_run(["sh", str(launcher), "20240306"], fixed)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert ops.sent() == ops.everything()
