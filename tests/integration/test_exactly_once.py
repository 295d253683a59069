"""DELIVERY=exactly_once end to end, against the simulator and the real broker: each page and
the site's checkpoint in one transaction, checkpoints read back from the compacted state topic,
fencing of a second instance, SIGKILLs and Kafka failures mid-transaction. A read_committed
consumer must see every visit exactly once; a read_uncommitted one may see aborted records."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import SimSite
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import clean_env, run_cli
from support.kafka import BOOTSTRAP
from support.kafka import read_records as read_all
from support.parm import base_values, write_parm
from support.runs import assert_fenced, expected_keys, two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIMIT = 10
RUN_DATE = "2024-03-06"  # reads 2024-03-01 .. 2024-03-05


def visit_counts(topic: str, isolation: str = "read_committed") -> Counter[str]:
    return Counter(key for key, _ in read_all(topic, isolation))


def state_of(topic: str) -> dict[str, dict[str, Any]]:
    """The latest committed checkpoint per site key (what a run starts from)."""
    latest: dict[str, dict[str, Any]] = {}
    for key, value in read_all(f"{topic}.state"):
        if value is not None and key.isdigit():
            latest[key] = json.loads(value)
    return latest


def claims_of(topic: str) -> dict[str, dict[str, Any]]:
    """The latest committed claim per site (key `claim.<idsite>`): its owner's ids."""
    latest: dict[str, dict[str, Any]] = {}
    for key, value in read_all(f"{topic}.state"):
        if value is not None and key.startswith("claim."):
            latest[key.removeprefix("claim.")] = json.loads(value)
    return latest


def files(data: Path, idsite: int) -> Cursor | None:
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset")).load(idsite)


def eos_values(tmp_path: Path, url: str, topic: str, **overrides: str) -> dict[str, str]:
    return base_values(tmp_path, url, topic, DELIVERY="exactly_once", **overrides)


def spawn(parm: Path, run_date: str, capture: bool = False) -> subprocess.Popen[str]:
    """`matomo-kafka run` in the background (its output kept when `capture`)."""
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", run_date]  # fmt: skip
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(args, env=clean_env(), stdout=output, stderr=output, text=True)


def test_exactly_once_run_then_rerun(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **eos_values(tmp_path, simulator.url, topic))
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    assert "exactly-once" in result.stderr

    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator)
    assert max(counts.values()) == 1
    assert visit_counts(topic, "read_uncommitted") == counts  # nothing was aborted

    # The state topic: compacted, one record per page, the latest = the day after the last.
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{topic}.state")
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["cleanup.policy"].value == "compact"
    state = state_of(topic)
    assert set(state) == {"1", "2"}
    claims = claims_of(topic)
    assert set(claims) == {"1", "2"}  # one owner: the run's producers
    for idsite in (1, 2):
        record = state[str(idsite)]
        assert (record["site"], record["day"], record["offset"]) == (idsite, "2024-03-06", 0)
        assert record["txn"] == claims[str(idsite)]["txn"]
        assert files(tmp_path / "data", idsite) == Cursor(date(2024, 3, 6), 0)
    records = read_all(f"{topic}.state")
    # One record per transaction: a site's pages that are ready together share one, so at
    # most 9 a site (1 + 1 + 2 + 2 + 3 pages: days of 0, 9, 10, 11, 20 visits), seq 1, 2...
    for idsite in ("1", "2"):
        seqs = sorted(json.loads(v or b"{}")["seq"] for k, v in records if k == idsite)
        assert 1 <= len(seqs) <= 9 and seqs == list(range(1, len(seqs) + 1))

    again = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert again.code == 0, again.output
    assert visit_counts(topic) == counts
    status = run_cli("status", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert status.code == 0 and "2024-03-06" in status.stdout


def test_a_full_local_queue_delays_the_state_record_and_fails_nothing(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """A local queue of 10 records: a page of 10 visits fills it, so the checkpoint record
    of the same transaction waits for room, as the visits do (it raised BufferError: the
    transaction was left open and the run ended as an internal error)."""
    simulator = sim_factory(two_sites(LIMIT))
    values = eos_values(tmp_path, simulator.url, topic,
                        KAFKA_PRODUCER_QUEUE_BUFFERING_MAX_MESSAGES="10")  # fmt: skip
    result = run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)),
                     "--run-date", RUN_DATE)  # fmt: skip
    assert result.code == 0, result.output
    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator) and max(counts.values()) == 1
    assert visit_counts(topic, "read_uncommitted") == counts  # nothing was aborted
    for idsite in (1, 2):
        record = state_of(topic)[str(idsite)]
        assert (record["day"], record["offset"]) == ("2024-03-06", 0)


