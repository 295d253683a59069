"""The simulator's moving clock (issue 15): with `now`, Live and VisitsSummary serve only the
visits whose last action is at or before it, today's included, so visits appear as time passes;
without it nothing changes. Over real HTTP, as the tool reads it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite

pytestmark = [pytest.mark.simulator]

TOKEN = "clock-token-0123456789"
DAY = date(2024, 3, 5)
PARIS = ZoneInfo("Europe/Paris")


def _config(now: float | None = None, **kwargs: Any) -> SimConfig:
    sites = [
        SimSite(1, "UTC site", "UTC", default_visits=200),
        SimSite(2, "Paris site", "Europe/Paris", default_visits=200, tie_group=3),
    ]
    return SimConfig(token=TOKEN, sites=sites, now=now, **kwargs)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def _api(client: httpx.Client, sim: MatomoSimulator, method: str, **params: Any) -> Any:
    data = {"module": "API", "format": "json", "method": method, "token_auth": TOKEN}
    data.update({k: str(v) for k, v in params.items()})
    response = client.post(sim.url, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def _live(client: httpx.Client, sim: MatomoSimulator, idsite: int, day: str, **params: Any) -> Any:
    params = {"filter_sort_order": "asc", "filter_limit": -1, **params}
    return _api(client, sim, "Live.getLastVisitsDetails", idSite=idsite, period="day", date=day,
                **params)  # fmt: skip


def _at(hour: int, minute: int = 0, tz: Any = UTC, day: date = DAY) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()


def test_without_a_clock_nothing_changes(client: httpx.Client) -> None:
    with MatomoSimulator(_config()) as sim:
        assert sim.now is None
        assert len(_live(client, sim, 1, DAY.isoformat())) == 200
        assert sim.visit_count(1, DAY) == 200


@pytest.mark.parametrize("idsite", [1, 2])
def test_visits_appear_as_time_passes(client: httpx.Client, idsite: int) -> None:
    """At each step exactly the visits whose last action is <= now are served, in the same
    order and with the same content as once the day is over; they never change after."""
    tz = UTC if idsite == 1 else PARIS
    with MatomoSimulator(_config()) as sim:
        full = _live(client, sim, idsite, DAY.isoformat())
        sim.set_now(_at(0, tz=tz))
        seen = 0
        for hour in (0, 3, 9, 12, 18, 23):
            for minute in (0, 31):
                now = sim.advance(0) if (hour, minute) == (0, 0) else _at(hour, minute, tz)
                sim.set_now(now)
                got = _live(client, sim, idsite, DAY.isoformat())
                want = [v for v in full if v["lastActionTimestamp"] <= now]
                assert got == want
                assert len(got) >= seen
                seen = len(got)
                assert sim.visit_count(idsite, DAY) == len(want)
                assert sim.expected_visits(idsite, DAY) == want
        assert 0 < seen < 200
        sim.set_now(_at(0, tz=tz, day=DAY + timedelta(days=1)))
        assert _live(client, sim, idsite, DAY.isoformat()) == full


def test_min_timestamp_and_offsets_apply_to_what_the_clock_shows(client: httpx.Client) -> None:
    with MatomoSimulator(_config()) as sim:
        full = _live(client, sim, 2, DAY.isoformat())
        now = full[120]["lastActionTimestamp"]
        sim.set_now(now)
        shown = [v for v in full if v["lastActionTimestamp"] <= now]
        after = full[50]["lastActionTimestamp"]
        got = _live(client, sim, 2, DAY.isoformat(), minTimestamp=after)
        assert got == [v for v in shown if v["lastActionTimestamp"] > after]
        page = _live(client, sim, 2, DAY.isoformat(), filter_offset=100, filter_limit=50)
        assert page == shown[100:150]
        assert _live(client, sim, 2, DAY.isoformat(), minTimestamp=now) == []
        desc = _live(client, sim, 2, DAY.isoformat(), filter_sort_order="desc", filter_limit=5)
        assert [v["lastActionTimestamp"] for v in desc] == [
            v["lastActionTimestamp"] for v in shown[::-1][:5]
        ]


def test_days_after_the_clock_are_empty_and_today_follows_it(client: httpx.Client) -> None:
    with MatomoSimulator(_config(now=_at(12, 0))) as sim:
        assert _live(client, sim, 1, (DAY + timedelta(days=1)).isoformat()) == []
        today = _live(client, sim, 1, "today")
        assert today == _live(client, sim, 1, DAY.isoformat())
        assert 0 < len(today) < 200
        assert len(_live(client, sim, 1, "yesterday")) == 200
        # 23:30 UTC is already the next day in Paris.
        sim.set_now(_at(23, 30))
        paris_today = _live(client, sim, 2, "today")
        assert paris_today == _live(client, sim, 2, (DAY + timedelta(days=1)).isoformat())
        assert len(_live(client, sim, 2, "yesterday")) == 200


def test_visits_summary_counts_what_the_clock_shows(client: httpx.Client) -> None:
    with MatomoSimulator(_config(now=_at(6, 0))) as sim:
        summary = _api(client, sim, "VisitsSummary.get", idSite=1, period="day",
                       date=DAY.isoformat())  # fmt: skip
        assert summary["nb_visits"] == len(_live(client, sim, 1, DAY.isoformat())) > 0
        sim.set_now(None)
        summary = _api(client, sim, "VisitsSummary.get", idSite=1, period="day",
                       date=DAY.isoformat())  # fmt: skip
        assert summary["nb_visits"] == 200


def test_a_grown_visit_keeps_its_old_last_action_until_the_clock_reaches_the_new_one(
    client: httpx.Client,
) -> None:
    """A visit that goes on (one more page view minutes later) is served as it was until the
    clock reaches its new action, then with it, in its new place."""
    with MatomoSimulator(_config()) as sim:
        full = _live(client, sim, 1, DAY.isoformat())
        (grown_id,) = sim.grow_visits(1, DAY, 1)
        (before,) = [v for v in full if v["idVisit"] == grown_id]
        (after,) = [v for v in _live(client, sim, 1, DAY.isoformat()) if v["idVisit"] == grown_id]
        old, new = before["lastActionTimestamp"], after["lastActionTimestamp"]
        assert new > old
        sim.set_now(old - 1)
        assert grown_id not in {v["idVisit"] for v in _live(client, sim, 1, DAY.isoformat())}
        sim.set_now(new - 1)
        shown = {v["idVisit"]: v for v in _live(client, sim, 1, DAY.isoformat())}
        assert shown[grown_id] == before
        sim.set_now(new)
        shown = {v["idVisit"]: v for v in _live(client, sim, 1, DAY.isoformat())}
        assert shown[grown_id] == after
        assert sim.expected_visits(1, DAY)[-1]["lastActionTimestamp"] <= new


def test_late_visits_stay_hidden_under_the_clock(client: httpx.Client) -> None:
    sites = [SimSite(1, "UTC site", "UTC", default_visits=100, late={DAY.isoformat(): 10})]
    with MatomoSimulator(SimConfig(token=TOKEN, sites=sites, now=_at(12))) as sim:
        shown = _live(client, sim, 1, DAY.isoformat())
        hidden = sim.hidden_visit_ids(1, DAY)
        assert not hidden & {v["idVisit"] for v in shown}
        assert all(v["lastActionTimestamp"] <= _at(12) for v in shown)
        sim.release_late(1, DAY)
        released = _live(client, sim, 1, DAY.isoformat())
        assert {v["idVisit"] for v in released} > {v["idVisit"] for v in shown}
        assert all(v["lastActionTimestamp"] <= _at(12) for v in released)


def test_the_clock_is_validated_and_configurable() -> None:
    assert SimConfig.from_dict({"token": "t", "sites": [], "now": 1709640000}).now == 1709640000
    assert SimConfig.from_dict({"token": "t", "sites": []}).now is None
    with pytest.raises(ValueError, match="now must be"):
        SimConfig(token="t", sites=[], now=5.0)
    with pytest.raises(ValueError, match="now must be"):
        SimConfig(token="t", sites=[], now=float("nan"))
    sim = MatomoSimulator(SimConfig(token="t", sites=[]))
    with pytest.raises(RuntimeError, match="no clock"):
        sim.advance(60)
    sim.set_now(datetime(2024, 3, 5, 12, tzinfo=UTC))
    assert sim.advance(60) == _at(12, 1)
