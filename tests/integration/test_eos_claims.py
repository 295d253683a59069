"""Exactly-once with a few producers per process and site claims in the state topic (issue 23):
real processes, the real broker, the simulator over HTTP.

- a paused instance (SIGSTOP, a zombie) that wakes up after another claimed its site is
  fenced: exit 3, nothing it had in flight visible, every visit once for read_committed;
- sites moved to other shards (shard count changed) by instances running at the same time
  resume where the state topic says, the killed instance's open transaction ended;
- `follow` claims its sites once per process life, and a cycle with nothing new makes no
  transactional round trip (a spy, loaded by sitecustomize, counts the calls each
  producer makes to the real broker);
- a run holds a few producers whatever its number of sites;
- upgrade: the previous version's code (taken from git) writes the state topic and leaves a
  transaction open, this one carries on from its records.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from collections import Counter
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import SimSite
from matomo_kafka.source.sites import shard_of
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import clean_env, run_cli
from support.follow import (
    FollowProcess,
    MovingClock,
    expected_up_to,
    follow_env,
    follow_values,
    utc,
    wait_until,
)
from support.kafka import read_records
from support.parm import base_values, write_parm
from support.runs import assert_fenced, expected_keys, two_sites
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 10
#: main when issue 23 began: one transactional producer per site, no claims.
PREVIOUS_VERSION = "3b36886"

#: The spy: counts the transactional calls of every producer of the process (one line each in
#: SPY_FILE), then calls the real client. Loaded at start-up as sitecustomize.
SPY = textwrap.dedent("""
    import os, threading
    import confluent_kafka

    _real = confluent_kafka.Producer
    _lock = threading.Lock()

    def _say(line):
        with _lock, open(os.environ["SPY_FILE"], "a") as handle:
            handle.write(line + "\\n")

    class Producer(_real):
        def __init__(self, config, *args, **kwargs):
            self._txn = config.get("transactional.id")
            if self._txn:
                _say(f"producer {self._txn}")
            super().__init__(config, *args, **kwargs)

        def init_transactions(self, *args):
            _say(f"init_transactions {self._txn}")
            return super().init_transactions(*args)

        def begin_transaction(self, *args):
            _say(f"begin_transaction {self._txn}")
            return super().begin_transaction(*args)

        def commit_transaction(self, *args):
            _say(f"commit_transaction {self._txn}")
            return super().commit_transaction(*args)

    confluent_kafka.Producer = Producer
