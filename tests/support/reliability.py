"""The reliability proofs of matomo-kafka (issue #3): the harness that tests/proofs/ runs with
small counts and bench/reliability.py runs long, with its figures table.

Every proof drives the real `matomo-kafka` command (a subprocess) against the bundled Matomo
simulator (in this process) and a real Kafka broker, all on 127.0.0.1:

  kills    a run over several sites (different timezones) and days is SIGKILLed at random
           points (seeded) and rerun, round after round, then run to completion. After every
           kill each site's checkpoint is readable and never ahead of the topic, and the visits
           the kill newly left in the topic beyond the checkpoint (what the next run re-sends)
           are at most one page; at the end no visit is missing and each site's duplicates are
           at most one page per kill. One documented exception is measured, not hidden: a kill
           between the two checkpoint writes of a day change (see `day_change_kill_proof`).
  faults   Matomo faults from the simulator (5xx, 429 + Retry-After, timeouts, truncated
           bodies, dropped connections, error envelopes, a site vanishing mid-run, retries
           exhausted) spread over pages (seeded), rerun until success: nothing lost, and no
           duplicate at all (a Matomo failure never leaves a page unacknowledged).
  broker   a broker of its own (scripts/kafka-local.sh, own KAFKA_LOCAL_DIR and free ports;
           the shared broker is never stopped) is stopped (SIGTERM) or killed (SIGKILL)
           mid-run: the run fails within KAFKA_DELIVERY_TIMEOUT_MS + 30 s with one
           `matomo-kafka: error:` line, and after a restart the rerun loses nothing; restarted
           within the delivery timeout, the run completes by itself.
  inputs   bad configs, checkpoint files and Matomo answers (a tiny HTTP server on 127.0.0.1
           answers what the simulator cannot): one clear error line, a non-zero exit and
           checkpoints byte-identical; odd but valid answers pass through.
  secrets  every CLI output and every Kafka message of all of the above: no secret (token,
           salt, passwords) and no raw value of a pseudonymised column.

tests/proofs/test_kills.py, test_fault_spread.py, test_broker_loss.py, test_bad_inputs.py and
test_secrets.py run these proofs with smaller counts. Each proof needs the shared broker (the
caller starts it); a failed invariant raises ProofFailed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from matomo_kafka.model import Cursor
from matomo_kafka.ops.redaction import Redactor
from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig, SimSite
from matomo_kafka.simulator.config import MSG_UNKNOWN_SITE
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import clean_env, cli_command
from support.kafka import (
    BOOTSTRAP,
    KAFKA_PORT,
    KAFKA_SCRIPT,
    LOCALHOST,
    REPO,
    SASL_PASSWORD,
    SASL_PORT,
    SASL_USER,
    create_topic,
    delete_topic,
)
from support.parm import write_parm as write_parm_files
from support.secrets import shows

SHARED_BOOTSTRAP = BOOTSTRAP

TOKEN = "rel-token-93c1f0a4d7e2"
SALT = "rel-salt-5b8e27c4f1"
GATEWAY_USER = "rel-gateway"
GATEWAY_PASSWORD = "rel-gw-pw-c3d9a1"
#: Every secret handed to the tool by these proofs; none may appear in an output or a message.
SECRETS = (TOKEN, SALT, GATEWAY_PASSWORD, SASL_PASSWORD)
COLUMNS = "visitIp,visitorId,userId,actionDetails.url,actionDetails.subtitle"
RAW_COLUMNS = ("visitIp", "visitorId", "userId")
LIMIT = 10
#: The kill and fault proofs' sites end visits in groups of this many per second, served in a
#: new order by every request: keyset paging must repair page boundaries inside such groups.
TIE_GROUP = 3
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC+5.5", "Pacific/Auckland")
LIVE = "Live.getLastVisitsDetails"
ERROR_PREFIX = "matomo-kafka: error:"
Say = Callable[[str], None]


class ProofFailed(AssertionError):
    """An invariant did not hold; the message says which, with the seed to replay it."""


# -- processes, parm files, checkpoints ----------------------------------------------------


def write_parm(directory: Path, values: dict[str, str]) -> Path:
    """parm/ in the seed's layout: the conf keys in wa7_conf.ini, the others in wa7.env."""
    return write_parm_files(directory, **values)


def parm_values(
    data: Path, url: str, topic: str, bootstrap: str, **overrides: str
) -> dict[str, str]:
    """A complete configuration: gateway basic auth, pseudonymised columns, fast retries."""
    values = {
        "START_DATE": "2024-03-01",
        "MATOMO_FILTER_LIMIT": str(LIMIT),
        "FILE_PATH_LAST_OFFSET": str(data / "last_filter_offset"),
        "FILE_PATH_FILTERDATE": str(data / "filterdate"),
        "COLONNE_ANNOMYSE": COLUMNS,
        "SALAGE": SALT,
        "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": "1",
        "MATOMO_API_URL": url,
        "MATOMO_API_TOKEN": TOKEN,
        "MATOMO_SPS_USER": GATEWAY_USER,
        "MATOMO_SPS_MDP": GATEWAY_PASSWORD,
        "KAFKA_SERVERS": bootstrap,
        "CLUSTERID": "REL01",
        "MATOMO_RETRY_BACKOFF": "0.05",
        "MATOMO_RETRY_MAX_WAIT": "2",
        "MATOMO_TIMEOUT": "5",
        "KAFKA_CONNECT_TIMEOUT": "5",
    }
    values.update(overrides)
    return values


#: MATOMO_MAX_CONCURRENCY when a proof does not set it.
DEFAULT_CONCURRENCY = 2


def store_for(data: Path) -> CheckpointStore:
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset"))


def simulator(
    sites: list[SimSite],
    latency: float = 0.0,
    seed: int = 1,
    faults: list[Fault] | None = None,
    unstable_ties: bool = False,
) -> MatomoSimulator:
    """A started simulator on 127.0.0.1 that wants the proofs' token and gateway password.
    `unstable_ties`: every request orders visits of the same second anew (as MySQL may)."""
    gateway = (GATEWAY_USER, GATEWAY_PASSWORD)
    config = SimConfig(token=TOKEN, sites=sites, latency_s=latency, seed=seed,
                       basic_auth=gateway, faults=faults or [],
                       unstable_ties=unstable_ties)  # fmt: skip
    return MatomoSimulator(config).start(LOCALHOST, 0)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def last_line(self) -> str:
        lines = self.lines
        return lines[-1] if lines else ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, count: int = 15) -> str:
        return "\n".join(self.output.splitlines()[-count:])


def run_cli(
    collector: Collector,
    *args: str,
    timeout: float = 180,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> CliResult:
    """Runs the command to its end (killed after `timeout`: code -9); keeps its output."""
    started = time.monotonic()
    process = subprocess.Popen([*prefix, *cli_command(*args)], env=env or clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace")  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += f"\n[harness: killed after {timeout:.0f}s without exiting]"
    result = CliResult(process.returncode, out, err, time.monotonic() - started)
    collector.add_output(result.output)
    return result


def spawn_cli(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Starts the command with its output in a file (never a pipe that could fill up)."""
    with log.open("wb") as handle:
        return subprocess.Popen(cli_command(*args), env=clean_env(), stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip


def snapshot(root: Path) -> dict[str, str | bytes]:
    """Every file under `root` (except parm/ and lock files) with its bytes, directories and
    symlinks marked, so two snapshots are equal only if no checkpoint was touched."""
    found: dict[str, str | bytes] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*") if not root.is_symlink() else []):
        relative = path.relative_to(root)
        if relative.parts[0] == "parm" or path.name.endswith(".lock"):
            continue
        if path.is_symlink():
            found[str(relative)] = f"symlink -> {os.readlink(path)}"
        elif path.is_dir():
            if len(relative.parts) > 1:  # a directory where a checkpoint file should be
                found[str(relative)] = "<dir>"
        else:
            try:
                found[str(relative)] = path.read_bytes()
            except OSError:
                found[str(relative)] = "<unreadable>"
    return found


# -- Kafka -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _headers(raw: object) -> tuple[tuple[str, bytes], ...]:
    """librdkafka gives a list of (name, value) pairs."""
    pairs = raw if isinstance(raw, list) else []
    return tuple((str(name), _bytes(value)) for name, value in pairs)


class TopicReader:
    """Reads a topic incrementally from its beginning: `catch_up()` returns what is new up to
    the current end offsets; `counts` holds how many times each key was seen."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.counts: Counter[str] = Counter()
        self.total = 0
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"reliability-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # Watermark queries wait behind a pending long-poll fetch: keep fetches short.
            "fetch.wait.max.ms": 10,
        })  # fmt: skip
        metadata = self._consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise ProofFailed(f"reading {topic}: no partitions in its metadata")
        self.partitions = sorted(metadata.partitions)
        self._next = dict.fromkeys(self.partitions, 0)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                               for p in self.partitions])  # fmt: skip

    def catch_up(self, timeout: float = 60.0) -> list[Record]:
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30,
                                                    cached=False)[1]
            for p in self.partitions
        }  # fmt: skip
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while any(self._next[p] < ends[p] for p in self.partitions):
            if time.monotonic() > deadline:
                raise ProofFailed(f"could not read {self.topic} to its end within {timeout}s")
            message = self._consumer.poll(0.2)
            if message is None:
                # Transactional topics end with commit markers, never delivered: the
                # consumer's position moves past them.
                positions = [TopicPartition(self.topic, p) for p in self.partitions]
                for tp in self._consumer.position(positions):
                    if tp.offset is not None and tp.offset > self._next[tp.partition]:
                        self._next[tp.partition] = tp.offset
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ProofFailed(f"reading {self.topic}: {error.str()}")
            self._next[message.partition() or 0] = (message.offset() or 0) + 1
            record = Record(
                key=_bytes(message.key()).decode(errors="replace"),
                value=_bytes(message.value()),
                headers=_headers(message.headers()),
            )
            records.append(record)
            self.counts[record.key] += 1
        self.total += len(records)
        return records

    def settle(self, quiet: float = 0.2, timeout: float = 15.0) -> list[Record]:
        """After a kill: a produce request the dead process had already written may still
        land; read until the end offsets stop moving for `quiet` seconds."""
        records = self.catch_up()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(quiet)
            more = self.catch_up()
            if not more:
                break
            records += more
        return records

    def close(self) -> None:
        self._consumer.close()


