"""Reliability under Matomo faults (issue #3, at-least-once): faults from the simulator (5xx,
429 + Retry-After, timeouts, truncated bodies, dropped connections, error envelopes, a site
vanishing mid-run, retries exhausted) spread over the requests of a run (seeded), rerun until
success. Nothing lost, nothing duplicated; transient faults alone do not even fail the run.
Over SASL/SCRAM, so the Kafka password is among the secrets scanned. The proof itself is
tests/support/reliability.py (`fault_proof`). Replay a failure with RELIABILITY_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from support import reliability as rel
from support.cli import CLI_OUTPUTS

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]


def reliability_seed() -> int:
    chosen = os.environ.get("RELIABILITY_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(1, 2**31)


@pytest.mark.parametrize("transient_only", [True, False], ids=["transient-only", "mixed"])
def test_faults_spread_over_pages_lose_and_duplicate_nothing(
    kafka_bootstrap: str, tmp_path: Path, transient_only: bool
) -> None:
    seed = reliability_seed()
    print(f"reliability seed {seed} (replay: RELIABILITY_SEED={seed})")
    collector = rel.Collector()
    try:
        figures = rel.fault_proof(kafka_bootstrap, tmp_path, seed, collector, transient_only,
                                  faults=24, say=print)  # fmt: skip
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    assert sum(figures.injected.values()) >= 10, figures.injected
    assert figures.lost == 0 and figures.duplicated == 0
    if transient_only:
        assert figures.runs == 1, "transient faults alone must be retried, not fail the run"
    else:
        assert figures.failed_runs >= 1, "no fault failed a run: the mix was too soft"
    rel.assert_clean(collector)
