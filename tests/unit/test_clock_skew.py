"""`follow`'s horizon against Matomo's clock (clock_skew.py, issue 24): which clock it comes
from, and what is said, once, about clocks that disagree."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from matomo_kafka.clock_skew import SkewWatch

LOCAL = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)
MARGIN = timedelta(seconds=2400)
SETTLE = 600.0


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [record.getMessage() for record in caplog.records]
    caplog.clear()
    return lines


def test_before_matomo_answered_the_local_clock_decides() -> None:
    watch = SkewWatch(SETTLE)
    assert watch.settled_until(LOCAL, MARGIN) == LOCAL - MARGIN
    assert watch.skew is None


def test_clocks_within_a_minute_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    watch = SkewWatch(SETTLE)
    for seconds in (-59, 0, 59):
        watch.observe(LOCAL, LOCAL - timedelta(seconds=seconds), MARGIN)
        assert watch.skew == seconds
        assert watch.settled_until(LOCAL, MARGIN) == LOCAL - MARGIN
    assert _said(caplog) == []


def test_a_host_ahead_within_the_settle_margin_is_said_once_and_keeps_its_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    watch = SkewWatch(SETTLE)
    for _ in range(3):
        watch.observe(LOCAL, LOCAL - timedelta(seconds=300), MARGIN)
        assert watch.settled_until(LOCAL, MARGIN) == LOCAL - MARGIN
    assert _said(caplog) == [
        "follow: this host's clock (2024-03-05 14:00:00Z) and Matomo's (2024-03-05 13:55:00Z, "
        "its Date header) differ by 300s (this host ahead): synchronise them (NTP)"
    ]


def test_a_host_ahead_beyond_the_settle_margin_reads_up_to_matomos_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    watch = SkewWatch(SETTLE)
    matomo = LOCAL - timedelta(seconds=601)
    for _ in range(3):
        watch.observe(LOCAL, matomo, MARGIN)
        assert watch.settled_until(LOCAL, MARGIN) == matomo - MARGIN
    # both clocks went on by an hour: the horizon follows Matomo's
    later = LOCAL + timedelta(hours=1)
    assert watch.settled_until(later, MARGIN) == matomo + timedelta(hours=1) - MARGIN
    said = _said(caplog)
    assert len(said) == 1
    assert said[0].startswith(
        "follow: this host's clock (2024-03-05 14:00:00Z) is 601s ahead of Matomo's "
        "(2024-03-05 13:49:59Z, its Date header), more than MATOMO_SETTLE_MINUTES: today is "
        "read only up to Matomo's clock minus MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES "
        "(2024-03-05 13:09:59Z)"
    )
    # fixed by NTP: the local clock decides again, and that is said
    watch.observe(LOCAL, LOCAL, MARGIN)
    assert watch.settled_until(LOCAL, MARGIN) == LOCAL - MARGIN
    assert _said(caplog) == [
        "follow: this host's clock and Matomo's agree again (0s apart)",
        "follow: today is read up to this host's clock minus the margins again",
    ]


def test_a_host_behind_is_said_once_until_the_clocks_agree_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    watch = SkewWatch(SETTLE)
    ahead = LOCAL + timedelta(hours=1)
    for _ in range(2):
        watch.observe(LOCAL, ahead, MARGIN)
        assert watch.settled_until(LOCAL, MARGIN) == LOCAL - MARGIN
    assert watch.skew == -3600
    assert len(_said(caplog)) == 1
    watch.observe(LOCAL, LOCAL, MARGIN)
    assert len(_said(caplog)) == 1  # agree again
    watch.observe(LOCAL, ahead, MARGIN)
    assert "this host behind" in _said(caplog)[0]  # a new drift is said again
