"""`follow`'s parts without a broker: its keys, the test clock, the back-off, readiness, and the
horizon's closed days in UTC and Europe/Paris (winter, summer, DST days)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from matomo_kafka.clock import FileClock, clock_from_environment, parse_instant
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import ConfigError
from matomo_kafka.follow import MAX_BACKOFF_S, backoff, stale_after
from matomo_kafka.model import RunReport, SiteReport
from matomo_kafka.ops.follow_metrics import FollowMetrics
from matomo_kafka.ops.health import Health
from matomo_kafka.source.days import last_closed_day

PARIS = ZoneInfo("Europe/Paris")

REQUIRED = {
    "START_DATE": "2024-03-01",
    "FILE_PATH_LAST_OFFSET": "/tmp/o",
    "FILE_PATH_FILTERDATE": "/tmp/d",
    "KAFKA_TOPIC": "t",
    "MATOMO_ID_SITE": "1",
    "MATOMO_API_URL": "http://m/index.php",
    "MATOMO_API_TOKEN": "x",
    "KAFKA_SERVERS": "k:9092",
}


def test_follow_keys_defaults_and_bounds() -> None:
    settings = Settings.model_validate(REQUIRED)
    assert settings.MATOMO_FOLLOW_INTERVAL == 300
    assert settings.MATOMO_VISIT_LENGTH == 1800
    assert settings.MATOMO_HEALTH_PORT is None
    assert settings.follow_margin_seconds == 1800 + 600
    tuned = Settings.model_validate({**REQUIRED, "MATOMO_FOLLOW_INTERVAL": "1.5",
                                     "MATOMO_VISIT_LENGTH": "0", "MATOMO_SETTLE_MINUTES": "0",
                                     "MATOMO_HEALTH_PORT": "8080"})  # fmt: skip
    assert (tuned.MATOMO_FOLLOW_INTERVAL, tuned.follow_margin_seconds) == (1.5, 0)
    assert tuned.MATOMO_HEALTH_PORT == 8080
    for key, bad in [("MATOMO_FOLLOW_INTERVAL", "0.9"), ("MATOMO_FOLLOW_INTERVAL", "inf"),
                     ("MATOMO_FOLLOW_INTERVAL", "86401"), ("MATOMO_VISIT_LENGTH", "86401"),
                     ("MATOMO_HEALTH_PORT", "0"), ("MATOMO_HEALTH_PORT", "65536")]:  # fmt: skip
        with pytest.raises(ValueError, match=key):
            Settings.model_validate({**REQUIRED, key: bad})


def test_parse_instant() -> None:
    moment = datetime(2024, 3, 5, 12, tzinfo=UTC)
    assert parse_instant("1709640000", "x") == moment
    assert parse_instant(" 1709640000.0\n", "x") == moment
    assert parse_instant("2024-03-05T13:00:00+01:00", "x") == moment
    assert parse_instant("2024-03-05T12:00:00Z", "x") == moment
    for bad in ("2024-03-05T12:00:00", "noon", ""):
        with pytest.raises(ConfigError, match="expected a Unix time"):
            parse_instant(bad, "MATOMO_TEST_NOW")


def test_the_test_clock_is_off_unless_set(tmp_path: Path) -> None:
    clock, how = clock_from_environment({})
    assert how is None and abs((clock() - datetime.now(UTC)).total_seconds()) < 5
    clock, how = clock_from_environment({"MATOMO_TEST_NOW": "1709640000"})
    assert clock() == datetime(2024, 3, 5, 12, tzinfo=UTC) and how is not None
    path = tmp_path / "clock"
    path.write_text("1709640000\n")
    clock, how = clock_from_environment({"MATOMO_TEST_NOW": f"@{path}"})
    assert isinstance(clock, FileClock) and str(path) in (how or "")
    path.write_text("1709643600\n")  # moved: read again at every call
    assert clock() == datetime(2024, 3, 5, 13, tzinfo=UTC)
    with pytest.raises(ConfigError, match="cannot read"):
        clock_from_environment({"MATOMO_TEST_NOW": f"@{tmp_path / 'missing'}"})


def test_backoff_doubles_from_the_next_cycle_up_to_an_hour() -> None:
    assert [backoff(300, n) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert backoff(1, 1) == 1 and backoff(1, 40) == MAX_BACKOFF_S
    assert backoff(7200, 3) == 7200  # an interval above the cap is never shortened


def test_readiness() -> None:
    health = Health()
    assert health.ready() == (False, "the first cycle has not completed yet")
    health.cycle_done(None)
    assert health.ready() == (True, "ready")
    health.cycle_done("site(s) 2 failing")
    assert health.ready() == (False, "site(s) 2 failing")
    health.cycle_done(None)
    assert health.ready()[0]


def test_lag_is_computed_when_read() -> None:
    """A service that stopped cycling shows a growing lag, not a frozen one."""
    now = [datetime(2024, 3, 5, 12, tzinfo=UTC)]
    metrics = FollowMetrics(lambda: now[0])
    site = SiteReport(6, status="done", visits=3, newest=int(now[0].timestamp()) - 2400)
    metrics.cycle_done(now[0] - timedelta(seconds=2400), RunReport([site]), 0.2, "ok")
    registry = metrics.registry
    assert registry.get_sample_value("matomo_kafka_follow_lag_seconds", {"site": "6"}) == 2400
    now[0] += timedelta(seconds=600)
    assert registry.get_sample_value("matomo_kafka_follow_lag_seconds", {"site": "6"}) == 3000
    assert registry.get_sample_value("matomo_kafka_follow_visits_total", {"site": "6"}) == 3
    assert registry.get_sample_value("matomo_kafka_follow_cycles_total", {"outcome": "ok"}) == 1


def test_a_forgotten_site_reports_no_lag() -> None:
    """A site gone from Matomo's list leaves the lag, newest and horizon gauges (a lag growing
    forever would alert); its visits counter stays; it can come back."""
    now = datetime(2024, 3, 5, 12, tzinfo=UTC)
    metrics = FollowMetrics(lambda: now)
    sites = [SiteReport(idsite, status="done", visits=1, newest=int(now.timestamp()) - 60)
             for idsite in (6, 7)]  # fmt: skip
    metrics.cycle_done(now, RunReport(sites), 0.2, "ok")
    metrics.forget(7)
    metrics.forget(8)  # never reported: nothing to remove
    registry = metrics.registry
    for name in ("lag_seconds", "newest_visit_timestamp_seconds", "horizon_timestamp_seconds"):
        assert registry.get_sample_value(f"matomo_kafka_follow_{name}", {"site": "6"})
        assert registry.get_sample_value(f"matomo_kafka_follow_{name}", {"site": "7"}) is None
    assert registry.get_sample_value("matomo_kafka_follow_visits_total", {"site": "7"}) == 1
    back = SiteReport(7, status="done", visits=2, newest=int(now.timestamp()) - 30)
    metrics.cycle_done(now, RunReport([back]), 0.2, "ok")
    assert registry.get_sample_value("matomo_kafka_follow_lag_seconds", {"site": "7"}) == 30


@pytest.mark.parametrize(
    ("tz", "horizon", "closed"),
    [
        # A day closes when the horizon reaches its midnight, in the site's timezone.
        (UTC, "2024-03-05T23:59:59+00:00", "2024-03-04"),
        (UTC, "2024-03-06T00:00:00+00:00", "2024-03-05"),
        (PARIS, "2024-03-05T22:59:59+00:00", "2024-03-04"),  # winter: UTC+1
        (PARIS, "2024-03-05T23:00:00+00:00", "2024-03-05"),
        (PARIS, "2024-07-05T21:59:59+00:00", "2024-07-04"),  # summer: UTC+2
        (PARIS, "2024-07-05T22:00:00+00:00", "2024-07-05"),
        (PARIS, "2024-03-31T21:59:59+00:00", "2024-03-30"),  # the 23-hour day...
        (PARIS, "2024-03-31T22:00:00+00:00", "2024-03-31"),  # ...ends at 22:00 UTC
        (PARIS, "2024-10-26T22:00:00+00:00", "2024-10-26"),  # the 25-hour day begins
        (PARIS, "2024-10-27T22:59:59+00:00", "2024-10-26"),
        (PARIS, "2024-10-27T23:00:00+00:00", "2024-10-27"),
    ],
)
def test_the_days_a_horizon_closes(tz: object, horizon: str, closed: str) -> None:
    """follow's closed days: those that ended by the horizon (settle already in it)."""
    moment = datetime.fromisoformat(horizon)
    assert last_closed_day(tz, None, now=moment) == date.fromisoformat(closed)  # type: ignore[arg-type]


