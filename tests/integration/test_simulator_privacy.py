"""The simulator's PrivacyManager over real HTTP: erasure (deleteDataSubjects), raw-data
anonymisation (anonymizeSomeRawData) and the purge of old raw data, answered byte for byte as
the real Matomo 5.0.2 and 4.15.1 answered (tests/fixtures/*/privacy_*, see its README), and
what Live and VisitsSummary show afterwards."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from matomo_kafka.simulator import MATOMO_VERSIONS, MatomoSimulator, SimSite
from matomo_kafka.simulator.modules.privacy_manager import SIM_PASSWORD, masked_ip
from support.parm import TOKEN
from support.samples import MATOMO_4, MATOMO_5, sample_bytes, sample_status

pytestmark = [pytest.mark.simulator]

LOCATION = ("continent", "continentCode", "country", "countryCode", "region", "regionCode",
            "city", "location", "latitude", "longitude", "countryFlag")  # fmt: skip
CHANGED = ("visitIp", "userId", *LOCATION)
BIG_DAY = "2024-03-12"


def sites() -> list[SimSite]:
    """Site 1 in UTC, site 2 in Paris; site 1's 2024-03-12 is big enough to hold visits with
    as many actions and conversions as the real erased ones (4 and 2, 1 and 2)."""
    return [
        SimSite(idsite=1, name="Shop UTC", timezone="UTC",
                visits={"2024-03-09": 40, "2024-03-10": 120, "2024-03-11": 40, BIG_DAY: 3000}),
        SimSite(idsite=2, name="Boutique Paris", timezone="Europe/Paris", currency="EUR",
                visits={"2024-03-10": 60, "2024-03-11": 60}),
    ]  # fmt: skip


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def folder(version: str) -> Any:
    return MATOMO_4 if version == "4.15.1" else MATOMO_5


def api(client: httpx.Client, sim: MatomoSimulator, method: str, **params: Any) -> httpx.Response:
    data = {"module": "API", "format": "json", "method": method, "token_auth": TOKEN}
    data.update({k: str(v) for k, v in params.items()})
    return client.post(sim.url, data=data)


def live(client: httpx.Client, sim: MatomoSimulator, idsite: int, day: str) -> list[Any]:
    r = api(client, sim, "Live.getLastVisitsDetails", idSite=idsite, period="day", date=day,
            filter_limit=-1, filter_sort_order="asc")  # fmt: skip
    assert r.status_code == 200, r.text
    visits: list[Any] = r.json()
    return visits


def summary(client: httpx.Client, sim: MatomoSimulator, idsite: int, day: str) -> Any:
    r = api(client, sim, "VisitsSummary.get", idSite=idsite, period="day", date=day)
    assert r.status_code == 200, r.text
    return r.json()


def delete(client: httpx.Client, sim: MatomoSimulator, *visits: tuple[int, int]) -> httpx.Response:
    params = {}
    for n, (idsite, id_visit) in enumerate(visits):
        params[f"visits[{n}][idsite]"] = idsite
        params[f"visits[{n}][idvisit]"] = id_visit
    return api(client, sim, "PrivacyManager.deleteDataSubjects", **params)


def entry_counts(visit: dict[str, Any]) -> tuple[int, int]:
    """(actions, goal conversions) of a visit: its log_link_visit_action and log_conversion
    rows."""
    goals = sum(1 for e in visit["actionDetails"] if e["type"] == "goal")
    return len(visit["actionDetails"]) - goals, goals


def like_sample(r: httpx.Response, name: str, version: str) -> None:
    assert r.status_code == sample_status(name, folder(version))
    assert r.headers["content-type"].startswith("application/json")
    assert r.content == sample_bytes(name, folder(version)).strip()


# -- deleteDataSubjects ---------------------------------------------------------------------


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_erasure_answers_as_matomo_and_the_visit_disappears(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client, version: str
) -> None:
    """A visit with as many actions and conversions as the real erased one gets the real
    answer byte for byte; Live no longer lists it, VisitsSummary no longer counts it, other
    visits and days stay; erased again: all zero (the 5.0.2 answer), still HTTP 200."""
    sim = sim_factory(sites(), matomo_version=version, seed=7)
    expected = sample_bytes("privacy_deleteDataSubjects_ok", folder(version))
    rows = httpx.Response(200, content=expected).json()
    before = live(client, sim, 1, BIG_DAY)
    target = next(
        v for v in before
        if entry_counts(v) == (rows["log_link_visit_action"], rows["log_conversion"])
    )  # fmt: skip
    visits_before = summary(client, sim, 1, BIG_DAY)["nb_visits"]
    other_day = live(client, sim, 1, "2024-03-11")

    like_sample(
        delete(client, sim, (1, target["idVisit"])), "privacy_deleteDataSubjects_ok", version
    )

    after = live(client, sim, 1, BIG_DAY)
    assert after == [v for v in before if v["idVisit"] != target["idVisit"]]
    assert summary(client, sim, 1, BIG_DAY)["nb_visits"] == visits_before - 1
    assert live(client, sim, 1, "2024-03-11") == other_day
    again = delete(client, sim, (1, target["idVisit"]))
    assert again.status_code == 200
    assert again.content == sample_bytes("privacy_deleteDataSubjects_again").strip()


def test_erasure_of_several_visits_sums_their_rows(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client
) -> None:
    """Three visits of two days and two sites in one request (and one unknown id): the rows of
    the three, in Matomo's table order; each day lists the others only."""
    sim = sim_factory(sites(), seed=7)
    a, b = live(client, sim, 1, "2024-03-10")[5:7]
    c = live(client, sim, 2, "2024-03-11")[3]
    r = delete(client, sim, (1, a["idVisit"]), (2, c["idVisit"]), (1, 999), (1, b["idVisit"]))
    assert r.status_code == 200
    counts = [entry_counts(v) for v in (a, b, c)]
    assert list(r.json().items()) == [
        ("log_visit", 3),
        ("log_link_visit_action", sum(actions for actions, _ in counts)),
        ("log_conversion_item", 0),
        ("log_conversion", sum(goals for _, goals in counts)),
    ]
    assert {a["idVisit"], b["idVisit"]}.isdisjoint(
        v["idVisit"] for v in live(client, sim, 1, "2024-03-10")
    )
    assert c["idVisit"] not in {v["idVisit"] for v in live(client, sim, 2, "2024-03-11")}
    assert len(live(client, sim, 2, "2024-03-11")) == 59


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_erasure_without_idsite_is_refused_as_matomo_refuses_it(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client, version: str
) -> None:
    """The validator's envelope (captured from 5.0.2; 4.15.1's validator is the same code)."""
    sim = sim_factory(sites(), matomo_version=version)
    day = live(client, sim, 1, "2024-03-10")
    r = api(
        client,
        sim,
        "PrivacyManager.deleteDataSubjects",
        **{"visits[0][idvisit]": day[0]["idVisit"]},
    )
    like_sample(r, "privacy_deleteDataSubjects_no_idsite", "5.0.2")
    assert live(client, sim, 1, "2024-03-10") == day
    r = api(client, sim, "PrivacyManager.deleteDataSubjects")
    assert r.json() == {"result": "error", "message": "visits: No list of visits given"}


