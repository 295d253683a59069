"""Reliability when Kafka goes away (issue #3, at-least-once), on a broker of this module's own
(scripts/kafka-local.sh with its own KAFKA_LOCAL_DIR and free ports; the shared broker is never
stopped): stopped (SIGTERM) or killed (SIGKILL) mid-run, the run fails within
KAFKA_DELIVERY_TIMEOUT_MS + 30 s (KafkaSink.wait's deadline) with one error line and exit 1,
and a rerun after the restart loses nothing; restarted within the delivery timeout, the run
completes by itself. The proofs are in tests/support/reliability.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import reliability as rel
from support.cli import CLI_OUTPUTS

pytestmark = [pytest.mark.kafka, pytest.mark.simulator, pytest.mark.slow]

CONNECT_TIMEOUT = 3.0  # KAFKA_CONNECT_TIMEOUT of the proofs' parm


@pytest.fixture(scope="module")
def own_broker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rel.OwnBroker]:
    """Needs the shared broker only for its jar cache (linked, not copied)."""
    broker = rel.OwnBroker(tmp_path_factory.mktemp("own-broker"))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.mark.parametrize("mode", ["stop", "kill"])
def test_broker_lost_mid_run_fails_in_bounded_time_and_rerun_loses_nothing(
    own_broker: rel.OwnBroker, tmp_path: Path, mode: str
) -> None:
    collector = rel.Collector()
    try:
        figures = rel.broker_outage_proof(own_broker, tmp_path, collector, mode,
                                          delivery_timeout_ms=10_000,
                                          check_unreachable=mode == "stop")  # fmt: skip
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    assert figures.exit_code == 1
    assert figures.error_line.startswith("matomo-kafka: error: Kafka"), figures.error_line
    assert figures.failed_after <= figures.bound, (
        f"the run took {figures.failed_after:.1f}s to fail; bound {figures.bound:.0f}s"
    )
    if mode == "stop":
        assert figures.unreachable_after is not None
        assert figures.unreachable_after <= CONNECT_TIMEOUT + 10
        assert "Kafka unreachable" in figures.unreachable_line
    assert figures.lost == 0 and figures.visits_expected > 0
    assert figures.duplicated <= 2 * rel.LIMIT  # one failed run: at most a page per site
    rel.assert_clean(collector)


@pytest.mark.parametrize("mode", ["stop", "kill"])
def test_broker_restarted_within_the_delivery_timeout_run_completes(
    own_broker: rel.OwnBroker, tmp_path: Path, mode: str
) -> None:
    collector = rel.Collector()
    try:
        figures = rel.broker_restart_proof(own_broker, tmp_path, collector, mode,
                                           delivery_timeout_ms=60_000)  # fmt: skip
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    if figures.exit_code != 0 and figures.downtime > figures.delivery_timeout - 5:
        pytest.skip(f"the broker took {figures.downtime:.0f}s to restart on this machine")
    assert figures.exit_code == 0, f"the run failed: {figures.error_line}"
    assert figures.lost == 0 and figures.visits_expected > 0
    assert figures.duplicated <= 2 * rel.LIMIT
    rel.assert_clean(collector)
