"""Shared fixtures: the real local Kafka broker, the Matomo simulator, parm directories and
a CLI runner. Nothing here mocks Kafka: delivery tests read the real topic back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from matomo_kafka.config.settings import ALL_KEYS
from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import reliability as rel  # bench/: topic helpers shared with the proofs

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
#: The broker's SASL_SSL and mutual-TLS listeners, and the throwaway CA that
#: scripts/kafka-local.sh made for them (absolute, or relative to the cwd, as the script has it).
KAFKA_SSL_PORT = int(os.environ.get("KAFKA_SSL_PORT", str(KAFKA_PORT + 3)))
KAFKA_MTLS_PORT = int(os.environ.get("KAFKA_MTLS_PORT", str(KAFKA_PORT + 4)))
KAFKA_SSL_DIR = Path(os.environ.get("KAFKA_LOCAL_DIR") or REPO / ".kafka-local").absolute() / "ssl"
TOKEN = "sim-token-5f1e9c0b7a"
SALT = "sel-de-guerande-3a9d"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Starts the real broker (idempotent) with scripts/kafka-local.sh; fails if it cannot."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "kafka-local.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"local Kafka broker did not start:\n{result.stdout}\n{result.stderr}")
    return BOOTSTRAP


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A fresh 3-partition topic per test, so tests never see each other's messages; ready
    (all partitions in the metadata), so a run started at once never sees "unknown topic"."""
    return rel.create_topic(kafka_bootstrap, prefix="test.visits")


@dataclass
class Record:
    key: str
    value: bytes
    headers: dict[str, bytes]
    partition: int
    timestamp: tuple[int, int] = (0, 0)  # (TIMESTAMP_CREATE_TIME or ..., milliseconds)


def read_topic(topic: str, bootstrap: str = BOOTSTRAP, **extra: Any) -> list[Record]:
    """Every message of the topic, read from the beginning up to the current high marks."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in partitions}  # fmt: skip
        todo = {p for p in partitions if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Record] = []
        idle = 0
        while todo and idle < 30:
            message = consumer.poll(1.0)
            if message is None:
                idle += 1
                continue
            if message.error():
                raise RuntimeError(message.error().str())
            idle = 0
            records.append(
                Record(
                    key=message.key().decode(),
                    value=message.value(),
                    headers={k: v for k, v in (message.headers() or [])},
                    partition=message.partition(),
                    timestamp=message.timestamp(),
                )
            )
            if message.offset() + 1 >= ends[message.partition()]:
                todo.discard(message.partition())
        if todo:
            raise RuntimeError(f"could not read partitions {todo} of {topic} to the end")
        return records
    finally:
        consumer.close()


def read_records(topic: str, isolation: str = "read_committed") -> list[tuple[str, bytes | None]]:
    """(key, value) of every record a consumer with this isolation level gets, read up to each
    partition's high watermark (positions, not the last offset: transactional topics end with
    commit/abort markers that are never delivered)."""
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
    }
    consumer, probe = Consumer(config), Consumer({**config, "isolation.level": "read_uncommitted"})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), 30, cached=False)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        todo = {p for p in partitions if ends[p] > 0}
        records: list[tuple[str, bytes | None]] = []
        deadline = time.monotonic() + 60
        while todo:
            assert time.monotonic() < deadline, f"{topic}: partitions {todo} not read to the end"
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    raise RuntimeError(message.error().str())
                records.append((message.key().decode(), message.value()))
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return records
    finally:
        consumer.close()
        probe.close()


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., MatomoSimulator]]:
    started: list[MatomoSimulator] = []

    def make(
        sites: list[SimSite], tls: tuple[str, str] | None = None, **kwargs: Any
    ) -> MatomoSimulator:
        """`tls`: (cert, key) to serve HTTPS with (see the `certs` fixture)."""
        simulator = MatomoSimulator(SimConfig(token=TOKEN, sites=sites, **kwargs)).start(tls=tls)
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


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


def write_parm(directory: Path, **values: str) -> Path:
    """A parm/ directory in the seed's format: conf keys in the ini, the rest in wa7.env."""
    directory.mkdir(parents=True, exist_ok=True)
    conf_keys = {"START_DATE", "MATOMO_FILTER_LIMIT", "FILE_PATH_LAST_OFFSET",
                 "FILE_PATH_FILTERDATE", "COLONNE_ANNOMYSE", "SALAGE", "KAFKA_TOPIC"}  # fmt: skip
    ini = [f"{key}: {value}" for key, value in values.items() if key in conf_keys]
    env = [f'{key}="{value}"' for key, value in values.items() if key not in conf_keys]
    (directory / "wa7_conf.ini").write_text("\n".join(ini) + "\n", encoding="utf-8")
    (directory / "wa7.env").write_text("\n".join(env) + "\n", encoding="utf-8")
    return directory


