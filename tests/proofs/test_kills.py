"""Reliability under SIGKILL (issue #3, at-least-once): `matomo-kafka run` over several sites
(different timezones) and days is killed at random points and rerun, at least 50 times, then run
to completion. The proof itself is tests/support/reliability.py (`kill_proof`); bench/reliability.py
runs it longer.

The seed is random per run and printed; replay a failure with RELIABILITY_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from support import reliability as rel
from support.cli import CLI_OUTPUTS

pytestmark = [pytest.mark.kafka, pytest.mark.simulator, pytest.mark.slow]

KILLS = 50
EOS_KILLS = 20  # exactly-once: each run also claims its sites (transactions), so slower


def reliability_seed() -> int:
    """RELIABILITY_SEED when set (to replay a failure), else a fresh random seed."""
    chosen = os.environ.get("RELIABILITY_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(1, 2**31)


def test_sigkill_at_random_points_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    """After every kill each site's checkpoint is readable and never ahead of the topic, and
    the kill newly left at most MATOMO_MAX_CONCURRENCY (2, for 3 sites) pages beyond all of
    them (never a whole day); at the end every visit is in the topic and each site has at
    most that many pages of duplicates per kill (kill_proof raises otherwise)."""
    seed = reliability_seed()
    print(f"reliability seed {seed} (replay: RELIABILITY_SEED={seed})")
    collector = rel.Collector()
    try:
        figures = rel.kill_proof(kafka_bootstrap, tmp_path, KILLS, seed, collector, sites=3,
                                 days=4, latency=0.03, say=print, concurrency=2)  # fmt: skip
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    assert figures.kills >= KILLS
    assert figures.completed_runs >= 1 and figures.visits_expected > 0
    assert figures.lost == 0
    # Two pages, plus the rest of a repaired tie group each, for one site or all together.
    assert figures.max_fresh_total <= 2 * (rel.LIMIT + rel.TIE_GROUP)
    rel.assert_clean(collector)


def test_sigkill_in_exactly_once_mode_nothing_lost_nothing_seen_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """DELIVERY=exactly_once, killed at random points (inside transactions too): once every
    round is complete, a read_committed consumer sees every visit exactly once."""
    seed = reliability_seed()
    print(f"reliability seed {seed} (replay: RELIABILITY_SEED={seed})")
    collector = rel.Collector()
    try:
        figures = rel.kill_proof(kafka_bootstrap, tmp_path, EOS_KILLS, seed, collector, sites=3,
                                 days=4, latency=0.03, say=print, delivery="exactly_once",
                                 concurrency=2)  # fmt: skip
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    assert figures.kills >= EOS_KILLS and figures.completed_runs >= 1
    assert figures.visits_expected > 0 and figures.lost == 0 and figures.duplicated == 0
    rel.assert_clean(collector)


def test_sigkill_between_the_two_writes_of_a_day_change_resends_at_most_one_page(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The process kills itself after the offset file was reset to 0 and before the new day is
    written (where a random SIGKILL lands now and then). At 7cdce68 the rerun re-sent the whole
    acknowledged day (35 visits, 4 pages); the `.next` marker makes it resume at the new day."""
    collector = rel.Collector()
    try:
        figures = rel.day_change_kill_proof(kafka_bootstrap, tmp_path, collector)
    finally:
        CLI_OUTPUTS.extend(collector.outputs)
    print(figures)
    if not figures.in_window:
        pytest.fail(f"the kill did not land between the two writes: {figures}")
    assert figures.resent <= rel.LIMIT, (
        f"a kill between the two checkpoint writes re-sent {figures.resent} visits "
        f"(of a {figures.day_visits}-visit day), more than one page ({rel.LIMIT})"
    )
    rel.assert_clean(collector)
