"""`follow` with MATOMO_ID_SITE=all picks up the sites created while it runs, without a broker:
what a new list of sites changes (this shard's), and the follower's re-listing before a cycle
against real checkpoint locks (another instance's lock is another open file: flock tells them
apart within one process too) and a stand-in for Matomo's SitesManager answer."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import LockedError, MatomoError, TokenRefusedError
from matomo_kafka.follow import Follower, Listing, SiteChanges, site_changes
from matomo_kafka.model import RunReport, SiteReport
from matomo_kafka.ops.follow_metrics import FollowMetrics
from matomo_kafka.ops.health import Health
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.sites import Shard, shard_of
from matomo_kafka.state.checkpoint_files import CheckpointLock, CheckpointStore

NOW = datetime(2024, 3, 5, 12, tzinfo=UTC)

#: The settings' required keys (the follower's re-listing reads none of them).
REQUIRED = {
    "START_DATE": "2024-03-01",
    "FILE_PATH_LAST_OFFSET": "/tmp/o",
    "FILE_PATH_FILTERDATE": "/tmp/d",
    "KAFKA_TOPIC": "t",
    "MATOMO_ID_SITE": "all",
    "MATOMO_API_URL": "http://m/index.php",
    "MATOMO_API_TOKEN": "x",
    "KAFKA_SERVERS": "k:9092",
}


def test_site_changes_in_order_and_by_shard() -> None:
    assert site_changes((1, 2), [3, 1, 2], None) == SiteChanges((3,), ())
    assert site_changes((1, 5, 2), [2, 4], None) == SiteChanges((4,), (1, 5))
    assert site_changes((), [], None) == SiteChanges((), ())
    listed = range(1, 41)
    shard = Shard(1, 3)
    mine = tuple(idsite for idsite in listed if shard_of(idsite, 3) == 1)
    assert site_changes((), listed, shard) == SiteChanges(mine, ())
    # A site of another shard is never taken on, and one this shard follows stays.
    assert site_changes(mine[:2], listed, shard) == SiteChanges(mine[2:], ())
    assert site_changes(mine, [mine[0]], shard) == SiteChanges((), mine[1:])


class Sites:
    """Matomo's SitesManager.getSitesIdWithAtLeastViewAccess, as the test sets it."""

    def __init__(self, *ids: int) -> None:
        self.ids: list[int] = list(ids)
        self.failure: Exception | None = None
        self.calls = 0

    def sites_with_view_access(self) -> list[int]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return sorted(self.ids)


def follower(
    tmp_path: Path, matomo: Sites, lock: CheckpointLock | None, sites: tuple[int, ...]
) -> Follower:
    """A follower that is past its first cycle (only `refresh` is called: no sink needed)."""
    settings = Settings.model_validate(REQUIRED)
    metrics = FollowMetrics(lambda: NOW)
    listing = None if lock is None else Listing(None, lock, set(sites))
    made = Follower(settings, cast(MatomoClient, matomo), cast(KafkaSink, None), store(tmp_path),
                    sites, threading.Event(), lambda: NOW, Health(), metrics, listing)  # fmt: skip
    made.cycles = 1
    return made


def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(str(tmp_path / "filterdate"), str(tmp_path / "last_filter_offset"))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if "follow:" in r.message]
    caplog.clear()
    return found


def test_new_sites_join_and_a_locked_one_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Site 3, which another instance holds, is said once and tried at every cycle; it joins
    once free. Site 2 joins at once. Each join is one info line."""
    caplog.set_level(logging.INFO, logger="matomo_kafka")
    matomo = Sites(1, 2, 3)
    with store(tmp_path).lock([1]) as held:
        follow = follower(tmp_path, matomo, held, (1,))
        with store(tmp_path).lock([3]):  # another instance
            assert follow.refresh() is None
            assert follow.sites.ids == (1, 2)
            said = messages(caplog)
            assert len(said) == 2 and "INFO follow: site(s) 2 added" in said[1]
            assert said[0].startswith("WARNING follow: site 3, new in Matomo's list, is not "
                                      "followed: another instance (pid ")  # fmt: skip
            assert follow.refresh() is None  # still held: not said again
            assert follow.sites.ids == (1, 2) and messages(caplog) == []
        assert follow.refresh() is None
        assert follow.sites.ids == (1, 2, 3)
        assert [m.split(" (")[0] for m in messages(caplog)] == ["INFO follow: site(s) 3 added"]
        with pytest.raises(LockedError), store(tmp_path).lock([3]):
            pass  # ours now, until the service exits
    assert matomo.calls == 3


def test_a_site_gone_from_the_list_is_dropped_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No longer cycled, its back-off, readiness problem and lag gone; back later, it is ours
    already (its lock kept)."""
    caplog.set_level(logging.INFO, logger="matomo_kafka")
    matomo = Sites(1, 2)
    with store(tmp_path).lock([1, 2]) as held:
        follow = follower(tmp_path, matomo, held, (1, 2))
        follow.sites.failures[2], follow.sites.due_at[2] = 3, 1e12
        follow.metrics.cycle_done(NOW, RunReport([SiteReport(2, "done", newest=1)]), 0.1, "ok")
        matomo.ids = [1]
        assert follow.refresh() is None and follow.refresh() is None
        assert follow.sites.ids == (1,) and not follow.sites.failures
        assert follow.sites.next_due() == 0.0
        registry = follow.metrics.registry
        assert registry.get_sample_value("matomo_kafka_follow_lag_seconds", {"site": "2"}) is None
        said = messages(caplog)
        assert len(said) == 1 and said[0].startswith("WARNING follow: site(s) 2 no longer")
        matomo.ids = [1, 2]
        assert follow.refresh() is None
        assert follow.sites.ids == (1, 2)
        assert [m.split(" (")[0] for m in messages(caplog)] == ["INFO follow: site(s) 2 added"]


def test_a_failed_listing_keeps_the_sites_and_a_refused_token_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="matomo_kafka")
    matomo = Sites(1, 2)
    with store(tmp_path).lock([1]) as held:
        follow = follower(tmp_path, matomo, held, (1,))
        matomo.failure = MatomoError("Matomo SitesManager...: HTTP 502")
        assert follow.refresh() is None and follow.sites.ids == (1,)
        assert messages(caplog) == ["WARNING follow: cannot list the sites (Matomo "
                                    "SitesManager...: HTTP 502); the 1 site(s) followed so "
                                    "far go on"]  # fmt: skip
        matomo.failure = None
        matomo.ids = []  # Matomo lists nothing: a glitch, not every site deleted
        assert follow.refresh() is None and follow.sites.ids == (1,)
        assert "cannot list the sites" in messages(caplog)[0]
        refused = TokenRefusedError("token refused by Matomo")
        matomo.failure = refused
        assert follow.refresh() is refused
        assert messages(caplog) == ["ERROR follow: listing the sites: TokenRefusedError: the "
                                    "service stops"]  # fmt: skip


def test_an_explicit_list_or_the_first_cycle_asks_nothing(tmp_path: Path) -> None:
    matomo = Sites(1, 2)
    assert follower(tmp_path, matomo, None, (1,)).refresh() is None
    with store(tmp_path).lock([1]) as held:
        first = follower(tmp_path, matomo, held, (1,))
        first.cycles = 0  # the sites were listed at start, just now
        assert first.refresh() is None and first.sites.ids == (1,)
    assert matomo.calls == 0