# -- the secrets scan --------------------------------------------------------------------

_TOKEN_SPLIT = re.compile(r"[\s\"',;=()\[\]{}<>|\\/]+")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Collector:
    """Every CLI output and Kafka message of the proofs, and the raw values of the
    pseudonymised columns of every visit they serve, for `scan()`."""

    outputs: list[str] = field(default_factory=list)
    raw_values: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=lambda: set(SECRETS))
    messages: int = 0
    message_problems: list[str] = field(default_factory=list)

    def add_output(self, text: str) -> None:
        self.outputs.append(text)

    def add_visits(self, visits: Iterable[dict[str, Any]]) -> None:
        for visit in visits:
            for column in RAW_COLUMNS:
                value = visit.get(column)
                if value is not None:
                    self.raw_values.add(str(value))

    def add_messages(self, records: Iterable[Record]) -> None:
        """Checks each message at once (the raw values of its visit are known by then)."""
        for record in records:
            self.messages += 1
            problem = self._message_problem(record)
            if problem and len(self.message_problems) < 20:
                self.message_problems.append(f"message {record.key}: {problem}")

    def _message_problem(self, record: Record) -> str | None:
        text = record.value.decode(errors="replace")
        everything = " ".join([record.key, text, *(v.decode(errors="replace")
                                                   for _, v in record.headers)])  # fmt: skip
        leaked = _leaks(everything, self.raw_values, self.secrets)
        if leaked:
            return leaked
        try:
            visit = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return "value is not JSON"
        if not isinstance(visit, dict):
            return "value is not a JSON object"
        for column in RAW_COLUMNS:
            value = visit.get(column)
            if value is not None and not (isinstance(value, str) and _HEX64.match(value)):
                return f"{column} is not a pseudonym: {str(value)[:20]!r}"
        for action in visit.get("actionDetails") or []:
            for key in ("url", "subtitle"):
                value = action.get(key) if isinstance(action, dict) else None
                if value is not None and not (isinstance(value, str) and _HEX64.match(value)):
                    return f"actionDetails.{key} is not a pseudonym"
        return None

    def scan(self) -> ScanFigures:
        problems = list(self.message_problems)
        lines = 0
        for output in self.outputs:
            lines += output.count("\n") + 1
            leaked = _leaks(output, self.raw_values, self.secrets, pieces=True)
            if leaked and len(problems) < 40:
                line = next(
                    (ln for ln in output.splitlines()
                     if _leaks(ln, self.raw_values, self.secrets, pieces=True)),
                    "",
                )  # fmt: skip
                line = Redactor(self.secrets)(line)  # the report must not leak it again
                problems.append(f"output: {leaked}: {line[:160]!r}")
        return ScanFigures(lines, self.messages, len(self.raw_values), problems)


def _leaks(
    text: str, raw_values: set[str], secrets: Iterable[str], pieces: bool = False
) -> str | None:
    """`pieces`: a secret cut short counts too (outputs; messages hold 64-hex pseudonyms, where
    8 hex characters of a secret could show by chance, and never go through the redactor)."""
    for secret in secrets:
        shown = shows(text, secret) if pieces else ("" if secret in text else None)
        if shown is not None:
            return f"a secret in clear{shown}"
    tokens = set(_TOKEN_SPLIT.split(text))
    tokens |= {token.strip(".:!?*#") for token in tokens}  # "203.0.113.9:" or "id 42."
    found = tokens & raw_values
    if found:
        return f"raw pseudonymised value {sorted(found)[0]!r}"
    return None


@dataclass
class ScanFigures:
    lines: int
    messages: int
    raw_values: int
    problems: list[str]


def assert_clean(collector: Collector) -> ScanFigures:
    figures = collector.scan()
    if not collector.outputs or not collector.raw_values:
        raise ProofFailed("the secrets scan got nothing to scan")
    if figures.problems:
        raise ProofFailed("secrets scan: " + "; ".join(figures.problems[:10]))
    return figures


# -- expected visits and the checkpoint invariants -----------------------------------------


@dataclass
class Dataset:
    """The visits a proof expects: per (site, day) the keys in Live's ascending order."""

    sites: tuple[int, ...]
    days: tuple[date, ...]
    keys: dict[tuple[int, date], list[str]]
    stamps: dict[str, int]  # key -> last action time (the keyset boundary's clock)

    @classmethod
    def build(
        cls, sim: MatomoSimulator, sites: Sequence[int], days: Sequence[date], collector: Collector
    ) -> Dataset:
        keys: dict[tuple[int, date], list[str]] = {}
        stamps: dict[str, int] = {}
        for site in sites:
            for day in days:
                visits = sim.expected_visits(site, day)
                collector.add_visits(visits)
                keys[(site, day)] = [f"{site}:{int(visit['idVisit'])}" for visit in visits]
                for visit in visits:
                    stamps[f"{site}:{int(visit['idVisit'])}"] = int(visit["lastActionTimestamp"])
        return cls(tuple(sites), tuple(days), keys, stamps)

    def site_keys(self, site: int) -> list[str]:
        return [key for day in self.days for key in self.keys[(site, day)]]

    def all_keys(self) -> list[str]:
        return [key for site in self.sites for key in self.site_keys(site)]

    def prefix(self, site: int, cursor: Cursor | None) -> set[str]:
        """The visits a checkpoint says Kafka acknowledged."""
        done: set[str] = set()
        if cursor is None:
            return done
        for day in self.days:
            if day < cursor.day:
                done.update(self.keys[(site, day)])
            elif day == cursor.day and cursor.last_action is None:
                done.update(self.keys[(site, day)][: cursor.offset])
            elif day == cursor.day:
                # Keyset: the visits before the boundary second, and those of it in `ids`.
                ids = {f"{site}:{idvisit}" for idvisit in cursor.ids}
                sent = [key for key in self.keys[(site, day)]
                        if self.stamps[key] < cursor.last_action or key in ids]  # fmt: skip
                if len(sent) != cursor.offset:
                    raise ProofFailed(
                        f"site {site}: checkpoint {cursor.day} offset {cursor.offset} has a "
                        f"boundary that covers {len(sent)} visits"
                    )
                done.update(sent)
        return done


@dataclass
class Exposure:
    """After a run ended badly, for one site: the visits in the topic beyond its checkpoint
    (the next run re-sends them), and those of them this run newly left there."""

    cursor: Cursor | None
    beyond: set[str]
    fresh: set[str]
    window: bool  # fresh > one page only because of the day-change window (see below)


def _where(cursor: Cursor | None) -> str:
    return "no checkpoint" if cursor is None else f"{cursor.day} offset {cursor.offset}"


def check_site(
    store: CheckpointStore,
    data: Dataset,
    site: int,
    counts: Counter[str],
    carried: set[str],
    context: str,
    pages: int = DEFAULT_CONCURRENCY,
) -> Exposure:
    """The checkpoint is readable and never ahead of the topic; what the run newly left
    beyond it is at most `pages` pages (MATOMO_MAX_CONCURRENCY: the pages a run hands to
    Kafka before their checkpoint), or else exactly the day-change window."""
    try:
        cursor = store.load(site)
    except Exception as exc:
        raise ProofFailed(f"{context}: site {site}: checkpoint unreadable: {exc}") from None
    done = data.prefix(site, cursor)
    missing = sorted(key for key in done if counts[key] == 0)
    if missing:
        raise ProofFailed(
            f"{context}: site {site}: checkpoint {cursor} is ahead of the topic: "
            f"{len(missing)} checkpointed visit(s) not in it, e.g. {missing[0]}"
        )
    beyond = {key for key in data.site_keys(site) if counts[key] and key not in done}
    fresh = beyond - carried
    window = False
    if len(fresh) > pages * (LIMIT + TIE_GROUP):  # pages, plus repaired tie groups
        day_keys = set(data.keys.get((site, cursor.day), [])) if cursor else set()
        window = cursor is not None and cursor.offset == 0 and fresh <= day_keys
        if not window:
            raise ProofFailed(
                f"{context}: site {site}: {len(fresh)} visits beyond checkpoint {cursor} "
                f"were newly sent: more than {pages} page(s) ({LIMIT} + a tie group each)"
            )
    return Exposure(cursor, beyond, fresh, window)


def check_complete(
    store: CheckpointStore, data: Dataset, counts: Counter[str], end: date, context: str
) -> tuple[int, dict[int, int]]:
    """After a successful run: every checkpoint at `end`, no visit missing. Returns
    (visits lost, duplicates per site) - lost is always 0 here, or this raises."""
    for site in data.sites:
        cursor = store.load(site)
        if cursor != Cursor(end, 0):
            raise ProofFailed(f"{context}: site {site}: checkpoint {cursor} after success")
    missing = [key for key in data.all_keys() if counts[key] == 0]
    if missing:
        raise ProofFailed(f"{context}: {len(missing)} visit(s) lost, e.g. {missing[0]}")
    duplicates = {site: sum(counts[key] - 1 for key in data.site_keys(site)) for site in data.sites}
    return 0, duplicates