def test_readiness_goes_stale_when_a_cycle_stops_progressing() -> None:
    """A cycle that hangs (a delivery never reported, a deadlock) made /readyz answer 200
    for good: past `stale_after` seconds without progress it says 503, and why."""
    now = [1000.0]
    health = Health(stale_after=600, now=lambda: now[0])
    health.cycle_started()
    health.cycle_done(None)
    assert health.ready() == (True, "ready")
    now[0] += 3600  # between cycles the service waits on purpose (a back-off): not stale
    assert health.ready() == (True, "ready")
    health.cycle_started()
    for _ in range(5):  # a long catch-up that progresses stays as it was
        now[0] += 500
        health.progressed()
        assert health.ready() == (True, "ready")
    now[0] += 601
    ready, reason = health.ready()
    assert not ready and reason.startswith("stale: the cycle under way has made no progress")
    health.progressed()
    assert health.ready() == (True, "ready")
    health.cycle_done("site(s) 2 failing")
    now[0] += 5000
    assert health.ready() == (False, "site(s) 2 failing")


def test_the_stale_bound_covers_a_request_through_its_retries() -> None:
    """Twice the interval, never less than one Matomo request through all its retries and
    one Kafka delivery: a healthy but slow cycle is never called stuck."""
    settings = Settings.model_validate(REQUIRED)
    assert stale_after(settings) == 6 * (120 + 60) + 120 + 30  # the defaults: 20.5 min
    slow = Settings.model_validate({**REQUIRED, "MATOMO_FOLLOW_INTERVAL": 3600})
    assert stale_after(slow) == 7200


def test_a_scrape_during_a_forget_does_not_fail() -> None:
    """/metrics is served on its own thread: a scrape that took a site's lag gauge just
    before the cycle forgot the site read a missing value and failed (KeyError)."""
    now = datetime(2024, 3, 5, 12, tzinfo=UTC)
    metrics = FollowMetrics(lambda: now)
    site = SiteReport(7, status="done", visits=1, newest=int(now.timestamp()) - 60)
    metrics.cycle_done(now, RunReport([site]), 0.2, "ok")
    lag_of_7 = metrics._lag  # what the gauge a scrape holds calls
    metrics.forget(7)
    assert math.isnan(lag_of_7(7))