def test_first_exactly_once_run_imports_the_seed_files(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    data = tmp_path / "data"
    data.mkdir()
    (data / "filterdate1.txt").write_text("2024-03-05")  # 20 visits; 10 already sent
    (data / "last_filter_offset1.txt").write_text("10")
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    assert "imported from the checkpoint files" in result.stderr
    day_visits = simulator.expected_visits(1, date(2024, 3, 5))
    assert sorted(visit_counts(topic)) == sorted(f"1:{int(v['idVisit'])}" for v in day_visits[10:])
    assert state_of(topic)["1"]["day"] == "2024-03-06"


def test_state_topic_wins_over_the_files(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **eos_values(tmp_path, simulator.url, topic))
    first = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-04")
    assert first.code == 0, first.output
    data = tmp_path / "data"
    (data / "filterdate1.txt").write_text("2024-03-01\n")  # files behind the state topic
    (data / "last_filter_offset1.txt").write_text("0\n")
    (data / "filterdate2.txt").write_text("garbage\n")  # unreadable: replaced as well
    second = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert second.code == 0, second.output
    assert "the state topic wins" in second.stderr
    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator) and max(counts.values()) == 1
    assert files(data, 1) == files(data, 2) == Cursor(date(2024, 3, 6), 0)


def test_reset_writes_the_state_topic(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE).code == 0
    reset = run_cli("reset", "--parm-dir", str(parm), "--site", "1", "--date", "2024-03-05",
                    "--yes")  # fmt: skip
    assert reset.code == 0, reset.output
    assert "state topic" in reset.stdout
    assert (state_of(topic)["1"]["day"], state_of(topic)["1"]["offset"]) == ("2024-03-05", 0)
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE).code == 0
    counts = visit_counts(topic)
    resent = expected_keys(simulator, (1,), [date(2024, 3, 5)])
    assert set(counts) == expected_keys(simulator, (1,))
    assert {key for key, n in counts.items() if n == 2} == resent  # re-sent on purpose


SLOW_SITES = [
    SimSite(idsite=1, name="slow UTC", timezone="UTC", default_visits=0,
            visits={"2024-03-01": 95, "2024-03-02": 37, "2024-03-03": 60}),
    SimSite(idsite=2, name="slow Tokyo", timezone="Asia/Tokyo", default_visits=0,
            visits={"2024-03-01": 41, "2024-03-02": 88, "2024-03-03": 19}),
]  # fmt: skip
SLOW_DAYS = [date(2024, 3, d) for d in (1, 2, 3)]
#: One site, 35 pages of 10 at 0.2 s each with no read-ahead: about 7 s to extract.
LONG_SITE = [SimSite(idsite=1, name="long", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 200, "2024-03-02": 145})]  # fmt: skip
LONG_DAYS = [date(2024, 3, 1), date(2024, 3, 2)]
END = "2024-03-03"


def before_end(cursor: Cursor | None) -> bool:
    return cursor is not None and (cursor.day, cursor.offset) < (date(2024, 3, 3), 0)


def progress(data: Path) -> int:
    """Visits checkpointed so far in the files (days counted as 100 visits)."""
    total = 0
    for idsite in (1, 2):
        cursor = files(data, idsite)
        if cursor is not None:
            total += (cursor.day - date(2024, 3, 1)).days * 100 + cursor.offset
    return total


@pytest.mark.slow
def test_sigkill_several_times_then_rerun_sees_each_visit_once(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(SLOW_SITES, latency_s=0.08)
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_MAX_CONCURRENCY="2")
    parm = write_parm(tmp_path / "parm", **values)
    data = tmp_path / "data"
    kills = 0
    for _ in range(4):
        before = progress(data)
        process = spawn(parm, "2024-03-04")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if progress(data) >= before + 25:
                break
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3, "the run finished before it could be killed"

    result = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-04")
    assert result.code == 0, result.output
    committed = visit_counts(topic)
    assert set(committed) == expected_keys(simulator, (1, 2), SLOW_DAYS)
    assert max(committed.values()) == 1, "read_committed saw a visit twice"
    uncommitted = visit_counts(topic, "read_uncommitted")
    assert set(uncommitted) == set(committed)
    assert sum(uncommitted.values()) >= sum(committed.values())
    for idsite in (1, 2):
        assert files(data, idsite) == Cursor(date(2024, 3, 4), 0)
        assert state_of(topic)[str(idsite)]["day"] == "2024-03-04"