# -- proof 1: SIGKILL at random points -----------------------------------------------------


@dataclass
class KillFigures:
    seed: int
    kills: int = 0
    timed_kills: int = 0  # at a random instant since the start (startup, locks, site setup...)
    paced_kills: int = 0  # after a random number of checkpoint moves, at a random instant
    window_kills: int = 0  # kills that landed between the two checkpoint writes of a day change
    window_sites: int = 0  # (kill, site) pairs in that window: each re-sends a whole day
    completed_runs: int = 0
    rounds: int = 0
    sites: int = 0
    visits_expected: int = 0
    lost: int = 0
    duplicated: int = 0
    max_fresh: int = 0  # most visits one kill newly left beyond a site's checkpoint
    max_fresh_total: int = 0  # the same, all sites together
    max_window: int = 0  # same, for kills in the day-change window (a whole day)
    delivery: str = "at_least_once"
    temp_files_left: int = 0  # .tmp files a kill left beside the checkpoints
    seconds: float = 0.0

    @property
    def max_duplicates_per_kill(self) -> int:
        return max(self.max_fresh, self.max_window)


#: Visits per (site, day): empty days, a page minus one, exact pages, a page plus one, more.
_DAY_SIZES = (0, LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 3 * LIMIT + 7)


class _KillRound:
    """One window of days for every site, with its own checkpoint files, run again and again
    (and killed) until a run completes it. Rounds use disjoint days, so keys never clash."""

    def __init__(
        self,
        index: int,
        sim: MatomoSimulator,
        rng: random.Random,
        sites: tuple[int, ...],
        days: int,
        topic: str,
        bootstrap: str,
        workdir: Path,
        collector: Collector,
        delivery: str = "at_least_once",
        concurrency: int | None = None,
    ) -> None:
        first = date(2024, 1, 1) + timedelta(days=index * (days + 1))
        self.days = tuple(first + timedelta(days=n) for n in range(days))
        self.run_date = first + timedelta(days=days)
        for site in sites:
            for day in self.days:
                size = rng.choice(_DAY_SIZES) if rng.random() < 0.6 else rng.randint(0, 5 * LIMIT)
                sim.set_visits(site, day, size)
        self.data = Dataset.build(sim, sites, self.days, collector)
        self.dir = workdir / f"round-{index:03d}"
        values = parm_values(self.dir / "data", sim.url, topic, bootstrap,
                             START_DATE=first.isoformat(),
                             MATOMO_ID_SITE=",".join(map(str, sites)),
                             MATOMO_MAX_CONCURRENCY=str(concurrency or len(sites)),
                             DELIVERY=delivery,
                             KAFKA_STATE_TOPIC=f"{topic}.state.{index}")  # fmt: skip
        self.parm = write_parm(self.dir / "parm", values)
        self.store = store_for(self.dir / "data")
        self.kills = 0
        self.beyond: dict[int, set[str]] = {site: set() for site in sites}
        self.window_visits: dict[int, int] = dict.fromkeys(sites, 0)

    def args(self) -> list[str]:
        return ["run", "--parm-dir", str(self.parm), "--run-date", self.run_date.isoformat()]

    def state(self) -> tuple[tuple[int, int] | None, ...]:
        """(mtime, size) of every checkpoint file: changes each time a checkpoint moves."""
        found: list[tuple[int, int] | None] = []
        for site in self.data.sites:
            for path in (self.store.date_path(site), self.store.offset_path(site)):
                try:
                    stat = path.stat()
                    found.append((stat.st_mtime_ns, stat.st_size))
                except OSError:
                    found.append(None)
        return tuple(found)


def kill_proof(
    bootstrap: str,
    workdir: Path,
    kills: int,
    seed: int,
    collector: Collector,
    sites: int = 3,
    days: int = 4,
    latency: float = 0.03,
    say: Say = print,
    tolerate_day_window: bool = False,
    delivery: str = "at_least_once",
    concurrency: int | None = None,
) -> KillFigures:
    """SIGKILLs `matomo-kafka run` at least `kills` times at random points, checking the
    checkpoints against the topic after each kill, then runs the last round to completion.
    `tolerate_day_window`: count kills that re-send a whole day from the day-change window
    (code before the `.next` marker) instead of failing on the first one.
    `delivery="exactly_once"`: the topic is read (read_committed) only once a round is
    complete, since a killed run's open transaction blocks such readers until the next run
    aborts it, and no visit may then be seen twice.
    `concurrency`: MATOMO_MAX_CONCURRENCY (default: one per site); a kill may newly leave at
    most that many pages beyond the checkpoints of all sites together."""
    exactly_once = delivery == "exactly_once"
    concurrency = concurrency or sites
    rng = random.Random(seed)
    site_ids = tuple(range(1, sites + 1))
    figures = KillFigures(seed=seed, sites=sites, delivery=delivery)
    say(f"kills ({delivery}): seed {seed}, {kills} kills, {sites} sites x {days} days a round, "
        f"limit {LIMIT}, latency {latency * 1000:.0f} ms")  # fmt: skip
    sim = simulator(
        [SimSite(idsite=i, name=f"kill site {i}", timezone=ZONES[(i - 1) % len(ZONES)],
                 tie_group=TIE_GROUP)
         for i in site_ids],
        latency=latency, seed=seed, unstable_ties=True,
    )  # fmt: skip
    topic = create_topic(bootstrap)
    reader = TopicReader(bootstrap, topic)
    started = time.monotonic()
    owned: set[str] = set()
    current: _KillRound | None = None

    def new_round() -> _KillRound:
        round_ = _KillRound(figures.rounds, sim, rng, site_ids, days, topic, bootstrap, workdir,
                            collector, delivery, concurrency)  # fmt: skip
        figures.rounds += 1
        owned.update(round_.data.all_keys())
        return round_

    def complete(round_: _KillRound) -> None:
        collector.add_messages(reader.catch_up())
        context = f"seed {seed}, round {figures.rounds - 1} completed"
        _, duplicates = check_complete(round_.store, round_.data, reader.counts,
                                       round_.run_date, context)  # fmt: skip
        for site, count in duplicates.items():
            # A page is LIMIT visits, plus the rest of a repaired tie group (keyset paging).
            bound = 0 if exactly_once else concurrency * (LIMIT + TIE_GROUP) * round_.kills
            bound += round_.window_visits[site]
            if count > bound:
                raise ProofFailed(f"{context}: site {site}: {count} duplicates for "
                                  f"{round_.kills} kills (bound {bound})")  # fmt: skip
        figures.completed_runs += 1
        figures.visits_expected += len(round_.data.all_keys())
        figures.duplicated += sum(duplicates.values())
        figures.temp_files_left += len(list((round_.dir / "data").glob(".*.tmp")))
        shutil.rmtree(round_.dir / "parm", ignore_errors=True)

    try:
        cycles = 0
        while figures.kills < kills:
            cycles += 1
            if cycles > 3 * kills + 50:
                raise ProofFailed(f"seed {seed}: the kill loop did not converge")
            current = current or new_round()
            log = current.dir / "run.log"
            process = spawn_cli(log, *current.args())
            timed = rng.random() < 0.2
            if timed:  # anywhere from the start: imports, lock, Kafka, site setup, pages
                deadline = time.monotonic() + rng.uniform(0.0, 1.5)
                while process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:  # after some checkpoint moves, anywhere inside the next page's life
                moves, last = rng.randint(1, 6), current.state()
                deadline = time.monotonic() + 60
                while process.poll() is None and moves > 0 and time.monotonic() < deadline:
                    time.sleep(0.002)
                    state = current.state()
                    if state != last:
                        moves, last = moves - 1, state
                pause = time.monotonic() + rng.uniform(0.0, 0.06)
                while process.poll() is None and time.monotonic() < pause:
                    time.sleep(0.002)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            code = process.wait(timeout=60)
            collector.add_output(log.read_text(errors="replace"))
            if code == 0:
                complete(current)
                current = None
                continue
            if code != -signal.SIGKILL:
                raise ProofFailed(f"seed {seed}: a run exited {code}:\n"
                                  f"{log.read_text(errors='replace')[-2000:]}")  # fmt: skip
            figures.kills += 1
            figures.timed_kills += timed
            figures.paced_kills += not timed
            current.kills += 1
            if exactly_once:
                for site in site_ids:  # readable after every kill; the topic is read later
                    try:
                        current.store.load(site)
                    except Exception as exc:
                        raise ProofFailed(f"seed {seed}, kill {figures.kills}: site {site}: "
                                          f"checkpoint unreadable: {exc}") from None  # fmt: skip
                continue
            collector.add_messages(reader.settle())
            context = f"seed {seed}, kill {figures.kills}"
            in_window = False
            fresh_total = 0
            for site in site_ids:
                exposure = check_site(current.store, current.data, site, reader.counts,
                                      current.beyond[site], context, concurrency)  # fmt: skip
                current.beyond[site] = exposure.beyond
                if exposure.window and not tolerate_day_window:
                    raise ProofFailed(
                        f"{context}: site {site}: the kill left {_where(exposure.cursor)} "
                        f"although Kafka acknowledged that day: {len(exposure.fresh)} visits "
                        "to re-send (the day-change window)"
                    )
                if exposure.window:
                    in_window = True
                    figures.window_sites += 1
                    figures.max_window = max(figures.max_window, len(exposure.fresh))
                    current.window_visits[site] += len(exposure.fresh)
                    say(
                        f"  {context}: site {site} killed in the day-change window: "
                        f"{len(exposure.fresh)} visits of the acknowledged day before "
                        f"{_where(exposure.cursor)} to re-send"
                    )
                else:
                    figures.max_fresh = max(figures.max_fresh, len(exposure.fresh))
                    fresh_total += len(exposure.fresh)
            figures.max_fresh_total = max(figures.max_fresh_total, fresh_total)
            if fresh_total > concurrency * (LIMIT + TIE_GROUP):
                raise ProofFailed(
                    f"{context}: {fresh_total} visits beyond the checkpoints were newly sent, "
                    f"more than MATOMO_MAX_CONCURRENCY={concurrency} pages ({LIMIT} + a tie "
                    "group each)"
                )
            figures.window_kills += in_window
            if figures.kills % 25 == 0:
                say(f"  {figures.kills} kills, {figures.rounds} rounds, "
                    f"{time.monotonic() - started:.0f}s")  # fmt: skip
        if current is not None:  # the final run, to completion
            final = run_cli(collector, *current.args())
            if final.code != 0:
                raise ProofFailed(f"seed {seed}: the final run exited {final.code}:\n"
                                  f"{final.tail()}")  # fmt: skip
            complete(current)
        strangers = [key for key in reader.counts if key not in owned]
        if strangers:
            raise ProofFailed(f"seed {seed}: unexpected keys in the topic, e.g. {strangers[0]}")
    finally:
        reader.close()
        sim.stop()
        delete_topic(bootstrap, topic)
    figures.seconds = time.monotonic() - started
    return figures


