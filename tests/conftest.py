"""Fixtures of the whole suite: the real local Kafka broker, fresh topics, the Matomo simulator,
throwaway certificates; the markers each test must carry; and the secrets scan of every CLI
output. Nothing here mocks Kafka: delivery tests read the real topic back. The helpers are in
tests/support/ (shared with bench/); nothing here imports from bench/.

Layout: tests/unit needs nothing (no broker, no server, no network), tests/integration needs
the broker and/or the simulator over HTTP, tests/proofs holds kills, faults, bad inputs and
secrets. Markers: `kafka` (needs the broker), `simulator` (serves Matomo over HTTP), `slow`.
A test that asks for a broker or simulator fixture without its marker, or a unit test with
either, stops the session at collection (`check_markers`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite
from support.certs import Certs, make_certs
from support.cli import CLI_OUTPUTS
from support.kafka import BOOTSTRAP, create_topic, start_local_broker
from support.parm import TOKEN
from support.secrets import leaks

TESTS = Path(__file__).resolve().parent
#: Fixtures that need the broker (directly or not) and the marker they call for.
NEEDS = {"kafka_bootstrap": "kafka", "sim_factory": "simulator"}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Starts the real broker (idempotent) with scripts/kafka-local.sh; fails if it cannot."""
    result = start_local_broker()
    if result.returncode != 0:
        pytest.fail(f"local Kafka broker did not start:\n{result.stdout}\n{result.stderr}")
    return BOOTSTRAP


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A fresh 3-partition topic per test, so tests never see each other's messages; ready
    (all partitions in the metadata), so a run started at once never sees "unknown topic"."""
    return create_topic(kafka_bootstrap, prefix="test.visits")


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


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Made once per session with openssl (support/certs.py)."""
    try:
        return make_certs(tmp_path_factory.mktemp("certs"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def no_secret_in_cli_output() -> Iterator[None]:
    """Every CLI output a test collected (support.cli.CLI_OUTPUTS) is scanned for the known
    secrets (support/secrets.py) once the test is done, whatever its order in the session:
    a leak fails the test that printed it."""
    CLI_OUTPUTS.clear()
    yield
    found = leaks(CLI_OUTPUTS)
    CLI_OUTPUTS.clear()
    assert not found, f"a secret in the CLI output: {'; '.join(found[:10])}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """check_markers: `-m "not kafka"` must never reach the broker, and tests/unit nothing."""
    problems: list[str] = []
    unit = TESTS / "unit"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        marks = {mark.name for mark in item.iter_markers()}
        for fixture, marker in NEEDS.items():
            if fixture in fixtures and marker not in marks:
                problems.append(f"{item.nodeid}: uses {fixture} but is not marked {marker}")
        if item.path.is_relative_to(unit) and (marks & {"kafka", "simulator"} or
                                               fixtures & set(NEEDS)):  # fmt: skip
            problems.append(f"{item.nodeid}: a unit test needs nothing (no broker, no server)")
    if problems:
        raise pytest.UsageError("tests/conftest.py check_markers:\n  " + "\n  ".join(problems))