# -- anonymizeSomeRawData -------------------------------------------------------------------


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_anonymisation_needs_the_password_as_matomo_does(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client, version: str
) -> None:
    sim = sim_factory(sites(), matomo_version=version)
    day = live(client, sim, 1, "2024-03-10")
    r = api(client, sim, "PrivacyManager.anonymizeSomeRawData", idSites=1, date="2024-03-10",
            anonymizeIp=1)  # fmt: skip
    like_sample(r, "privacy_anonymizeSomeRawData_no_password", version)
    r = api(client, sim, "PrivacyManager.anonymizeSomeRawData", idSites=1, date="2024-03-10",
            anonymizeIp=1, passwordConfirmation="wrong")  # fmt: skip
    assert r.json() == {"result": "error",
                        "message": "The current password you entered is not correct."}  # fmt: skip
    r = api(client, sim, "PrivacyManager.anonymizeSomeRawData", idSites=1, date="2024-03-10",
            passwordConfirmation=SIM_PASSWORD)  # fmt: skip
    assert r.json() == {"result": "error", "message": "Nothing is selected to be anonymized"}
    assert live(client, sim, 1, "2024-03-10") == day


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_anonymisation_masks_ip_removes_location_replaces_user_id(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client, version: str
) -> None:
    """Matomo's answer (its task's work done at once); every visit of the day changed as
    LogDataAnonymizer changes it, and nothing else: other fields, days and sites stay."""
    sim = sim_factory(sites(), matomo_version=version, seed=11)
    before = live(client, sim, 1, "2024-03-10")
    untouched = {(1, "2024-03-11"): live(client, sim, 1, "2024-03-11"),
                 (2, "2024-03-10"): live(client, sim, 2, "2024-03-10")}  # fmt: skip
    r = api(client, sim, "PrivacyManager.anonymizeSomeRawData", idSites=1, date="2024-03-10",
            anonymizeIp=1, anonymizeLocation=1, anonymizeUserId=1,
            passwordConfirmation=SIM_PASSWORD)  # fmt: skip
    like_sample(r, "privacy_anonymizeSomeRawData_scheduled", "5.0.2")
    after = live(client, sim, 1, "2024-03-10")
    assert [v["idVisit"] for v in after] == [v["idVisit"] for v in before]
    assert any(v["userId"] for v in before) and any(":" in v["visitIp"] for v in before)
    for old, new in zip(before, after, strict=True):
        assert {k: x for k, x in new.items() if k not in CHANGED} == {
            k: x for k, x in old.items() if k not in CHANGED
        }
        ip = ipaddress.ip_address(new["visitIp"])
        assert new["visitIp"] == masked_ip(old["visitIp"]) != old["visitIp"]
        assert ip.packed.endswith(b"\0\0") if ip.version == 4 else ip.packed[6:] == bytes(10)
        assert (new["country"], new["countryCode"], new["city"], new["latitude"]) == (
            "Unknown", "xx", None, None)  # fmt: skip
        if old["userId"] is None:
            assert new["userId"] is None
        else:
            assert len(new["userId"]) == 40 and new["userId"] != old["userId"]
    for (idsite, day), visits in untouched.items():
        assert live(client, sim, idsite, day) == visits
    assert sim.visit(1, "2024-03-10", 0)["visitIp"] == after[0]["visitIp"]