def base_values(tmp_path: Path, simulator_url: str, topic: str, **overrides: str) -> dict[str, str]:
    values = {
        "START_DATE": "2024-03-01",
        "MATOMO_FILTER_LIMIT": "10",
        "FILE_PATH_LAST_OFFSET": str(tmp_path / "data" / "last_filter_offset"),
        "FILE_PATH_FILTERDATE": str(tmp_path / "data" / "filterdate"),
        "COLONNE_ANNOMYSE": "visitIp,visitorId,userId,actionDetails.url,actionDetails.subtitle",
        "SALAGE": SALT,
        "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": "1,2",
        "MATOMO_API_URL": simulator_url,
        "MATOMO_API_TOKEN": TOKEN,
        "KAFKA_SERVERS": BOOTSTRAP,
        "CLUSTERID": "TEST01",
        "MATOMO_RETRY_BACKOFF": "0.05",
        "MATOMO_RETRY_MAX_WAIT": "2",
        "MATOMO_TIMEOUT": "5",
        "KAFKA_CONNECT_TIMEOUT": "5",
    }
    values.update(overrides)
    return values


@dataclass(frozen=True)
class Certs:
    """Throwaway certificates of one test session (scripts/tls-cert.sh, i.e. openssl)."""

    ca: Path  # the "corporate" CA of the Matomo gateway (the simulator)
    server: tuple[str, str]  # (cert, key) signed by `ca`, SAN DNS:localhost,IP:127.0.0.1
    wrong_name: tuple[str, str]  # signed by `ca`, SAN DNS:gateway.example.invalid only
    unknown_ca: Path  # a CA that signed nothing anyone here serves


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Made once per session with openssl (no extra Python dependency: the local broker's
    certificates come from the same script, so openssl is needed anyway)."""
    where = tmp_path_factory.mktemp("certs")
    script = ["bash", str(REPO / "scripts" / "tls-cert.sh")]

    def make(*args: str) -> None:
        result = subprocess.run([*script, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            pytest.fail(f"tls-cert.sh {' '.join(args[:2])} failed:\n{result.stderr}")

    make("ca", str(where / "gateway-ca"), "matomo-kafka test gateway CA")
    make("ca", str(where / "unknown-ca"), "matomo-kafka test unknown CA")
    make("server", str(where / "server"), str(where / "gateway-ca"), "localhost",
         "DNS:localhost,IP:127.0.0.1")  # fmt: skip
    make("server", str(where / "wrong-name"), str(where / "gateway-ca"),
         "gateway.example.invalid", "DNS:gateway.example.invalid")  # fmt: skip
    server, wrong = (where / "server", where / "wrong-name")
    return Certs(ca=where / "gateway-ca.pem", server=(f"{server}.pem", f"{server}.key"),
                 wrong_name=(f"{wrong}.pem", f"{wrong}.key"),
                 unknown_ca=where / "unknown-ca.pem")  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any config key (KAFKA_PRODUCER_* included), so
    only parm/ counts."""
    env = {key: value for key, value in os.environ.items()
           if key not in ALL_KEYS and not key.startswith("KAFKA_PRODUCER_")}  # fmt: skip
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


#: Every CLI output of the session, scanned for secrets by test_secrets_never_printed.
CLI_OUTPUTS: list[str] = []


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> CliResult:
    result = subprocess.run(
        [sys.executable, "-m", "matomo_kafka.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )
    CLI_OUTPUTS.append(result.stdout + result.stderr)
    return CliResult(result.returncode, result.stdout, result.stderr)


def day(text: str) -> date:
    return date.fromisoformat(text)