""")


def spy_env(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    site_dir = tmp_path / "spy"
    site_dir.mkdir(exist_ok=True)
    (site_dir / "sitecustomize.py").write_text(SPY)
    spy_file = tmp_path / "spy.log"
    path = os.pathsep.join(p for p in (str(site_dir), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "SPY_FILE": str(spy_file)}, spy_file


def spied(spy_file: Path) -> list[str]:
    return spy_file.read_text().splitlines() if spy_file.exists() else []


def counts(topic: str, isolation: str = "read_committed") -> Counter[str]:
    return Counter(key for key, _ in read_records(topic, isolation))


def latest_state(topic: str) -> dict[str, dict[str, Any]]:
    """The latest record of each key of the state topic (checkpoints and claims)."""
    latest: dict[str, dict[str, Any]] = {}
    for key, value in read_records(f"{topic}.state"):
        if value is not None:
            latest[key] = json.loads(value)
    return latest


def store(data: Path) -> CheckpointStore:
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def spawn(parm: Path, run_date: str, *args: str, env: dict[str, str] | None = None) -> Any:
    command = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
               "--run-date", run_date, *args]  # fmt: skip
    return subprocess.Popen(command, env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


LONG_SITE = [SimSite(idsite=1, name="long", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 200, "2024-03-02": 145})]  # fmt: skip
LONG_DAYS = [date(2024, 3, 1), date(2024, 3, 2)]


def test_a_paused_instance_is_fenced_when_it_wakes_up(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """A zombie: instance A is paused (SIGSTOP) mid-run, maybe inside a transaction; B, with
    other checkpoint files, claims the site (fencing A's producers, which ends A's open
    transaction) and finishes it from A's last commit; A, woken up (SIGCONT), is refused at
    its next transaction and exits 3. read_committed sees every visit once."""
    simulator = sim_factory(LONG_SITE, latency_s=0.1)
    parms = {
        name: write_parm(tmp_path / name / "parm", **base_values(
            tmp_path / name, simulator.url, topic, MATOMO_ID_SITE="1", DELIVERY="exactly_once",
            MATOMO_MAX_CONCURRENCY="1"))
        for name in ("a", "b")
    }  # fmt: skip
    first = spawn(parms["a"], "2024-03-03")
    wait_until(lambda: ((store(tmp_path / "a" / "data").load(1) or Cursor(date.min, 0)).offset
                        >= 30) or first.poll() is not None, 60)  # fmt: skip
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGSTOP)
    try:
        second = run_cli("run", "--parm-dir", str(parms["b"]), "--run-date", "2024-03-03")
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert_fenced(first, stderr, second)

    committed = counts(topic)
    assert set(committed) == expected_keys(simulator, (1,), LONG_DAYS)
    assert max(committed.values()) == 1, "read_committed saw a visit twice"
    state = latest_state(topic)
    assert state["1"]["txn"] == state["claim.1"]["txn"]  # B's ids own the site and wrote it
    assert (state["1"]["day"], state["1"]["offset"]) == ("2024-03-03", 0)
    assert store(tmp_path / "b" / "data").load(1) == Cursor(date(2024, 3, 3), 0)


def test_sites_moved_to_new_shards_resume_where_the_state_topic_says(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """One instance reads 4 sites and is killed (SIGKILL, maybe inside a transaction); then
    two instances of 2 shards, each with its own (empty) checkpoint directory, start at the
    same time: both claim their sites (neither fences the other), each site resumes from the
    state topic, and read_committed sees every visit once."""
    sites = [SimSite(idsite=i, name=f"s{i}", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 40 + 7 * i, "2024-03-02": 25})
             for i in range(1, 5)]  # fmt: skip
    assert {shard_of(i, 2) for i in range(1, 5)} == {0, 1}  # both shards have sites
    simulator = sim_factory(sites, latency_s=0.1)
    days = [date(2024, 3, 1), date(2024, 3, 2)]

    def parm(name: str) -> Path:
        values = base_values(tmp_path / name, simulator.url, topic, MATOMO_ID_SITE="1,2,3,4",
                             DELIVERY="exactly_once")  # fmt: skip
        return write_parm(tmp_path / name / "parm", **values)

    whole = spawn(parm("whole"), "2024-03-03")
    whole_store = store(tmp_path / "whole" / "data")
    wait_until(lambda: sum((whole_store.load(i) or Cursor(date.min, 0)).offset
                           for i in range(1, 5)) >= 40 or whole.poll() is not None, 60)  # fmt: skip
    whole.kill()
    whole.communicate()
    assert whole.returncode == -signal.SIGKILL
    stopped = {i: whole_store.load(i) for i in range(1, 5)}

    shards = [spawn(parm(f"shard{i}"), "2024-03-03", "--shard", f"{i}/2") for i in (0, 1)]
    outputs = [process.communicate(timeout=120) for process in shards]
    for process, (_, stderr) in zip(shards, outputs, strict=True):
        assert process.returncode == 0, stderr
    committed = counts(topic)
    assert set(committed) == expected_keys(simulator, (1, 2, 3, 4), days)
    assert max(committed.values()) == 1, "read_committed saw a visit twice"
    state = latest_state(topic)
    owners = {state[f"claim.{i}"]["txn"] for i in range(1, 5)}
    assert len(owners) == 2  # one owner per shard
    for i in range(1, 5):
        shard_store = store(tmp_path / f"shard{shard_of(i, 2)}" / "data")
        assert shard_store.load(i) == Cursor(date(2024, 3, 3), 0)
        if stopped[i] is not None:  # committed before the kill: read from the state topic
            stderr = outputs[shard_of(i, 2)][1]
            assert f"site {i}: checkpoint files written from the state topic" in stderr


def test_a_run_holds_a_few_producers_whatever_its_number_of_sites(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """24 sites, MATOMO_MAX_CONCURRENCY=2: two transactional producers do every transaction
    and the claims' id is the only other one initialised (one producer per site before, each
    with its own init_transactions)."""
    sites = [SimSite(idsite=i, name=f"s{i}", timezone="UTC", default_visits=0,
                     visits={"2024-03-01": 5 + i % 7}) for i in range(1, 25)]  # fmt: skip
    simulator = sim_factory(sites)
    values = base_values(tmp_path, simulator.url, topic, DELIVERY="exactly_once",
                         MATOMO_ID_SITE=",".join(str(i) for i in range(1, 25)),
                         MATOMO_MAX_CONCURRENCY="2")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    env, spy_file = spy_env(tmp_path, clean_env())
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-02", env=env)
    assert result.code == 0, result.output
    assert set(counts(topic)) == expected_keys(simulator, tuple(range(1, 25)), [date(2024, 3, 1)])
    calls = spied(spy_file)
    writers = {line.split()[1] for line in calls if line.startswith("begin_transaction")}
    claims = f"matomo-kafka.{topic}.claims"
    assert writers - {claims} and len(writers - {claims}) <= 2, writers
    inits = [line.split()[1] for line in calls if line.startswith("init_transactions")]
    # The claims' id and the pool's two (a first run: no earlier owner to fence); one
    # producer and one init_transactions per site before.
    assert sorted(inits) == sorted({claims, *writers}), inits


def test_follow_claims_once_and_an_idle_cycle_makes_no_transactional_round_trip(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """follow in exactly-once mode: the first cycle claims the 2 sites and commits their
    visits; the next cycles, whose horizon moved but reached no new visit, call Kafka's
    transactions API not once (before: a producer and init_transactions per site and
    cycle); a cycle with new visits commits them on the same producers, claiming nothing."""
    simulator = sim_factory(two_sites(LIMIT))
    start = utc("2024-03-05 12:00")
    clock = MovingClock(tmp_path / "clock", [simulator], start)
    port = free_port()
    values = base_values(tmp_path, simulator.url, topic, DELIVERY="exactly_once",
                         START_DATE="2024-03-04", **follow_values(port))  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    env, spy_file = spy_env(tmp_path, follow_env(clock))
    sites = {1: "UTC", 2: "Europe/Paris"}
    first = date(2024, 3, 4)

    def quiet_step() -> float:
        """A later clock whose horizon reaches no visit more than the current one."""
        now = expected_up_to(simulator, sites, first, clock.horizon)
        for step in (60, 30, 10, 5, 2, 1):
            later = expected_up_to(simulator, sites, first, clock.horizon + step)
            if set(later) == set(now):
                return clock.now + step
        raise AssertionError("no quiet step")

    follow = FollowProcess(parm, env, tmp_path / "follow.log", port).start()
    try:
        follow.wait_cycle(sites, clock.horizon)
        assert set(counts(topic)) == set(expected_up_to(simulator, sites, first, clock.horizon))
        after_first = spied(spy_file)
        assert any(line.startswith("commit_transaction") for line in after_first)
        for _ in range(3):
            clock.set(quiet_step())
            follow.wait_cycle(sites, clock.horizon)
        idle = spied(spy_file)[len(after_first) :]
        assert idle == [], f"an idle cycle called Kafka's transactions: {idle[:6]}"

        clock.set(utc("2024-03-05 20:00"))  # new visits
        follow.wait_cycle(sites, clock.horizon)
    finally:
        assert follow.stop() == 0, follow.output[-3000:]
    want = expected_up_to(simulator, sites, first, clock.horizon)
    committed = counts(topic)
    assert set(committed) == set(want) and max(committed.values()) == 1
    busy = spied(spy_file)[len(after_first) :]
    assert any(line.startswith("commit_transaction") for line in busy)
    assert not [line for line in busy if not line.startswith(("begin_", "commit_"))], busy
    assert "claimed" in follow.output and follow.output.count("site(s) claimed") == 1


def previous_version(tmp_path: Path) -> Path:
    """The previous version's src/ (git archive of PREVIOUS_VERSION), or skip without git."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_VERSION, "src"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_VERSION} not in this clone (shallow?)")
    target = tmp_path / "previous"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def test_upgrade_carries_on_from_the_previous_versions_state_topic(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """The previous version (one producer per site, no claims) runs, then dies inside a
    transaction of site 1 (visits and an "ahead" checkpoint sent, not committed); the files
    are moved back. This version reads the old records (the state topic wins over the
    files), fences site 1's own id (which aborts the transaction left open), and sends every
    visit once for read_committed."""
    old_src = previous_version(tmp_path)
    old_env = {**clean_env(), "PYTHONPATH": str(old_src)}
    where = "import matomo_kafka; print(matomo_kafka.__file__)"
    probe = subprocess.run([sys.executable, "-c", where], env=old_env, capture_output=True,
                           text=True)  # fmt: skip
    assert probe.stdout.startswith(str(old_src)), probe
    simulator = sim_factory(two_sites(LIMIT))
    values = base_values(tmp_path, simulator.url, topic, DELIVERY="exactly_once")
    parm = write_parm(tmp_path / "parm", **values)
    old = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-04", env=old_env)
    assert old.code == 0, old.output
    old_records = latest_state(topic)
    assert "txn" not in old_records["1"] and "claim.1" not in old_records

    keys = [f"1:{int(v['idVisit'])}" for v in simulator.expected_visits(1, date(2024, 3, 4))]
    script = textwrap.dedent(f"""
        import datetime, os, pathlib, signal
        # The previous version's own module (PREVIOUS_VERSION had it in config/settings.py).
        from matomo_kafka.config.settings import load_settings
        from matomo_kafka.model import Cursor
        from matomo_kafka.sink.producer import TransactionalSink
        from matomo_kafka.state.state_topic import encode, state_key
        settings = load_settings(pathlib.Path({str(parm)!r}), environ={{}})
        sink = TransactionalSink(settings, 1)
        sink.init()
        producer = sink._producer
        producer.begin_transaction()
        for key in {keys[:LIMIT]!r}:
            producer.produce(settings.KAFKA_TOPIC, key=key.encode(), value=b'{{"aborted": 1}}')
        ahead = Cursor(datetime.date(2024, 3, 5), 0)
        producer.produce(settings.state_topic, key=state_key(1),
                         value=encode(settings, 1, ahead, 99, "run"))
        producer.flush(30)
        os.kill(os.getpid(), signal.SIGKILL)
    """)  # fmt: skip
    died = subprocess.run([sys.executable, "-c", script], env=old_env, timeout=60)
    assert died.returncode == -signal.SIGKILL
    data = tmp_path / "data"
    (data / "filterdate2.txt").write_text("2024-03-01\n")  # behind the state topic
    (data / "last_filter_offset2.txt").write_text("0\n")

    new = run_cli("run", "--parm-dir", str(parm), "--run-date", "2024-03-06")
    assert new.code == 0, new.output
    assert "site 2: the state topic" in new.stderr and "the state topic wins" in new.stderr
    committed = counts(topic)
    days = [date(2024, 3, d) for d in range(1, 6)]
    assert set(committed) == expected_keys(simulator, (1, 2), days)
    assert max(committed.values()) == 1, "read_committed saw a visit twice"
    uncommitted = counts(topic, "read_uncommitted")
    assert sorted(k for k, n in uncommitted.items() if n == 2) == sorted(keys[:LIMIT])
    state = latest_state(topic)
    for idsite in ("1", "2"):
        assert (state[idsite]["day"], state[idsite]["offset"]) == ("2024-03-06", 0)
        assert state[idsite]["seq"] > old_records[idsite]["seq"]
        assert state[idsite]["txn"] == state[f"claim.{idsite}"]["txn"]
    assert store(data).load(2) == Cursor(date(2024, 3, 6), 0)


def _outgoing(idsite: int, day: date, first: int, count: int) -> Any:
    """A page of `count` visits of `day` from visit `first` on, and the checkpoint after it."""
    from matomo_kafka.model import Message, Page
    from matomo_kafka.sink.delivery import Outgoing
    from matomo_kafka.sink.producer import page_headers

    messages = [Message(f"{idsite}:{first + i}".encode(), b'{"v": 1}') for i in range(count)]
    cursor = Cursor(day, first + count)
    page = Page(day, first, messages, False, cursor)
    return Outgoing(idsite, page, messages, page_headers(idsite, day.isoformat()), cursor)


@pytest.mark.parametrize("previous_fails", [False, True])
def test_a_sites_next_transaction_is_sent_early_and_committed_in_order(
    tmp_path: Path, topic: str, previous_fails: bool
) -> None:
    """Two deliveries of one site, on two producers: both send their visits while the
    delivery before the first has not ended; neither commits before it has. If it failed,
    both are aborted (nothing visible to read_committed, nothing recorded, no checkpoint);
    else both commit, in order (seq 1 then 2, the second's checkpoint last)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from matomo_kafka.config.load import load_settings
    from matomo_kafka.errors import KafkaDeliveryError
    from matomo_kafka.sink.delivery import ExactlyOnce
    from matomo_kafka.sink.transactions import Transactions

    values = base_values(tmp_path, "http://127.0.0.1:1/", topic, DELIVERY="exactly_once",
                         MATOMO_MAX_CONCURRENCY="2")  # fmt: skip
    settings = load_settings(write_parm(tmp_path / "parm", **values), environ={})
    transactions = Transactions(settings, "run")
    transactions.claim((1,))
    recorded: list[int] = []
    delivery = ExactlyOnce(settings, store(tmp_path / "data"), transactions,
                           lambda out: recorded.append(out.cursor.offset), 8)  # fmt: skip
    day = date(2024, 3, 1)
    assert delivery.start(1) == Cursor(day, 0)
    before: Future[None] = Future()
    pool = ThreadPoolExecutor(2)
    try:
        first = pool.submit(delivery.deliver, [_outgoing(1, day, 0, 10)], before.result)
        second = pool.submit(delivery.deliver, [_outgoing(1, day, 10, 5)], first.result)
        wait_until(lambda: len(read_records(topic, "read_uncommitted")) == 15, 30)
        assert not first.done() and not second.done()  # both wait: nothing committed
        if previous_fails:
            before.set_exception(KafkaDeliveryError("the delivery before failed"))
        else:
            before.set_result(None)
        for future in (first, second):
            if previous_fails:
                with pytest.raises(KafkaDeliveryError, match="the delivery before failed"):
                    future.result(timeout=60)
            else:
                future.result(timeout=60)
    finally:
        if not before.done():  # a failed check: the deliveries must not wait for ever
            before.set_exception(KafkaDeliveryError("the test stopped"))
        pool.shutdown(wait=True)
        delivery.close()
    committed = read_records(topic)
    checkpoints = [json.loads(v or b"") for k, v in read_records(f"{topic}.state") if k == "1"]
    if previous_fails:
        assert committed == [] and recorded == [] and checkpoints == []
    else:
        assert len(committed) == 15 and recorded == [10, 15]
        assert [(c["seq"], c["offset"]) for c in checkpoints] == [(1, 10), (2, 15)]