def test_anonymisation_reads_dates_in_utc_and_is_deterministic(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client
) -> None:
    """As Matomo: a date is a UTC day on the last action time, so a Paris site's visits of
    2024-03-11 before 01:00 local change with 2024-03-10 and its 2024-03-10 visits before
    01:00 local do not; two simulators with the same seed serve the same changed visits."""
    runs = []
    for _ in range(2):
        sim = sim_factory(sites(), seed=3)
        changed = sim.anonymize_raw_data([2], "2024-03-10", ip=True)
        lo = datetime(2024, 3, 10, tzinfo=UTC).timestamp()
        hi = datetime(2024, 3, 11, tzinfo=UTC).timestamp()
        count = 0
        for day in ("2024-03-10", "2024-03-11"):
            originals = {
                v["idVisit"]: v for v in MatomoSimulator(sim.config).expected_visits(2, day)
            }
            for v in live(client, sim, 2, day):
                inside = lo <= v["lastActionTimestamp"] < hi
                assert (v["visitIp"] != originals[v["idVisit"]]["visitIp"]) == inside, v["idVisit"]
                count += inside
        assert changed == count and 0 < count < 120
        runs.append(live(client, sim, 2, "2024-03-11"))
    assert runs[0] == runs[1]


# -- the purge of old raw data --------------------------------------------------------------


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_purge_empties_old_days_and_keeps_their_reports(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client, version: str
) -> None:
    """Delete-old-raw-data of 10 days on 2024-03-20: the visits before 2024-03-10 00:00 UTC
    are gone from Live (site 1's 2024-03-09 empty, its 2024-03-10 whole; Paris's 2024-03-10
    loses the visits of its first hour, still 2024-03-09 in UTC); VisitsSummary still counts
    them, as Matomo keeps the reports it archived."""
    now = datetime(2024, 3, 20, 12, tzinfo=UTC).timestamp()
    sim = sim_factory(sites(), matomo_version=version, now=now)
    reports = {day: summary(client, sim, 1, day) for day in ("2024-03-09", "2024-03-10")}
    paris = live(client, sim, 2, "2024-03-10")
    kept_day = live(client, sim, 1, "2024-03-10")
    r = api(client, sim, "PrivacyManager.setDeleteLogsSettings", enableDeleteLogs=1,
            deleteLogsOlderThan=10, passwordConfirmation=SIM_PASSWORD)  # fmt: skip
    assert (r.status_code, r.json()) == (200, {"value": True})
    assert len(live(client, sim, 1, "2024-03-09")) == 40  # settings alone purge nothing
    r = api(client, sim, "PrivacyManager.executeDataPurge", passwordConfirmation=SIM_PASSWORD)
    assert (r.status_code, r.content) == (200, b'{"result":"success","message":"ok"}')

    assert live(client, sim, 1, "2024-03-09") == []
    assert live(client, sim, 1, "2024-03-10") == kept_day
    cut = datetime(2024, 3, 10, tzinfo=UTC).timestamp()
    assert live(client, sim, 2, "2024-03-10") == [
        v for v in paris if v["lastActionTimestamp"] >= cut
    ]
    assert 0 < len(live(client, sim, 2, "2024-03-10")) < len(paris)
    for day, report in reports.items():
        assert summary(client, sim, 1, day) == report
    r = api(client, sim, "PrivacyManager.executeDataPurge")
    message = "Please enter your password to confirm this change."
    assert r.json() == {"result": "error", "message": message}


def test_purge_as_a_simulator_method_and_erasure_of_a_purged_visit(
    sim_factory: Callable[..., MatomoSimulator], client: httpx.Client
) -> None:
    """purge_raw_data_older_than does what the API does; a purged visit is no longer there
    to erase (zero rows)."""
    sim = sim_factory(sites(), now=datetime(2024, 3, 21, tzinfo=UTC).timestamp())
    old = live(client, sim, 1, "2024-03-09")
    line = sim.purge_raw_data_older_than(11)
    assert line == datetime(2024, 3, 10, tzinfo=UTC).timestamp()
    assert live(client, sim, 1, "2024-03-09") == []
    assert sim.visit_count(1, date(2024, 3, 9)) == 0 and sim.visit_count(1, "2024-03-10") == 120
    assert delete(client, sim, (1, old[0]["idVisit"])).json()["log_visit"] == 0