def test_death_mid_transaction_is_aborted_by_the_next_run(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """A process that dies (SIGKILL) inside a transaction, after its records reached the
    broker: the next run's claim fences its transactional ids, Kafka aborts the records, and
    read_committed consumers never see them; read_uncommitted ones do."""
    simulator = sim_factory(two_sites(LIMIT))
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-04").code == 0
    sent = len(read_all(topic))
    # What the next page would send: 2024-03-04 of site 1 (11 visits, first page of 10).
    keys = [f"1:{int(v['idVisit'])}" for v in simulator.expected_visits(1, date(2024, 3, 4))]
    script = textwrap.dedent(f"""
        import datetime, os, pathlib, signal
        from matomo_kafka.config.load import load_settings
        from matomo_kafka.model import Cursor
        from matomo_kafka.sink.transactions import Transactions
        from matomo_kafka.state.state_topic import encode, state_key
        settings = load_settings(pathlib.Path({str(parm)!r}), environ={{}})
        transactions = Transactions(settings, "run", producers=1)
        transactions.claim((1,))  # as a run does: the site is this process's
        producer = transactions._pool[0]._producer
        producer.begin_transaction()
        for key in {keys[:LIMIT]!r}:
            producer.produce(settings.KAFKA_TOPIC, key=key.encode(), value=b'{{"aborted": 1}}')
        ahead = Cursor(datetime.date(2024, 3, 5), 0)
        producer.produce(settings.state_topic, key=state_key(1),
                         value=encode(settings, 1, ahead, 99, "run"))
        producer.flush(30)
        os.kill(os.getpid(), signal.SIGKILL)
    """)  # fmt: skip
    died = subprocess.run([sys.executable, "-c", script], env=clean_env(), timeout=60)
    assert died.returncode == -signal.SIGKILL
    # Its records are in the log (a read_committed reader would wait for the transaction).
    assert len(read_all(topic, "read_uncommitted")) == sent + LIMIT

    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    committed = visit_counts(topic)
    assert set(committed) == expected_keys(simulator, (1,))
    assert max(committed.values()) == 1
    uncommitted = visit_counts(topic, "read_uncommitted")
    assert sorted(k for k, n in uncommitted.items() if n == 2) == sorted(keys[:LIMIT])
    assert state_of(topic)["1"]["day"] == "2024-03-06"


def set_max_message_bytes(topic: str, value: str | None) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", value or "", incremental_operation=op)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


@pytest.mark.slow
def test_kafka_failure_mid_transaction_aborts_and_rerun_has_no_duplicates(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """The broker refuses a page mid-run (its batches exceed max.message.bytes): the
    transaction (page and checkpoint) is aborted, the run fails with one clear line, and the
    rerun completes with every visit exactly once for read_committed consumers."""
    simulator = sim_factory(LONG_SITE, latency_s=0.2)
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1",
                        MATOMO_MAX_CONCURRENCY="1", KAFKA_DELIVERY_TIMEOUT_MS="10000")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    data = tmp_path / "data"
    process = spawn(parm, END, capture=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            cursor = files(data, 1)
            if cursor is not None and cursor.offset >= 30:
                break
            time.sleep(0.01)
        # Smaller than any page's batch, larger than the commit/abort markers Kafka must
        # still be able to write (below that, the transaction stays stuck in PrepareAbort).
        set_max_message_bytes(topic, "300")
        _, stderr = process.communicate(timeout=120)
    finally:
        set_max_message_bytes(topic, None)
    assert process.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("matomo-kafka: error: Kafka failed the transaction of site 1"), last
    assert "aborted" in last
    stopped = files(data, 1)
    assert stopped is not None and before_end(stopped)
    state = state_of(topic)["1"]  # the aborted checkpoint is never read back
    assert (state["day"], state["offset"]) == (stopped.day.isoformat(), stopped.offset)

    rerun = run_cli("run", "--parm-dir", str(parm), "--run-date", END)
    assert rerun.code == 0, rerun.output
    committed = visit_counts(topic)
    assert set(committed) == expected_keys(simulator, (1,), LONG_DAYS)
    assert max(committed.values()) == 1


def test_a_second_instance_fences_the_first(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """Two instances on the same site with different checkpoint directories (so the file locks
    do not meet): the second one's transactional producer fences the first, which stops with
    one clear line and exit 3; nothing it had in flight becomes visible, and the second one
    goes on from the last committed checkpoint."""
    simulator = sim_factory(LONG_SITE, latency_s=0.2)
    first_values = eos_values(tmp_path / "a", simulator.url, topic, MATOMO_ID_SITE="1",
                              MATOMO_MAX_CONCURRENCY="1")  # fmt: skip
    second_values = eos_values(tmp_path / "b", simulator.url, topic, MATOMO_ID_SITE="1")
    first_parm = write_parm(tmp_path / "a" / "parm", **first_values)
    second_parm = write_parm(tmp_path / "b" / "parm", **second_values)
    first = spawn(first_parm, END, capture=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        cursor = files(tmp_path / "a" / "data", 1)
        if cursor is not None and cursor.offset >= 30:
            break
        time.sleep(0.01)
    second = run_cli("run", "--parm-dir", str(second_parm), "--run-date", END)
    _, first_stderr = first.communicate(timeout=120)
    assert_fenced(first, first_stderr, second)

    committed = visit_counts(topic)
    assert set(committed) == expected_keys(simulator, (1,), LONG_DAYS)
    assert max(committed.values()) == 1
    assert files(tmp_path / "b" / "data", 1) == Cursor(date(2024, 3, 3), 0)
    assert before_end(files(tmp_path / "a" / "data", 1))


def test_state_topic_creation_refused_names_the_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str
) -> None:
    from matomo_kafka.config.load import load_settings
    from matomo_kafka.errors import KafkaDeliveryError
    from matomo_kafka.state import state_topic as state

    class Refused:
        def result(self, timeout: float | None = None) -> None:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    class Admin:
        def __init__(self, config: dict[str, Any]) -> None:
            self.inner = AdminClient({"bootstrap.servers": BOOTSTRAP})

        def list_topics(self, **kwargs: Any) -> Any:
            return self.inner.list_topics(**kwargs)

        def create_topics(self, topics: list[Any], **kwargs: Any) -> dict[str, Any]:
            return {topic.topic: Refused() for topic in topics}

    monkeypatch.setattr(state, "AdminClient", Admin)
    name = f"test.visits.{uuid.uuid4().hex[:10]}"
    values = eos_values(tmp_path, "http://127.0.0.1:1/", name, KAFKA_STATE_TOPIC=f"{name}.ckpt")
    settings = load_settings(write_parm(tmp_path / "parm", **values), environ={})
    with pytest.raises(KafkaDeliveryError) as caught:
        state.ensure_state_topic(settings)
    message = str(caught.value)
    assert f"{name}.ckpt" in message and "ask the Kafka admins" in message
    assert "cleanup.policy=compact" in message and f"matomo-kafka.{name}." in message


def test_at_least_once_is_unchanged_by_default(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Default DELIVERY: no transactions, no state topic."""
    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic))
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE).code == 0
    metadata = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=30)
    assert f"{topic}.state" not in metadata.topics


def test_sigterm_stops_after_the_committed_page(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(LONG_SITE, latency_s=0.1)
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    process = spawn(parm, END, capture=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        cursor = files(tmp_path / "data", 1)
        if cursor is not None and cursor.offset >= 20:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stopped = files(tmp_path / "data", 1)
    assert stopped is not None and stopped.day == date(2024, 3, 1)
    assert len(read_all(topic)) == stopped.offset  # committed == checkpointed
    assert state_of(topic)["1"]["offset"] == stopped.offset
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", END).code == 0
    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator, (1,), LONG_DAYS)
    assert max(counts.values()) == 1


def test_exactly_once_over_sasl(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """Transactions, the state topic's admin and reader clients all authenticate."""
    from support.kafka import SASL_PORT

    simulator = sim_factory(two_sites(LIMIT))
    sasl = {
        "KAFKA_SERVERS": f"127.0.0.1:{SASL_PORT}",
        "KAFKA_USER": "matomo",
        "KAFKA_PASSWORD": "matomo-local-secret",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    }
    values = eos_values(tmp_path, simulator.url, topic, MATOMO_ID_SITE="1", **sasl)
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    assert "matomo-local-secret" not in result.output
    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator, (1,)) and max(counts.values()) == 1
    assert state_of(topic)["1"]["day"] == "2024-03-06"


def test_tombstone_and_invalid_state_records(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """A tombstone deletes a site's checkpoint (the files are imported again); a record that
    is not a checkpoint stops the site with a clear error instead of a guess."""
    from confluent_kafka import Producer

    simulator = sim_factory(two_sites(LIMIT))
    parm = write_parm(tmp_path / "parm", **eos_values(tmp_path, simulator.url, topic))
    assert run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE).code == 0
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(f"{topic}.state", key=b"1", value=None)
    producer.produce(f"{topic}.state", key=b"2", value=b'{"day": "6 March", "offset": 0}')
    producer.flush(30)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert result.code == 1
    assert "imported from the checkpoint files" in result.stderr  # site 1: the tombstone
    assert "site 2: state topic" in result.stderr and "is invalid" in result.stderr
    assert "reset --site 2" in result.stderr
    counts = visit_counts(topic)
    assert set(counts) == expected_keys(simulator) and max(counts.values()) == 1

    fixed = run_cli("reset", "--parm-dir", str(parm), "--site", "2", "--date", RUN_DATE, "--yes")
    assert fixed.code == 0, fixed.output
    again = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE)
    assert again.code == 0, again.output
    assert visit_counts(topic) == counts