#: Runs the CLI with one change: the process SIGKILLs itself at the first day change, after
#: CheckpointStore.save() reset the offset file to 0 and before it writes the new day, which
#: is where a real SIGKILL lands now and then (measured by kill_proof as window_kills).
DAY_CHANGE_KILL = """
import os, signal, sys
import matomo_kafka.state.checkpoint_files as checkpoint
_write = checkpoint._write_atomic
def _die_before_the_new_day(path, text):
    if path.name.startswith("filterdate") and path.suffix == ".txt" and path.exists():
        os.kill(os.getpid(), signal.SIGKILL)
    _write(path, text)
checkpoint._write_atomic = _die_before_the_new_day
from matomo_kafka.cli import main
sys.argv[0] = "matomo-kafka"
main()
"""


@dataclass
class WindowFigures:
    killed_code: int
    files: tuple[str, str]  # the day and offset files right after the kill
    cursor: Cursor | None  # what CheckpointStore.load() makes of them
    day_visits: int
    resent: int

    @property
    def in_window(self) -> bool:
        """The kill left the seed's two files at (old day, 0), the window of a day change."""
        return self.killed_code == -signal.SIGKILL and self.files == ("2024-03-01", "0")


def day_change_kill_proof(bootstrap: str, workdir: Path, collector: Collector) -> WindowFigures:
    """A SIGKILL between the two writes of a day change leaves the seed's files at (old day,
    offset 0) although Kafka acknowledged the whole day: the rerun must still re-send at most
    one page (at 7cdce68 it re-sent the whole day; a `.next` marker now records the target)."""
    day_visits = 3 * LIMIT + 5
    sim = simulator([SimSite(idsite=1, name="window", timezone="Europe/Paris",
                             visits={"2024-03-01": day_visits, "2024-03-02": 7})])  # fmt: skip
    topic = create_topic(bootstrap)
    try:
        data = Dataset.build(sim, [1], [date(2024, 3, 1), date(2024, 3, 2)], collector)
        root = workdir / "day-change-window"
        parm = write_parm(root / "parm", parm_values(root / "data", sim.url, topic, bootstrap))
        args = ["run", "--parm-dir", str(parm), "--run-date", "2024-03-03"]
        hooked = subprocess.run([sys.executable, "-c", DAY_CHANGE_KILL, *args], env=clean_env(),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        collector.add_output(hooked.stdout + hooked.stderr)
        store = store_for(root / "data")
        files = tuple(path.read_text().strip() if path.exists() else ""
                      for path in (store.date_path(1), store.offset_path(1)))  # fmt: skip
        cursor = store.load(1)
        rerun = run_cli(collector, *args)
        if rerun.code != 0:
            raise ProofFailed(f"day-change window: the rerun exited {rerun.code}")
        reader = TopicReader(bootstrap, topic)
        try:
            collector.add_messages(reader.catch_up())
            check_complete(store_for(root / "data"), data, reader.counts, date(2024, 3, 3),
                           "day-change window")  # fmt: skip
            resent = sum(count - 1 for count in reader.counts.values())
        finally:
            reader.close()
    finally:
        sim.stop()
        delete_topic(bootstrap, topic)
    return WindowFigures(hooked.returncode, (files[0], files[1]), cursor, day_visits, resent)


# -- proof 2: Matomo faults ----------------------------------------------------------------

#: Per-site setup calls (answered inside API.getBulkRequest); the run-wide ones are
#: SitesManager.getSitesWithAtLeastViewAccess and API.getMatomoVersion.
_META_METHODS = (
    "CustomDimensions.getConfiguredCustomDimensions",
    "Goals.getGoals",
)


@dataclass
class FaultFigures:
    seed: int
    transient_only: bool
    injected: Counter[str] = field(default_factory=Counter)  # failed requests, by fault
    runs: int = 0
    failed_runs: int = 0
    visits_expected: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0


def _fault_plan(
    rng: random.Random, data: Dataset, count: int, transient_only: bool, max_retries: int
) -> list[tuple[str, Fault]]:
    """`count` faults on distinct requests (Live pages at their offsets, the sites' setup
    calls, the version call, the site list), so no request fails more often than the plan
    says. The sites' dimensions and goals are answered inside one API.getBulkRequest: a
    fault that fails a whole request goes on that request, once; one that is an error
    envelope goes on a site's call inside it, and fails that site alone."""
    slots: list[tuple[str, int | None, str | None, int | None]] = [
        (LIVE, site, day.isoformat(), offset)
        for (site, day), keys in data.keys.items()
        for offset in range(0, len(keys) + 1, LIMIT)
    ]
    if not transient_only:
        slots += [(method, site, None, None) for method in _META_METHODS for site in data.sites]
    slots.append(("API.getBulkRequest", None, None, None))
    slots.append(("API.getMatomoVersion", None, None, None))
    slots.append(("SitesManager.getSitesWithAtLeastViewAccess", None, None, None))
    chosen = rng.sample(slots, min(count, len(slots)))
    plan: list[tuple[str, Fault]] = []
    slow = 0
    for method, site, day, offset in chosen:
        where: dict[str, Any] = {"method": method, "idsite": site, "date": day, "offset": offset}
        kinds = ["status", "truncate", "disconnect", "rate_limit", "delay"]
        if not transient_only:
            kinds += ["envelope", "vanished", "exhausted"]
        if method in _META_METHODS:  # inside the bulk request: only a site's own error
            kinds = ["envelope", "vanished"]
        kind = rng.choice(kinds if slow < 4 else [k for k in kinds if k not in
                                                  ("rate_limit", "delay")])  # fmt: skip
        if kind == "status":
            status = rng.choice([500, 502, 503, 504])
            plan.append((f"HTTP {status}", Fault(kind="status", status=status,
                                                 times=rng.randint(1, 2), **where)))  # fmt: skip
        elif kind == "truncate":
            plan.append(("truncated body", Fault(kind="truncate", times=rng.randint(1, 2),
                                                 **where)))  # fmt: skip
        elif kind == "disconnect":
            plan.append(("connection dropped", Fault(kind="disconnect", times=rng.randint(1, 2),
                                                     **where)))  # fmt: skip
        elif kind == "rate_limit":
            slow += 1
            plan.append(("HTTP 429 + Retry-After", Fault(kind="rate_limit", times=1,
                                                         retry_after=rng.choice([0, 1]),
                                                         **where)))  # fmt: skip
        elif kind == "delay":
            slow += 1
            plan.append(("timeout", Fault(kind="delay", delay_s=1.6, times=1, **where)))
        elif kind == "envelope":
            plan.append(
                (
                    "error envelope",
                    Fault(kind="envelope", times=1, message="Mysql server has gone away", **where),
                )
            )
        elif kind == "vanished":
            target = site or rng.choice(data.sites)
            vanish = (
                {**where, "idsite": target}
                if method in _META_METHODS or method == LIVE
                else {"method": "Goals.getGoals", "idsite": target}
            )
            plan.append(("site vanished", Fault(kind="envelope", times=1,
                                                message=MSG_UNKNOWN_SITE.format(target),
                                                **vanish)))  # fmt: skip
        else:
            plan.append(("retries exhausted", Fault(kind="status", status=503,
                                                    times=max_retries + 1, **where)))  # fmt: skip
    return plan


def fault_proof(
    bootstrap: str,
    workdir: Path,
    seed: int,
    collector: Collector,
    transient_only: bool,
    faults: int = 24,
    sites: int = 3,
    days: int = 4,
    sasl: bool = True,
    say: Say = print,
) -> FaultFigures:
    """Faults spread over the requests of a run; reruns until one succeeds. Transient faults
    alone must not even fail the run. Never a visit lost, never one duplicated."""
    rng = random.Random(seed)
    figures = FaultFigures(seed=seed, transient_only=transient_only)
    site_ids = tuple(range(1, sites + 1))
    first = date(2024, 3, 1)
    day_list = [first + timedelta(days=n) for n in range(days)]
    sim_sites = [
        SimSite(idsite=i, name=f"fault site {i}", timezone=ZONES[(i + 1) % len(ZONES)],
                visits={d.isoformat(): rng.choice(_DAY_SIZES) for d in day_list},
                tie_group=TIE_GROUP)
        for i in site_ids
    ]  # fmt: skip
    sim = simulator(sim_sites, seed=seed, unstable_ties=True)
    topic = create_topic(bootstrap)
    reader = TopicReader(bootstrap, topic)
    started = time.monotonic()
    try:
        data = Dataset.build(sim, site_ids, day_list, collector)
        max_retries = 5 if transient_only else 2
        plan = _fault_plan(rng, data, faults, transient_only, max_retries)
        labels = {id(fault): label for label, fault in plan}
        fired: Counter[str] = figures.injected
        take = sim._take_fault

        def counting_take(params: dict[str, str]) -> Fault | None:
            fault = take(params)
            if fault is not None:
                fired[labels.get(id(fault), fault.kind)] += 1
            return fault

        sim._take_fault = counting_take  # type: ignore[method-assign]
        for _, fault in plan:
            sim.add_fault(fault)
        say(f"faults: seed {seed}, {'transient' if transient_only else 'mixed'}: "
            f"{len(plan)} faults planned: {dict(Counter(label for label, _ in plan))}")  # fmt: skip
        root = workdir / f"faults-{'transient' if transient_only else 'mixed'}-{seed}"
        extra: dict[str, str] = {}
        if sasl:
            extra = {"KAFKA_SERVERS": f"{LOCALHOST}:{SASL_PORT}", "KAFKA_USER": SASL_USER,
                     "KAFKA_PASSWORD": SASL_PASSWORD, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                     "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}  # fmt: skip
        values = parm_values(root / "data", sim.url, topic, bootstrap,
                             MATOMO_ID_SITE=",".join(map(str, site_ids)),
                             MATOMO_MAX_RETRIES=str(max_retries), MATOMO_TIMEOUT="1",
                             MATOMO_MAX_CONCURRENCY="2", **extra)  # fmt: skip
        parm = write_parm(root / "parm", values)
        store = store_for(root / "data")
        end = first + timedelta(days=days)
        args = ["run", "--parm-dir", str(parm), "--run-date", end.isoformat()]
        runs_allowed = 1 if transient_only else 3 + len(plan)
        while True:
            result = run_cli(collector, *args)
            figures.runs += 1
            collector.add_messages(reader.catch_up())
            context = f"seed {seed}, faults run {figures.runs}"
            if result.code == 0:
                break
            figures.failed_runs += 1
            if transient_only or figures.runs >= runs_allowed:
                raise ProofFailed(f"{context}: exited {result.code}:\n{result.tail()}")
            if not result.last_line.startswith(ERROR_PREFIX) or "Traceback" in result.output \
                    or "internal error" in result.output:  # fmt: skip
                raise ProofFailed(f"{context}: no clear error line:\n{result.tail()}")
            for site in site_ids:
                exposure = check_site(store, data, site, reader.counts, set(), context)
                if exposure.beyond:
                    raise ProofFailed(f"{context}: site {site}: a Matomo failure left "
                                      f"{len(exposure.beyond)} visits unacknowledged beyond "
                                      f"{exposure.cursor}")  # fmt: skip
        _, duplicates = check_complete(store, data, reader.counts, end, f"seed {seed}, faults")
        figures.visits_expected = len(data.all_keys())
        figures.duplicated = sum(duplicates.values())
        if figures.duplicated:
            raise ProofFailed(f"seed {seed}: {figures.duplicated} duplicates after Matomo faults")
    finally:
        reader.close()
        sim.stop()
        delete_topic(bootstrap, topic)
    figures.seconds = time.monotonic() - started
    return figures


# -- proof 3: the broker stopped, killed, restarted -----------------------------------------


def free_port_block(count: int = 3) -> int:
    """A base port with `count` consecutive free ports, below the ephemeral range."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randint(20000, 32000)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((LOCALHOST, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise ProofFailed("no free port block for a broker")


#: Stops an own broker whose owner died without stopping it (pytest or the bench killed):
#: kafka-local.sh starts the JVM in a session of its own, so nothing else would.
_WATCHDOG = """
import subprocess, sys, time
owner, script = sys.argv[1], sys.argv[2]
def alive():
    try:
        with open(f"/proc/{owner}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while alive():
    time.sleep(2)
subprocess.run(["bash", script, "stop", "--kill"], capture_output=True, timeout=120)
"""


class OwnBroker:
    """A broker of our own: scripts/kafka-local.sh with its own KAFKA_LOCAL_DIR and ports, so
    it can be stopped, killed and restarted at will. The shared broker is never touched. A
    watchdog process stops it if this process dies without calling close()."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "kafka-own"
        self.port = free_port_block(5)
        if self.port == KAFKA_PORT or self.dir.resolve() == (REPO / ".kafka-local").resolve():
            raise ProofFailed("refusing to drive the shared broker")
        self.bootstrap = f"{LOCALHOST}:{self.port}"
        self.env = {**os.environ, "KAFKA_LOCAL_DIR": str(self.dir), "KAFKA_PORT": str(self.port),
                    "KAFKA_CONTROLLER_PORT": str(self.port + 1),
                    "KAFKA_SASL_PORT": str(self.port + 2), "KAFKA_SSL_PORT": str(self.port + 3),
                    "KAFKA_MTLS_PORT": str(self.port + 4)}  # fmt: skip
        self._link_jar_cache()
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _link_jar_cache(self) -> None:
        """Links the jars another state dir already resolved (else Maven resolves them)."""
        default = re.search(r"KAFKA_VERSION=\$\{KAFKA_VERSION:-([^}]+)\}", KAFKA_SCRIPT.read_text())
        version = os.environ.get("KAFKA_VERSION") or (default.group(1) if default else "")
        shared = os.environ.get("KAFKA_LOCAL_DIR")
        for source in ([Path(shared)] if shared else []) + [REPO / ".kafka-local"]:
            jars = sorted((source / "libs" / version).glob("*.jar"))
            if any(jar.name.startswith("kafka_2.13-") for jar in jars):
                target = self.dir / "libs" / version
                target.mkdir(parents=True, exist_ok=True)
                for jar in jars:
                    (target / jar.name).symlink_to(jar.resolve())
                return

    def _script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(KAFKA_SCRIPT), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def start(self) -> float:
        """Starts it; returns the seconds until it is ready."""
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(KAFKA_SCRIPT)],
                env=self.env, start_new_session=True, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        started = time.monotonic()
        for _ in range(10):
            result = self._script("start")
            if result.returncode == 0:
                return time.monotonic() - started
            # Right after a SIGKILL the old listener may not be released yet.
            if "already in use" not in result.stderr:
                break
            time.sleep(0.5)
        raise ProofFailed(f"own broker did not start:\n{result.stdout}\n{result.stderr}")

    def stop(self, kill: bool = False) -> float:
        started = time.monotonic()
        result = self._script("stop", *(["--kill"] if kill else []))
        if result.returncode != 0:
            raise ProofFailed(f"own broker did not stop:\n{result.stdout}\n{result.stderr}")
        return time.monotonic() - started

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._script("stop", "--kill", timeout=60)
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class BrokerFigures:
    scenario: str
    mode: str  # stop (SIGTERM) | kill (SIGKILL)
    delivery_timeout: float
    exit_code: int = 0
    error_line: str = ""
    failed_after: float = 0.0  # broker stop issued -> the run exited
    bound: float = 0.0  # KAFKA_DELIVERY_TIMEOUT_MS + 30 s (KafkaSink.wait's deadline)
    unreachable_after: float | None = None  # a run started while it is down
    unreachable_line: str = ""
    downtime: float = 0.0  # stop issued -> broker ready again
    visits_expected: int = 0
    lost: int = 0
    duplicated: int = 0


def _broker_run_setup(
    broker: OwnBroker, root: Path, collector: Collector, delivery_timeout_ms: int
) -> tuple[MatomoSimulator, str, Dataset, Path, CheckpointStore, list[str]]:
    day_list = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
    sites = [SimSite(idsite=i, name=f"broker site {i}", timezone=ZONES[i],
                     visits={d.isoformat(): 150 for d in day_list}) for i in (1, 2)]  # fmt: skip
    sim = simulator(sites, latency=0.05)
    topic = create_topic(broker.bootstrap)
    data = Dataset.build(sim, (1, 2), day_list, collector)
    values = parm_values(root / "data", sim.url, topic, broker.bootstrap, MATOMO_ID_SITE="1,2",
                         KAFKA_DELIVERY_TIMEOUT_MS=str(delivery_timeout_ms),
                         KAFKA_CONNECT_TIMEOUT="3")  # fmt: skip
    parm = write_parm(root / "parm", values)
    args = ["run", "--parm-dir", str(parm), "--run-date", "2024-03-04"]
    return sim, topic, data, root, store_for(root / "data"), args


def _wait_mid_run(process: subprocess.Popen[bytes], store: CheckpointStore) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProofFailed(f"the run ended ({process.returncode}) before the broker outage")
        cursors = [store.load(site) for site in (1, 2)]
        if any(c is not None and (c.offset >= 30 or c.day > date(2024, 3, 1)) for c in cursors):
            return
        time.sleep(0.01)
    raise ProofFailed("the run made no progress within 90 s")


def broker_outage_proof(
    broker: OwnBroker,
    workdir: Path,
    collector: Collector,
    mode: str,
    delivery_timeout_ms: int = 10_000,
    check_unreachable: bool = True,
) -> BrokerFigures:
    """Broker stopped (or killed) mid-run: the run fails within the delivery timeout + 30 s,
    with one error line and a non-zero exit; a run started while it is down fails within
    KAFKA_CONNECT_TIMEOUT; restarted, a rerun completes and nothing is lost."""
    figures = BrokerFigures("outage", mode, delivery_timeout_ms / 1000)
    figures.bound = figures.delivery_timeout + 30
    root = workdir / f"broker-outage-{mode}"
    sim, topic, data, root, store, args = _broker_run_setup(broker, root, collector,
                                                            delivery_timeout_ms)  # fmt: skip
    try:
        log = root / "run.log"
        process = spawn_cli(log, *args)
        _wait_mid_run(process, store)
        stopped = time.monotonic()
        broker.stop(kill=mode == "kill")
        try:
            figures.exit_code = process.wait(timeout=figures.bound + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ProofFailed(f"broker {mode}: the run did not exit within "
                              f"{figures.bound + 60:.0f}s") from None  # fmt: skip
        figures.failed_after = time.monotonic() - stopped
        text = log.read_text(errors="replace")
        collector.add_output(text)
        lines = [line for line in text.splitlines() if line.strip()]
        figures.error_line = lines[-1] if lines else ""
        cursors = {site: store.load(site) for site in data.sites}
        if check_unreachable:
            down = run_cli(collector, *args, timeout=120)
            figures.unreachable_after = down.seconds
            figures.unreachable_line = down.last_line
            if down.code != 1 or not down.last_line.startswith(ERROR_PREFIX):
                raise ProofFailed(f"broker down: a new run exited {down.code}:\n{down.tail()}")
            if {site: store.load(site) for site in data.sites} != cursors:
                raise ProofFailed("broker down: a failed run moved a checkpoint")
        broker.start()
        figures.downtime = time.monotonic() - stopped
        reader = TopicReader(broker.bootstrap, topic)
        try:
            collector.add_messages(reader.settle())
            for site in data.sites:
                check_site(store, data, site, reader.counts, set(), f"broker {mode}")
            rerun = run_cli(collector, *args)
            if rerun.code != 0:
                raise ProofFailed(f"broker {mode}: the rerun exited {rerun.code}:\n"
                                  f"{rerun.tail()}")  # fmt: skip
            collector.add_messages(reader.catch_up())
            _, duplicates = check_complete(store, data, reader.counts, date(2024, 3, 4),
                                           f"broker {mode}")  # fmt: skip
        finally:
            reader.close()
        for site, count in duplicates.items():
            if count > LIMIT:
                raise ProofFailed(f"broker {mode}: site {site}: {count} duplicates for one "
                                  "failed run")  # fmt: skip
        figures.visits_expected = len(data.all_keys())
        figures.duplicated = sum(duplicates.values())
    finally:
        sim.stop()
    return figures


def broker_restart_proof(
    broker: OwnBroker,
    workdir: Path,
    collector: Collector,
    mode: str,
    delivery_timeout_ms: int = 60_000,
) -> BrokerFigures:
    """Broker stopped (or killed) mid-run and started again at once, within the delivery
    timeout: librdkafka retries and the run completes by itself, nothing lost."""
    figures = BrokerFigures("restart", mode, delivery_timeout_ms / 1000)
    figures.bound = figures.delivery_timeout + 30
    root = workdir / f"broker-restart-{mode}"
    sim, topic, data, root, store, args = _broker_run_setup(broker, root, collector,
                                                            delivery_timeout_ms)  # fmt: skip
    try:
        log = root / "run.log"
        process = spawn_cli(log, *args)
        _wait_mid_run(process, store)
        stopped = time.monotonic()
        broker.stop(kill=mode == "kill")
        broker.start()
        figures.downtime = time.monotonic() - stopped
        try:
            figures.exit_code = process.wait(timeout=figures.bound + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ProofFailed(f"broker restart ({mode}): the run did not exit") from None
        figures.failed_after = time.monotonic() - stopped
        text = log.read_text(errors="replace")
        collector.add_output(text)
        lines = [line for line in text.splitlines() if line.strip()]
        figures.error_line = lines[-1] if lines and figures.exit_code else ""
        reader = TopicReader(broker.bootstrap, topic)
        try:
            collector.add_messages(reader.settle())
            if figures.exit_code != 0:
                for site in data.sites:
                    check_site(store, data, site, reader.counts, set(), f"restart {mode}")
                return figures
            _, duplicates = check_complete(store, data, reader.counts, date(2024, 3, 4),
                                           f"broker restart ({mode})")  # fmt: skip
        finally:
            reader.close()
        figures.visits_expected = len(data.all_keys())
        figures.duplicated = sum(duplicates.values())
    finally:
        sim.stop()
    return figures


# -- proof 4: bad inputs -------------------------------------------------------------------

Answer = tuple[int, bytes]
AnswersFor = Callable[[MatomoSimulator], dict[str, Answer]]
Prepare = Callable[[Path], None]
INPUT_DAY = date(2024, 3, 2)
#: The checkpoint every Matomo-answer case starts from: must be byte-identical afterwards.
INPUT_CHECKPOINT = (("filterdate1.txt", b"2024-03-02\n"), ("last_filter_offset1.txt", b"10\n"))


class _ShapeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, answers: dict[str, Answer]) -> None:
        super().__init__((LOCALHOST, 0), _ShapeHandler)
        self.upstream = upstream
        self.answers = answers
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _ShapeHandler(BaseHTTPRequestHandler):
    server: _ShapeServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params = dict(parse_qsl(body.decode("utf-8", "replace")))
        method = params.get("method", "")
        answer = self.server.answers.get(method)
        if answer is None:
            answer = self._forward(body)
            if method == "API.getBulkRequest":
                answer = self._with_canned(params, answer)
        status, payload = answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> Answer:
        headers = {name: value for name in ("Content-Type", "Authorization")
                   if (value := self.headers.get(name))}  # fmt: skip
        request = urllib.request.Request(self.server.upstream, data=body, headers=headers)
        try:
            with self.server.opener.open(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _with_canned(self, params: dict[str, str], answer: Answer) -> Answer:
        """A bulk request's answers, with the canned ones put in for their methods."""
        status, payload = answer
        if status != 200:
            return answer
        answers = json.loads(payload)
        for index in range(len(answers)):
            sub = dict(parse_qsl(params.get(f"urls[{index}]", "")))
            canned = self.server.answers.get(sub.get("method", ""))
            if canned is not None:
                answers[index] = json.loads(canned[1])
        return 200, json.dumps(answers, ensure_ascii=False).encode()


class ShapeServer:
    """A tiny Matomo stand-in on 127.0.0.1: canned answers for some API methods (shapes the
    simulator never produces), every other request forwarded to the simulator."""

    def __init__(self, upstream: str, answers: dict[str, Answer]) -> None:
        self._server = _ShapeServer(upstream, answers)
        self.url = f"http://{LOCALHOST}:{self._server.server_address[1]}/index.php"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _json(value: Any) -> Answer:
    return 200, json.dumps(value, ensure_ascii=False).encode()


def _visits(sim: MatomoSimulator, count: int = 3) -> list[dict[str, Any]]:
    return sim.expected_visits(1, INPUT_DAY)[:count]


def _live(build: Callable[[list[dict[str, Any]]], Any], count: int = 3) -> AnswersFor:
    def answers(sim: MatomoSimulator) -> dict[str, Answer]:
        return {LIVE: _json(build(_visits(sim, count)))}

    return answers


def _fixed(method: str, answer: Answer) -> AnswersFor:
    return lambda _sim: {method: answer}


def _without(key: str) -> Callable[[list[dict[str, Any]]], Any]:
    def build(visits: list[dict[str, Any]]) -> Any:
        visits[1].pop(key, None)
        return visits

    return build


def _with_id(value: Any) -> Callable[[list[dict[str, Any]]], Any]:
    def build(visits: list[dict[str, Any]]) -> Any:
        visits[0]["idVisit"] = value
        return visits

    return build


def _dimensions(*entries: tuple[Any, str, str]) -> Answer:
    return _json([{"idcustomdimension": dim_id, "idsite": "1", "name": name, "index": "1",
                   "scope": scope, "active": True, "extractions": [], "case_sensitive": True}
                  for dim_id, name, scope in entries])  # fmt: skip


def _odd_keys(visits: list[dict[str, Any]]) -> Any:
    for visit in visits:
        visit.update({"ключ": "значение", "😀": ["ü", "\u2028"], "clé vide": "", "日本": 1})
    return visits


def _huge_numbers(visits: list[dict[str, Any]]) -> Any:
    for visit in visits:
        visit.update({"visitDuration": 2**63 - 1, "revenue": 1e308, "events": -(2**63)})
    return visits


def _id_as_text(visits: list[dict[str, Any]]) -> Any:
    for visit in visits:
        visit["idVisit"] = str(visit["idVisit"])  # Matomo before 5 answers ids as strings
    return visits


def _chmod_unreadable(root: Path) -> None:
    (root / "data" / "filterdate1.txt").chmod(0)


def _day_is_directory(root: Path) -> None:
    (root / "data" / "filterdate1.txt").mkdir(parents=True)


def _offset_is_directory(root: Path) -> None:
    (root / "data" / "last_filter_offset1.txt").mkdir(parents=True)


def _symlink_loop(root: Path) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "filterdate1.txt").symlink_to("filterdate1.txt")


def _blocker_file(root: Path) -> None:
    (root / "blocker").write_text("a regular file where the checkpoint directory should be\n")


def _binary_ini(root: Path) -> None:
    (root / "parm" / "wa7_conf.ini").write_bytes(b"START_DATE: 2024-03-01\n\xff\xfe\x00garbage\n")


def _garbage_ini(root: Path) -> None:
    with (root / "parm" / "wa7_conf.ini").open("a", encoding="utf-8") as handle:
        handle.write("this line is neither a key nor a section\n")


def _binary_env(root: Path) -> None:
    with (root / "parm" / "wa7.env").open("ab") as handle:
        handle.write(b'CLUSTERID="\xff\xfe"\n')


@dataclass(frozen=True)
class BadInput:
    """One bad (or odd) input: what to set up, and the error line it must give."""

    name: str
    category: str  # config | checkpoint | matomo | value | valid
    expect: str  # text of the error lines (or, for a valid input, of a message sent)
    code: int = 1
    values: tuple[tuple[str, str], ...] = ()  # parm overrides ("{root}" = the case's dir)
    args: tuple[str, ...] = ()  # the command, when not `run --run-date 2024-03-06`
    files: tuple[tuple[str, bytes], ...] = ()  # checkpoint files (in data/) before the run
    prepare: Prepare | None = None  # anything else, once parm/ and data/ exist
    answers: AnswersFor | None = None  # canned Matomo answers (served by a ShapeServer)
    unreadable: bool = False  # needs a file its owner cannot read (root: caps dropped)
    timeout: float = 120
    bug: str | None = None  # a known bug in src: this case fails today (xfail in the suite)

    @property
    def valid(self) -> bool:
        return self.category == "valid"


def _config(name: str, key: str, value: str, expect: str | None = None) -> BadInput:
    return BadInput(name, "config", expect or key, code=2, values=((key, value),))


def _checkpoint(name: str, expect: str, day: bytes | None, offset: bytes | None,
                **kwargs: Any) -> BadInput:  # fmt: skip
    files = [("filterdate1.txt", day), ("last_filter_offset1.txt", offset)]
    present = tuple((path, content) for path, content in files if content is not None)
    return BadInput(name, "checkpoint", expect, files=present, **kwargs)


def _matomo(name: str, expect: str, answers: AnswersFor, **kwargs: Any) -> BadInput:
    return BadInput(name, "matomo", expect, files=INPUT_CHECKPOINT, answers=answers, **kwargs)


BAD_INPUTS: tuple[BadInput, ...] = (
    # configuration values (exit 2, one `config:` line naming the key, nothing touched)
    _config("limit-above-max", "MATOMO_FILTER_LIMIT", "100001"),
    _config("limit-in-exponent-form", "MATOMO_FILTER_LIMIT", "1e3"),
    _config("site-zero", "MATOMO_ID_SITE", "0"),
    _config("site-negative", "MATOMO_ID_SITE", "-3"),
    _config("start-date-fullwidth-digits", "START_DATE", "２０２４-０３-０１"),
    _config("delivery-timeout-below-1s", "KAFKA_DELIVERY_TIMEOUT_MS", "999"),
    _config("linger-negative", "KAFKA_LINGER_MS", "-1"),
    _config("compression-unknown", "KAFKA_COMPRESSION", "brotli"),
    _config("log-format-unknown", "LOG_FORMAT", "xml"),
    _config("metrics-file-in-missing-dir", "METRICS_TEXTFILE", "/no/such/dir/matomo.prom"),
    _config("pushgateway-with-credentials", "METRICS_PUSHGATEWAY", "http://u:pw@127.0.0.1:9"),
    _config("retries-above-max", "MATOMO_MAX_RETRIES", "51"),
    _config("backoff-nan", "MATOMO_RETRY_BACKOFF", "nan"),
    _config("concurrency-zero", "MATOMO_MAX_CONCURRENCY", "0"),
    _config("api-url-with-credentials", "MATOMO_API_URL", "http://u:pw@127.0.0.1:9/index.php"),
    BadInput("same-checkpoint-prefixes", "config", "must differ", code=2,
             values=(("FILE_PATH_LAST_OFFSET", "{root}/data/cp"),
                     ("FILE_PATH_FILTERDATE", "{root}/data/cp"))),
    BadInput("ini-invalid-utf8", "config", "cannot be read", code=2, prepare=_binary_ini),
    BadInput("ini-garbage-line", "config", "is not `KEY: value`", code=2,
             prepare=_garbage_ini),
    BadInput("env-invalid-utf8", "config", "cannot be read", code=2, prepare=_binary_env),
    BadInput("parm-dir-is-a-file", "config", "does not exist", code=2,
             args=("run", "--parm-dir", "{root}/parm/wa7.env")),
    # odd values that pass validation
    BadInput("site-id-beyond-64-bits", "value", "lists no such site",
             values=(("MATOMO_ID_SITE", "99999999999999999999999"),)),
    BadInput("kafka-servers-garbage", "value", "Kafka unreachable",
             values=(("KAFKA_SERVERS", ",, ,127.0.0.1:99999"), ("KAFKA_CONNECT_TIMEOUT", "1"))),
    # This case and the next four were bugs at 7cdce68 (an internal error, or a hang for
    # connect-timeout-infinite), like offset-superscript-digit, offset-beyond-64-bits and
    # day-in-the-future below (an internal error, a day silently skipped, a site stuck).
    BadInput("run-date-year-1", "value", "--run-date", code=2,
             args=("run", "--run-date", "0001-01-01")),
    BadInput("matomo-timeout-infinite", "value", "MATOMO_TIMEOUT", code=2,
             values=(("MATOMO_TIMEOUT", "inf"),)),
    BadInput("requests-per-minute-tiny", "value", "MATOMO_MAX_REQUESTS_PER_MINUTE", code=2,
             values=(("MATOMO_MAX_REQUESTS_PER_MINUTE", "1e-300"),)),
    BadInput("delivery-timeout-above-int32", "value", "KAFKA_DELIVERY_TIMEOUT_MS", code=2,
             values=(("KAFKA_DELIVERY_TIMEOUT_MS", "99999999999999999999"),)),
    BadInput("connect-timeout-infinite", "value", "KAFKA_CONNECT_TIMEOUT", code=2, timeout=5,
             values=(("KAFKA_CONNECT_TIMEOUT", "inf"), ("KAFKA_SERVERS", "127.0.0.1:1"))),
    # checkpoint files (exit 1, the file named, nothing touched, nothing sent)
    _checkpoint("day-garbage", "does not hold a YYYY-MM-DD day", b"garbage\n", b"3\n"),
    _checkpoint("day-empty", "does not hold a YYYY-MM-DD day", b"", b"3\n"),
    _checkpoint("day-impossible", "invalid day", b"2024-02-30\n", b"0\n"),
    _checkpoint("day-fullwidth-digits", "invalid day", "２０２４-０３-０２\n".encode(), b"0\n"),
    _checkpoint("day-with-bom", "does not hold a YYYY-MM-DD day", "\ufeff2024-03-02\n".encode(),
                b"0\n"),
    _checkpoint("day-invalid-utf8", "is not UTF-8 text", b"\xff\xfe2024-03-02\n", b"0\n"),
    _checkpoint("offset-negative", "does not hold a number of visits", b"2024-03-02\n", b"-5\n"),
    _checkpoint("offset-decimal", "does not hold a number of visits", b"2024-03-02\n", b"12.5\n"),
    _checkpoint("offset-empty", "does not hold a number of visits", b"2024-03-02\n", b""),
    _checkpoint("day-is-a-directory", "cannot be read", None, b"0\n",
                prepare=_day_is_directory),
    _checkpoint("offset-is-a-directory", "cannot be read", b"2024-03-02\n", None,
                prepare=_offset_is_directory),
    _checkpoint("day-symlink-loop", "is a symbolic link", None, b"0\n", prepare=_symlink_loop),
    _checkpoint("day-unreadable-permissions", "Permission denied", b"2024-03-02\n", b"0\n",
                prepare=_chmod_unreadable, unreadable=True),
    BadInput("checkpoint-dir-is-a-file", "checkpoint", "cannot create the lock file",
             values=(("FILE_PATH_FILTERDATE", "{root}/blocker/filterdate"),
                     ("FILE_PATH_LAST_OFFSET", "{root}/blocker/last_filter_offset")),
             prepare=_blocker_file),
    _checkpoint("offset-superscript-digit", "checkpoint", b"2024-03-02\n", "²\n".encode()),
    _checkpoint("offset-beyond-64-bits", "checkpoint", b"2024-03-02\n", b"100000000000000000000\n"),
    _checkpoint("day-in-the-future", "checkpoint", b"2999-01-01\n", b"0\n"),
    BadInput("boundary-garbage", "checkpoint", "boundary is unreadable",
             files=(*INPUT_CHECKPOINT, ("filterdate1.boundary", b"{garbage\n"))),
    BadInput("boundary-second-as-text", "checkpoint", "boundary is unreadable",
             files=(*INPUT_CHECKPOINT, ("filterdate1.boundary",
                    b'{"day":"2024-03-02","offset":10,"last_action":"noon","ids":[]}'))),
    # Matomo answers of the wrong shape (exit 1, the site's error named, nothing touched)
    _matomo("live-dict-not-list", "expected a JSON list",
            _live(lambda visits: {str(i): v for i, v in enumerate(visits)})),
    _matomo("live-list-of-numbers", "expected a JSON list",
            _fixed(LIVE, _json([1, 2, 3]))),
    _matomo("live-null", "expected a JSON list", _fixed(LIVE, _json(None))),
    _matomo("live-visit-without-idvisit", "a visit has no valid idVisit",
            _live(_without("idVisit"))),
    _matomo("live-idvisit-beyond-64-bits", "a visit has no valid idVisit",
            _live(_with_id(10**30))),
    _matomo("live-idvisit-float", "a visit has no valid idVisit", _live(_with_id(1.5))),
    _matomo("live-idvisit-boolean", "a visit has no valid idVisit", _live(_with_id(True))),
    _matomo("live-visit-without-last-action-time", "no valid lastActionTimestamp",
            _live(_without("lastActionTimestamp"))),
    _matomo("live-page-longer-than-limit", f"visits for filter_limit={LIMIT}",
            _live(lambda visits: visits, count=LIMIT + 1)),
    _matomo("live-html-200", "truncated or invalid JSON",
            _fixed(LIVE, (200, b"<html><body>Maintenance</body></html>"))),
    _matomo("live-empty-200", "truncated or invalid JSON", _fixed(LIVE, (200, b""))),
    _matomo("live-html-404", "HTTP 404 (not a Matomo answer)",
            _fixed(LIVE, (404, b"<html>Not Found</html>"))),
    _matomo("dimension-named-like-a-field", "already a Matomo field",
            _fixed("CustomDimensions.getConfiguredCustomDimensions",
                   _dimensions(("1", "userId", "visit"), ("2", "Page Type", "action")))),
    _matomo("action-dimension-named-url", "already a Matomo field",
            _fixed("CustomDimensions.getConfiguredCustomDimensions",
                   _dimensions(("1", "Plan", "visit"), ("2", "url", "action")))),
    _matomo("dimensions-with-one-name", "two visit-scope custom dimensions are named",
            _fixed("CustomDimensions.getConfiguredCustomDimensions",
                   _dimensions(("1", "Plan", "visit"), ("3", "Plan", "visit")))),
    _matomo("dimension-empty-name", "has an empty name",
            _fixed("CustomDimensions.getConfiguredCustomDimensions",
                   _dimensions(("1", "  ", "visit")))),
    _matomo("dimension-without-id", "lacks idcustomdimension/name/scope",
            _fixed("CustomDimensions.getConfiguredCustomDimensions", _json([{"name": "x"}]))),
    _matomo("dimensions-dict", "expected a JSON list",
            _fixed("CustomDimensions.getConfiguredCustomDimensions", _json({"1": "Plan"}))),
    _matomo("goal-without-id", "lacks idgoal/name",
            _fixed("Goals.getGoals", _json([{"name": "Thank-you page"}]))),
    _matomo("site-unknown-timezone", "unknown timezone",
            _fixed("SitesManager.getSitesWithAtLeastViewAccess",
                   _json([{"idsite": 1, "name": "x", "timezone": "Mars/Olympus_Mons"}]))),
    _matomo("site-without-timezone", "a site has no idsite or timezone",
            _fixed("SitesManager.getSitesWithAtLeastViewAccess",
                   _json([{"idsite": 1, "name": "x"}]))),
    _matomo("site-not-listed", "MATOMO_API_TOKEN cannot view site 1",
            _fixed("SitesManager.getSitesWithAtLeastViewAccess",
                   _json([{"idsite": 2, "name": "x", "timezone": "UTC"}]))),
    _matomo("sites-as-object", "expected a JSON list of sites",
            _fixed("SitesManager.getSitesWithAtLeastViewAccess", _json({"1": "UTC"}))),
    _matomo("bulk-answer-too-short", "expected a JSON list of",
            _fixed("API.getBulkRequest", _json([[]]))),
    _matomo("version-as-list", "unexpected answer shape",
            _fixed("API.getMatomoVersion", _json(["5.0.2"]))),
    BadInput("all-sites-bad-entry", "matomo", "an entry is not a site id",
             values=(("MATOMO_ID_SITE", "all"),), files=INPUT_CHECKPOINT,
             answers=_fixed("SitesManager.getSitesIdWithAtLeastViewAccess", _json([1, "x"]))),
    BadInput("all-sites-none", "matomo", "the token can view no site",
             values=(("MATOMO_ID_SITE", "all"),), files=INPUT_CHECKPOINT,
             answers=_fixed("SitesManager.getSitesIdWithAtLeastViewAccess", _json([]))),
    BadInput("all-sites-dict", "matomo", "expected a JSON list",
             values=(("MATOMO_ID_SITE", "all"),), files=INPUT_CHECKPOINT,
             answers=_fixed("SitesManager.getSitesIdWithAtLeastViewAccess", _json({"1": 1}))),
    # odd but valid: must go through unchanged (exit 0, the value found in a message)
    BadInput("live-unicode-keys", "valid", '"ключ":"значение"', code=0, files=INPUT_CHECKPOINT,
             answers=_live(_odd_keys)),
    BadInput("live-huge-numbers", "valid", '"visitDuration":9223372036854775807', code=0,
             files=INPUT_CHECKPOINT, answers=_live(_huge_numbers)),
    BadInput("live-idvisit-as-text", "valid", "matomo.day", code=0, files=INPUT_CHECKPOINT,
             answers=_live(_id_as_text)),
    BadInput("offset-with-spaces-and-crlf", "valid", "matomo.day", code=0,
             files=(("filterdate1.txt", b" 2024-03-02 \r\n"),
                    ("last_filter_offset1.txt", b"  10 \r\n"))),
    BadInput("clusterid-unicode", "valid", "matomo.day", code=0, files=INPUT_CHECKPOINT,
             values=(("CLUSTERID", "réseau-☃"),)),
)  # fmt: skip


@dataclass
class InputContext:
    """What the bad-input cases share: one simulator, one topic and its reader."""

    bootstrap: str
    workdir: Path
    collector: Collector
    sim: MatomoSimulator
    topic: str
    reader: TopicReader

    @classmethod
    def open(cls, bootstrap: str, workdir: Path, collector: Collector) -> InputContext:
        days = {f"2024-03-0{d}": 25 for d in range(1, 6)}
        sim = simulator(
            [
                SimSite(idsite=1, name="inputs", timezone="UTC", visits=days),
                SimSite(idsite=2, name="other", timezone="Asia/Tokyo", visits=days),
            ]
        )
        Dataset.build(sim, (1, 2), [date(2024, 3, d) for d in range(1, 7)], collector)
        topic = create_topic(bootstrap)
        return cls(bootstrap, workdir, collector, sim, topic, TopicReader(bootstrap, topic))

    def close(self) -> None:
        self.reader.close()
        self.sim.stop()
        delete_topic(self.bootstrap, self.topic)


@dataclass
class InputOutcome:
    case: BadInput
    result: CliResult | None
    problems: list[str]
    skipped: str | None = None

    def describe(self) -> str:
        where = f"{self.case.name} ({self.case.category})"
        tail = self.result.tail() if self.result else ""
        return f"{where}: " + "; ".join(self.problems) + f"\n--- output tail ---\n{tail}"


def _drop_read_override() -> list[str] | None:
    """A command prefix under which root cannot read a file its mode forbids (root ignores
    file modes through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: drop both); [] when not root;
    None when that is impossible here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _record_text(record: Record) -> str:
    headers = " ".join(f"{k}={v.decode(errors='replace')}" for k, v in record.headers)
    return f"{record.key} {record.value.decode(errors='replace')} {headers}"


def run_bad_input(case: BadInput, ctx: InputContext) -> InputOutcome:
    """Runs one case in a directory of its own and checks: exit code, one clear error line
    (config: lines for configuration), the expected reason, no traceback, checkpoints
    byte-identical (or still absent), nothing sent. Valid inputs: exit 0, value in a message."""
    root = ctx.workdir / f"input-{case.name}"
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"

    def fill(text: str) -> str:
        return text.replace("{root}", str(root))

    prefix: list[str] = []
    if case.unreadable:
        found = _drop_read_override()
        if found is None:
            return InputOutcome(case, None, [], skipped="root, and no setpriv to drop its "
                                "read override: a mode-000 file stays readable")  # fmt: skip
        prefix = found
    server = ShapeServer(ctx.sim.url, case.answers(ctx.sim)) if case.answers else None
    try:
        url = server.url if server else ctx.sim.url
        overrides = {"MATOMO_MAX_RETRIES": "1"}
        overrides.update((key, fill(value)) for key, value in case.values)
        values = parm_values(data, url, ctx.topic, ctx.bootstrap, **overrides)
        parm = write_parm(root / "parm", values)
        if case.files:
            data.mkdir(parents=True, exist_ok=True)
            for name, content in case.files:
                (data / name).write_bytes(content)
        if case.prepare is not None:
            case.prepare(root)
        before = snapshot(root)
        ctx.reader.catch_up()
        sent_before = ctx.reader.total
        args = [fill(arg) for arg in case.args] or ["run", "--run-date", "2024-03-06"]
        if "--parm-dir" not in args:
            args += ["--parm-dir", str(parm)]
        result = run_cli(ctx.collector, *args, timeout=case.timeout, prefix=prefix)
        if case.unreadable:
            (data / "filterdate1.txt").chmod(0o644)
        after = snapshot(root)
        records = ctx.reader.catch_up()
        ctx.collector.add_messages(records)
    finally:
        if server is not None:
            server.stop()
    sent = ctx.reader.total - sent_before
    problems: list[str] = []
    if result.code != case.code:
        problems.append(f"exit code {result.code}, expected {case.code}")
    if "Traceback" in result.output or "internal error" in result.output:
        problems.append("a traceback or an internal error instead of a clear error")
    if case.valid:
        if not any(case.expect in _record_text(record) for record in records):
            problems.append(f"no message carries {case.expect!r}")
        return InputOutcome(case, result, problems)
    if not result.last_line.startswith(ERROR_PREFIX):
        problems.append(f"last line is not '{ERROR_PREFIX} ...': {result.last_line[:120]!r}")
    reasons = [line for line in result.lines if line.startswith("matomo-kafka:")]
    if case.category == "config":
        reasons = [line for line in reasons if line.startswith("matomo-kafka: config:")]
        if not reasons:
            problems.append("no 'matomo-kafka: config:' line")
    if not any(case.expect in line for line in reasons):
        problems.append(f"no matomo-kafka: line says {case.expect!r}")
    if before != after:
        changed = sorted(set(before) ^ set(after) | {k for k in before if before[k] !=
                                                      after.get(k)})  # fmt: skip
        problems.append(f"checkpoint files changed: {changed}")
    if sent:
        problems.append(f"{sent} message(s) sent")
    return InputOutcome(case, result, problems)
