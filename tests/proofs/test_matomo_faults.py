"""Matomo faults over real HTTP: retried when transient, clear and contained when not; in
every case nothing lost and checkpoints never ahead of what Kafka acknowledged."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import Fault, MatomoSimulator
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.cli import run_cli
from support.kafka import read_topic
from support.parm import base_values, write_parm
from support.runs import two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIMIT = 10
RUN_DATE = "2024-03-06"
LIVE = "Live.getLastVisitsDetails"


def all_keys(simulator: MatomoSimulator, sites: tuple[int, ...] = (1, 2)) -> set[str]:
    return {
        f"{idsite}:{int(visit['idVisit'])}"
        for idsite in sites
        for day in range(1, 6)
        for visit in simulator.expected_visits(idsite, date(2024, 3, day))
    }


def cursor(tmp_path: Path, idsite: int) -> Cursor | None:
    data = tmp_path / "data"
    return CheckpointStore(str(data / "filterdate"), str(data / "last_filter_offset")).load(idsite)


def run(tmp_path: Path, simulator: MatomoSimulator, topic: str, **overrides: str) -> Any:
    values = base_values(tmp_path, simulator.url, topic, **overrides)
    return run_cli("run", "--parm-dir", str(write_parm(tmp_path / "parm", **values)),
                   "--run-date", RUN_DATE)  # fmt: skip


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="status", method=LIVE, status=500, times=2),
        Fault(kind="status", method=LIVE, status=503, times=1, offset=10),
        Fault(kind="rate_limit", method=LIVE, retry_after=1, times=1),
        Fault(kind="delay", method=LIVE, delay_s=3.0, times=1, offset=10),
        Fault(kind="truncate", method=LIVE, times=2),
        Fault(kind="corrupt_encoding", method=LIVE, times=2),
        Fault(kind="disconnect", method=LIVE, times=1),
        Fault(
            kind="status", method="SitesManager.getSitesWithAtLeastViewAccess", status=502, times=1
        ),
        Fault(kind="status", method="Goals.getGoals", status=502, times=1),  # in a bulk request
        Fault(kind="corrupt_encoding", method="Goals.getGoals", times=1),  # the whole bulk
    ],
    ids=[
        "500x2",
        "503-mid-day",
        "429-retry-after",
        "timeout",
        "truncated",
        "corrupt-encoding",
        "disconnect",
        "502-sites-info",
        "502-metadata",
        "corrupt-encoding-metadata",
    ],
)
def test_transient_faults_are_retried(
    tmp_path: Path, topic: str, sim_factory: Any, fault: Fault
) -> None:
    simulator = sim_factory(two_sites(LIMIT), faults=[fault])
    result = run(tmp_path, simulator, topic, MATOMO_TIMEOUT="1.5")
    assert result.code == 0, result.output
    assert "retry" in result.stderr
    counts = Counter(record.key for record in read_topic(topic))
    assert set(counts) == all_keys(simulator)
    assert max(counts.values()) == 1


def test_retry_after_is_honoured(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    fault = Fault(kind="rate_limit", method=LIVE, retry_after=2, times=1)
    simulator = sim_factory(two_sites(LIMIT), faults=[fault])
    assert run(tmp_path, simulator, topic).code == 0
    live = [r for r in simulator.requests if r["method"] == LIVE]
    limited = next(r for r in live if r["status"] == 429)
    retried = next(r for r in live if r["params"] == limited["params"] and r is not limited)
    assert retried["time"] - limited["time"] >= 1.9


def test_persistent_500_stops_with_checkpoint_at_last_acked_page(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    # 2024-03-04 of site 1 has 11 visits: page 1 (offset 0) works, offset 10 always fails.
    fault = Fault(kind="status", method=LIVE, status=500, times=-1, idsite=1,
                  date="2024-03-04", offset=10)  # fmt: skip
    simulator = sim_factory(two_sites(LIMIT), faults=[fault])
    result = run(tmp_path, simulator, topic, MATOMO_MAX_RETRIES="2")
    assert result.code == 1
    assert "still failing after 3 attempts" in result.stderr
    assert "site 1" in result.stderr
    stopped = cursor(tmp_path, 1)
    assert stopped is not None and (stopped.day, stopped.offset) == (date(2024, 3, 4), 10)
    assert stopped.last_action is not None, "keyset paging checkpoints the page boundary"
    assert cursor(tmp_path, 2) == Cursor(date(2024, 3, 6), 0)  # the other site went on

    simulator.clear_faults()
    rerun = run(tmp_path, simulator, topic)
    assert rerun.code == 0, rerun.output
    counts = Counter(record.key for record in read_topic(topic))
    assert set(counts) == all_keys(simulator)
    assert max(counts.values()) == 1


def test_a_site_whose_answers_cannot_be_decoded_fails_alone(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    """Every Live answer of site 2 labelled gzip but not compressed (a proxy's glitch that
    lasts): retried, then site 2 fails alone with a clear line; site 1 is read to its end
    (this escaped the client as a raw httpx.DecodingError and ended the whole run)."""
    fault = Fault(kind="corrupt_encoding", method=LIVE, idsite=2, times=-1)
    simulator = sim_factory(two_sites(LIMIT), faults=[fault])
    result = run(tmp_path, simulator, topic, MATOMO_MAX_RETRIES="1", MATOMO_RETRY_BACKOFF="0.1")
    assert result.code == 1, result.output
    assert "site 2" in result.stderr and "could not be decoded" in result.stderr
    assert "still failing after 2 attempts" in result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 6), 0)
    assert cursor(tmp_path, 2) is None
    counts = Counter(record.key for record in read_topic(topic))
    assert set(counts) == all_keys(simulator, (1,)) and max(counts.values()) == 1


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"faults": [Fault(kind="envelope", method=LIVE, idsite=1, times=-1,
                           message="Mysql error: table log_visit is marked as crashed")]},
         "table log_visit is marked as crashed"),
        ({"denied_sites": [1]}, "MATOMO_API_TOKEN cannot view site 1: give the token view "
         "access to it in Matomo, or remove site 1 from MATOMO_ID_SITE"),
        ({"faults": [Fault(kind="envelope",
                           method="CustomDimensions.getConfiguredCustomDimensions", idsite=1,
                           times=-1, message="An unexpected website was found in the "
                           "request: website id was set to '1' .")]},
         "unexpected website"),
    ],
    ids=["error-envelope", "site-denied", "site-vanished"],
)  # fmt: skip
def test_site_level_errors_fail_that_site_only(
    tmp_path: Path, topic: str, sim_factory: Any, setup: dict[str, Any], message: str
) -> None:
    simulator = sim_factory(two_sites(LIMIT), **setup)
    result = run(tmp_path, simulator, topic)
    assert result.code == 1
    assert message in result.stderr
    assert "site 1" in result.stderr
    assert cursor(tmp_path, 1) is None
    assert cursor(tmp_path, 2) == Cursor(date(2024, 3, 6), 0)
    keys = {record.key for record in read_topic(topic)}
    assert keys == all_keys(simulator, (2,))


def test_unknown_site(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    result = run(tmp_path, simulator, topic, MATOMO_ID_SITE="99,1")
    assert result.code == 1
    assert "site 99: MATOMO_API_TOKEN cannot view site 99: give the token" in result.stderr
    assert cursor(tmp_path, 1) == Cursor(date(2024, 3, 6), 0)


def test_bad_token_stops_at_once_without_retrying(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    result = run(tmp_path, simulator, topic, MATOMO_API_TOKEN="not-the-token")
    assert result.code == 1
    assert "token refused" in result.stderr
    assert "not-the-token" not in result.output
    assert len(simulator.requests) == 1, "a refused token must not be retried"
    assert cursor(tmp_path, 1) is None and cursor(tmp_path, 2) is None
    assert read_topic(topic) == []


def test_token_travels_in_the_post_body_only(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT), post_only_token=True)
    assert run(tmp_path, simulator, topic).code == 0
    assert simulator.requests
    assert all(r["token_in"] == "body" and r["verb"] == "POST" for r in simulator.requests)


def test_gateway_basic_auth(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT), basic_auth=("spsuser", "sps-secret-77"))
    refused = run(tmp_path, simulator, topic)
    assert refused.code == 1 and "gateway" in refused.stderr
    ok = run(tmp_path, simulator, topic, MATOMO_SPS_USER="spsuser", MATOMO_SPS_MDP="sps-secret-77")
    assert ok.code == 0, ok.output
    assert "sps-secret-77" not in ok.output + refused.output


def test_wrong_shape_answer(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    fault = Fault(kind="envelope", method="Goals.getGoals", idsite=2, times=-1, message="x")
    simulator = sim_factory(two_sites(LIMIT), faults=[fault])
    result = run(tmp_path, simulator, topic)
    assert result.code == 1
    assert "site 2" in result.stderr
    assert cursor(tmp_path, 2) is None
