"""Tests for the Matomo API simulator, over real HTTP with httpx.

The simulator is only useful if it behaves like a real Matomo 5.0.2: these tests pin its
answers to the captured samples (byte for byte where the sample is fixed), check the
visit shapes and types, the paging/day-cut semantics the exporter relies on, and every
injected fault. Expected bodies are embedded, and checked against the real answers themselves
(tests/fixtures/, see its README), as are the visit shapes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig, SimSite
from matomo_kafka.simulator import config as sim_config
from matomo_kafka.simulator.modules import live as sim_live
from matomo_kafka.simulator.visits import visit as sim_visit
from matomo_kafka.simulator.visits.php_json import php_json
from support.samples import (
    MATOMO_4,
    MATOMO_5,
    sample_bytes,
    sample_files,
    sample_json,
    sample_status,
)
from support.simulator import DAY, TOKEN, hazard_config, main_config, peer_config

pytestmark = [pytest.mark.simulator]

PARIS = ZoneInfo("Europe/Paris")


# --------------------------------------------------------------------------------------
# Reference shapes, taken from the Matomo 5.0.2 samples.
# --------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.split()


VISIT_KEYS = _words("""
idSite idVisit visitIp visitorId fingerprint actionDetails goalConversions siteCurrency
siteCurrencySymbol serverDate visitServerHour lastActionTimestamp lastActionDateTime siteName
serverTimestamp firstActionTimestamp serverTimePretty serverDatePretty
serverDatePrettyFirstAction serverTimePrettyFirstAction userId visitorType visitorTypeIcon
visitConverted visitConvertedIcon visitCount visitEcommerceStatus visitEcommerceStatusIcon
daysSinceFirstVisit secondsSinceFirstVisit daysSinceLastEcommerceOrder
secondsSinceLastEcommerceOrder visitDuration visitDurationPretty searches actions interactions
referrerType referrerTypeName referrerName referrerKeyword referrerKeywordPosition referrerUrl
referrerSearchEngineUrl referrerSearchEngineIcon referrerSocialNetworkUrl
referrerSocialNetworkIcon languageCode language deviceType deviceTypeIcon deviceBrand
deviceModel operatingSystem operatingSystemName operatingSystemIcon operatingSystemCode
operatingSystemVersion browserFamily browserFamilyDescription browser browserName browserIcon
browserCode browserVersion events continent continentCode country countryCode countryFlag
region regionCode city location latitude longitude visitLocalTime visitLocalHour
daysSinceLastVisit secondsSinceLastVisit resolution plugins pluginsIcons dimension1
""")
VISIT_INT = set(
    _words("""
idSite idVisit goalConversions lastActionTimestamp serverTimestamp firstActionTimestamp
visitConverted visitCount daysSinceFirstVisit secondsSinceFirstVisit
daysSinceLastEcommerceOrder visitDuration searches actions interactions events
daysSinceLastVisit secondsSinceLastVisit
""")
)
VISIT_NULL = set(
    _words("""
visitEcommerceStatusIcon secondsSinceLastEcommerceOrder referrerKeywordPosition region
regionCode city latitude longitude pluginsIcons
""")
)
VISIT_STR_OR_NULL = set(
    _words("""
userId visitorTypeIcon visitConvertedIcon referrerUrl referrerSearchEngineUrl
referrerSearchEngineIcon dimension1
""")
)
# Null in every sample visit (no social referrer was captured); real Matomo fills them with
# strings for social referrers, which the simulator generates.
VISIT_STR_OR_NULL_EXTENSION = {"referrerSocialNetworkUrl", "referrerSocialNetworkIcon"}

ENTRY_KEYS = {
    "action": "type url pageTitle pageIdAction idpageview serverTimePretty pageId timeSpent "
    "timeSpentPretty pageviewPosition title subtitle icon iconSVG timestamp dimension2",
    "goal": "type goalName goalId idpageview revenue goalPageId serverTimePretty url referrerType "
    "referrerName referrerKeyword icon iconSVG title subtitle timestamp dimension2",
    "event": "type url pageIdAction idpageview serverTimePretty pageId eventCategory eventAction "
    "pageviewPosition timestamp icon iconSVG title subtitle eventName eventValue dimension2",
    "outlink": "type url pageTitle pageIdAction idpageview serverTimePretty pageId "
    "pageviewPosition icon iconSVG title subtitle timestamp dimension2",
    "download": "type url pageTitle pageIdAction idpageview serverTimePretty pageId "
    "pageviewPosition icon iconSVG title subtitle timestamp dimension2",
    "search": "type url pageIdAction idpageview serverTimePretty pageId siteSearchKeyword "
    "siteSearchCategory siteSearchCount pageviewPosition icon iconSVG title subtitle timestamp "
    "dimension2",
}
ENTRY_INT = {"pageIdAction", "pageId", "timeSpent", "pageviewPosition", "timestamp", "goalId"}
ENTRY_INT |= {"revenue", "eventValue", "siteSearchCount"}
# (entry type, key) -> allowed JSON types where they differ from "str" / ENTRY_INT.
ENTRY_SPECIAL: dict[tuple[str, str], set[type]] = {
    ("goal", "idpageview"): {str, type(None)},
    ("goal", "goalPageId"): {int, type(None)},
    ("goal", "referrerName"): {str, type(None)},
    ("goal", "referrerKeyword"): {str, type(None)},
    ("outlink", "pageTitle"): {type(None)},
    ("download", "pageTitle"): {type(None)},
    ("search", "url"): {type(None)},
    ("search", "pageIdAction"): {type(None)},
}

MSG_BAD_TOKEN = (
    "Unable to authenticate with the provided token. It is either invalid, expired or is "
    "required to be sent as a POST parameter."
)
CUSTOM_DIMENSIONS_1 = (
    b'[{"idcustomdimension":"2","idsite":"1","name":"Page Type","index":"1","scope":"action",'
    b'"active":true,"extractions":[],"case_sensitive":true},{"idcustomdimension":"1",'
    b'"idsite":"1","name":"Plan","index":"1","scope":"visit","active":true,"extractions":[],'
    b'"case_sensitive":true}]'
)
GOALS_1 = (
    b'[{"idsite":1,"idgoal":1,"name":"Thank-you page","description":"URL contains thank-you",'
    b'"match_attribute":"url","pattern":"thank-you","pattern_type":"contains",'
    b'"case_sensitive":0,"allow_multiple":0,"revenue":10,"deleted":0,'
    b'"event_value_as_revenue":0},{"idsite":1,"idgoal":2,"name":"Newsletter signup",'
    b'"description":"triggered manually with idgoal","match_attribute":"manually",'
    b'"allow_multiple":1,"revenue":0,"deleted":0,"event_value_as_revenue":0}]'
)
SITE_1 = (
    b'{"idsite":1,"name":"Peer Site UTC","main_url":"https:\\/\\/utc.example.org",'
    b'"ts_created":"2024-03-01 00:00:00","ecommerce":0,"sitesearch":1,'
    b'"sitesearch_keyword_parameters":"","sitesearch_category_parameters":"","timezone":"UTC",'
    b'"currency":"USD","exclude_unknown_urls":0,"excluded_ips":"","excluded_parameters":"",'
    b'"excluded_user_agents":"","excluded_referrers":"","group":"","type":"website",'
    b'"keep_url_fragment":0,"creator_login":"anonymous","timezone_name":"UTC",'
    b'"currency_name":"US Dollar"}'
)
SUMMARY_EMPTY = (
    b'{"nb_uniq_visitors":0,"nb_users":0,"nb_visits":0,"nb_actions":0,"nb_visits_converted":0,'
    b'"bounce_count":0,"sum_visit_length":0,"max_actions":0,"bounce_rate":"0%",'
    b'"nb_actions_per_visit":0,"avg_time_on_site":0}'
)


def _err(message: str) -> bytes:
    return php_json({"result": "error", "message": message})


# sample name -> (method, params, token or None, expected status, expected body)
FIXED_CASES: dict[str, tuple[str, dict[str, str], str | None, int, bytes]] = {
    "matomo_version": ("API.getMatomoVersion", {}, TOKEN, 200, b'{"value":"5.0.2"}'),
    "sites_with_view_access": (
        "SitesManager.getSitesIdWithAtLeastViewAccess", {}, TOKEN, 200, b"[1,2]"
    ),
    "sites_site1": ("SitesManager.getSiteFromId", {"idSite": "1"}, TOKEN, 200, SITE_1),
    "customdimensions_site1": (
        "CustomDimensions.getConfiguredCustomDimensions", {"idSite": "1"}, TOKEN, 200,
        CUSTOM_DIMENSIONS_1,
    ),
    "customdimensions_site2": (
        "CustomDimensions.getConfiguredCustomDimensions", {"idSite": "2"}, TOKEN, 200,
        CUSTOM_DIMENSIONS_1.replace(b'"idsite":"1"', b'"idsite":"2"'),
    ),
    "customdimensions_unknown_idsite_99": (
        "CustomDimensions.getConfiguredCustomDimensions", {"idSite": "99"}, TOKEN, 200, b"[]"
    ),
    "customdimensions_bad_token": (
        "CustomDimensions.getConfiguredCustomDimensions", {"idSite": "1"}, "wrong", 401,
        _err(MSG_BAD_TOKEN),
    ),
    "goals_site1": ("Goals.getGoals", {"idSite": "1"}, TOKEN, 200, GOALS_1),
    "goals_site2": (
        "Goals.getGoals", {"idSite": "2"}, TOKEN, 200,
        GOALS_1.replace(b'"idsite":1', b'"idsite":2'),
    ),
    "goals_unknown_idsite_99": ("Goals.getGoals", {"idSite": "99"}, TOKEN, 200, b"[]"),
    "goals_bad_token": ("Goals.getGoals", {"idSite": "1"}, "wrong", 401, _err(MSG_BAD_TOKEN)),
    "live_bad_token": (
        "Live.getLastVisitsDetails", {"idSite": "1", "period": "day", "date": "2024-03-10"},
        "wrong", 401, _err(MSG_BAD_TOKEN),
    ),
    "live_no_token": (
        "Live.getLastVisitsDetails", {"idSite": "1", "period": "day", "date": "2024-03-10"},
        None, 401,
        _err("You can't access this resource as it requires 'view' access for the website id = 1."),
    ),
    "live_bad_date": (
        "Live.getLastVisitsDetails", {"idSite": "1", "period": "day", "date": "notadate"},
        TOKEN, 200,
        b'{"result":"error","message":"Date format must be: YYYY-MM-DD, or \'today\' or '
        b"'yesterday' or any keyword supported by the strtotime function (see "
        b'http:\\/\\/php.net\\/strtotime for more information): false"}',
    ),
    "live_unknown_idsite_99": (
        "Live.getLastVisitsDetails", {"idSite": "99", "period": "day", "date": "2024-03-10"},
        TOKEN, 200,
        _err("An unexpected website was found in the request: website id was set to '99' ."),
    ),
    "live_unknown_method": (
        "Live.getNothing", {"idSite": "1"}, TOKEN, 200,
        b'{"result":"error","message":"The method \'getNothing\' does not exist or is not '
        b"available in the module '\\\\Piwik\\\\Plugins\\\\Live\\\\API'.\"}",
    ),
    "live_site1_empty_day_2024-03-05": (
        "Live.getLastVisitsDetails", {"idSite": "1", "period": "day", "date": "2024-03-05"},
        TOKEN, 200, b"[]",
    ),
    "live_site1_2024-03-10_offset_past_end": (
        "Live.getLastVisitsDetails",
        {"idSite": "1", "period": "day", "date": "2024-03-10", "filter_offset": "5"},
        TOKEN, 200, b"[]",
    ),
    "visitssummary_site1_empty_day_2024-03-05": (
        "VisitsSummary.get", {"idSite": "1", "period": "day", "date": "2024-03-05"}, TOKEN, 200,
        SUMMARY_EMPTY,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[MatomoSimulator]:
    with MatomoSimulator(main_config()) as s:
        yield s


@pytest.fixture(scope="module")
def peer() -> Iterator[MatomoSimulator]:
    with MatomoSimulator(peer_config()) as s:
        yield s


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def api(
    client: httpx.Client, url: str, method: str, token: str | None = TOKEN, **params: Any
) -> httpx.Response:
    data = {"module": "API", "format": "json", "method": method}
    data.update({k: str(v) for k, v in params.items()})
    if token is not None:
        data["token_auth"] = token
    return client.post(url, data=data)


def live(client: httpx.Client, url: str, idsite: int, day: str, **params: Any) -> list[Any]:
    r = api(client, url, "Live.getLastVisitsDetails", idSite=idsite, period="day", date=day,
            **params)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, list), body
    return body


def error_message(r: httpx.Response) -> str:
    body = r.json()
    assert isinstance(body, dict) and body.get("result") == "error", r.text
    return str(body["message"])


# --------------------------------------------------------------------------------------
# Fixed answers: byte-exact with the samples
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FIXED_CASES))
def test_fixed_answers_are_byte_exact(
    peer: MatomoSimulator, client: httpx.Client, name: str
) -> None:
    method, params, token, status, expected = FIXED_CASES[name]
    r = api(client, peer.url, method, token=token, **params)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.content == expected
    assert sample_bytes(name).strip() == expected
    assert sample_status(name) == status


def test_site_and_summary_like_samples(peer: MatomoSimulator, client: httpx.Client) -> None:
    site2 = api(client, peer.url, "SitesManager.getSiteFromId", idSite=2).json()
    assert site2["timezone"] == "Europe/Paris" and site2["currency"] == "EUR"
    assert site2["timezone_name"] == "France" and site2["currency_name"] == "Euro"
    summary = api(client, peer.url, "VisitsSummary.get", idSite=1, period="day",
                  date="2024-03-10").json()  # fmt: skip
    assert summary["nb_visits"] == 5
    sample = sample_json("sites_site2")
    sample.pop("creator_login")
    site2.pop("creator_login")
    assert site2 == sample
    sample_sum = sample_json("visitssummary_site1_2024-03-10")
    assert list(summary) == list(sample_sum)
    assert {k: type(v) for k, v in summary.items()} == {k: type(v) for k, v in sample_sum.items()}


def test_summary_agrees_with_live(sim: MatomoSimulator, client: httpx.Client) -> None:
    visits = sim.expected_visits(1, "2024-03-10")
    summary = api(client, sim.url, "VisitsSummary.get", idSite=1, period="day",
                  date="2024-03-10").json()  # fmt: skip
    assert summary["nb_visits"] == len(visits) == 257
    assert summary["nb_actions"] == sum(v["actions"] for v in visits)
    assert summary["nb_visits_converted"] == sum(v["visitConverted"] for v in visits)
    assert summary["nb_uniq_visitors"] == len({v["visitorId"] for v in visits})
    assert summary["max_actions"] == max(v["actions"] for v in visits)
    assert isinstance(summary["nb_actions_per_visit"], float)


def test_denied_site_is_401_with_real_message(sim: MatomoSimulator, client: httpx.Client) -> None:
    for method in ("Live.getLastVisitsDetails", "SitesManager.getSiteFromId", "Goals.getGoals"):
        r = api(client, sim.url, method, idSite=5, period="day", date="2024-03-10")
        assert r.status_code == 401
        assert r.content == _err(
            "You can't access this resource as it requires 'view' access for the website id = 5."
        )
    ids = api(client, sim.url, "SitesManager.getSitesIdWithAtLeastViewAccess").json()
    assert ids == [1, 2, 3, 4, 6]


# --------------------------------------------------------------------------------------
# Refusals, as each Matomo version answers them (byte for byte with the samples)
# --------------------------------------------------------------------------------------
MSG_NO_VIEW_ANY = (
    "You can't access this resource as it requires view access for at least one website."
)
LIVE_DAY = {"idSite": "1", "period": "day", "date": "2024-03-10"}

# sample name -> (version, method, params, token, extra config, status, expected body)
VERSION_CASES: dict[str, tuple[str, str, dict[str, str], str, dict[str, Any], int, bytes]] = {
    "4.15.1/matomo_version": (
        "4.15.1", "API.getMatomoVersion", {}, TOKEN, {}, 200, b'{"value":"4.15.1"}',
    ),
    "4.15.1/version_bad_token": (
        "4.15.1", "API.getMatomoVersion", {}, "wrong", {}, 200, _err(MSG_NO_VIEW_ANY),
    ),
    "4.15.1/live_bad_token": (
        "4.15.1", "Live.getLastVisitsDetails", LIVE_DAY, "wrong", {}, 200,
        _err("You can't access this resource as it requires 'view' access for the website id = 1."),
    ),
    "5.0.2/live_bad_token": (
        "5.0.2", "Live.getLastVisitsDetails", LIVE_DAY, "wrong", {}, 401, _err(MSG_BAD_TOKEN),
    ),
    "5.0.2/live_viewer_token_site2_denied": (
        "5.0.2", "Live.getLastVisitsDetails", {**LIVE_DAY, "idSite": "2"}, TOKEN,
        {"denied_sites": [2]}, 401,
        _err("You can't access this resource as it requires 'view' access for the website id = 2."),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VERSION_CASES))
def test_refusals_like_each_version(client: httpx.Client, name: str) -> None:
    version, method, params, token, extra, status, expected = VERSION_CASES[name]
    with MatomoSimulator(peer_config(matomo_version=version, **extra)) as s:
        r = api(client, s.url, method, token=token, **params)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert "www-authenticate" not in r.headers  # Matomo never challenges: only a gateway does
    assert r.content == expected
    folder = MATOMO_4 if version == "4.15.1" else MATOMO_5
    sample = name.partition("/")[2]
    assert sample_bytes(sample, folder).strip() == expected
    assert sample_status(sample, folder) == status


def test_matomo_5_refuses_a_bad_token_with_its_html_page_for_the_version(
    peer: MatomoSimulator, client: httpx.Client
) -> None:
    """Matomo's error page, links to where it was reached (the sample's captured server was
    http://127.0.0.1:18088); no WWW-Authenticate header, unlike a gateway's refusal."""
    r = api(client, peer.url, "API.getMatomoVersion", token="wrong")
    assert sample_status("version_bad_token") == r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert "www-authenticate" not in r.headers
    base = peer.url.removesuffix("/index.php")
    assert base != "http://127.0.0.1:18088"
    page = sample_bytes("version_bad_token")
    assert page.count(b"http://127.0.0.1:18088") == 1
    assert r.content == page.replace(b"http://127.0.0.1:18088", base.encode())
    r = client.get(peer.url, params={"module": "API", "format": "json", "token_auth": TOKEN,
                                     "method": "API.getMatomoVersion"})  # fmt: skip
    assert r.status_code == 401 and r.content.startswith(b"<!DOCTYPE html>")  # POST-only token


def test_matomo_4_refusals_are_http_200_envelopes(client: httpx.Client) -> None:
    """4.15.1 takes a bad (or missing) token for the anonymous user; a valid token gets the
    same per-site envelope for a site it cannot view (denied_sites)."""
    with MatomoSimulator(peer_config(matomo_version="4.15.1", denied_sites=[2])) as s:
        for token in ("wrong", None):
            for method in ("API.getMatomoVersion", "SitesManager.getSitesIdWithAtLeastViewAccess"):
                r = api(client, s.url, method, token=token)
                assert r.status_code == 200 and error_message(r) == MSG_NO_VIEW_ANY
            for method in ("SitesManager.getSiteFromId", "Goals.getGoals",
                           "CustomDimensions.getConfiguredCustomDimensions"):  # fmt: skip
                r = api(client, s.url, method, token=token, idSite=2)
                assert r.status_code == 200
                assert error_message(r).endswith("'view' access for the website id = 2.")
        r = api(client, s.url, "Live.getLastVisitsDetails", **{**LIVE_DAY, "idSite": "2"})
        assert r.status_code == 200
        assert error_message(r).endswith("'view' access for the website id = 2.")
        assert len(live(client, s.url, 1, "2024-03-10")) == 5
        assert api(client, s.url, "SitesManager.getSitesIdWithAtLeastViewAccess").json() == [1]


# --------------------------------------------------------------------------------------
# Visit shapes
# --------------------------------------------------------------------------------------
def _check_visit_shape(v: dict[str, Any], max_entries: int = 6) -> None:
    assert list(v) == VISIT_KEYS
    for k, x in v.items():
        if k == "actionDetails":
            assert isinstance(x, list) and 1 <= len(x) <= max_entries
        elif k in VISIT_INT:
            assert type(x) is int, (k, x)
        elif k in VISIT_NULL:
            assert x is None, (k, x)
        elif k in VISIT_STR_OR_NULL or k in VISIT_STR_OR_NULL_EXTENSION:
            assert x is None or type(x) is str, (k, x)
        else:
            assert type(x) is str, (k, x)
    for e in v["actionDetails"]:
        keys = ENTRY_KEYS[e["type"]].split()
        if e["type"] == "goal" and "goalName" not in e:
            keys.remove("goalName")
        assert list(e) == keys
        for k, x in e.items():
            allowed = ENTRY_SPECIAL.get((e["type"], k))
            if allowed is None:
                if k == "dimension2":
                    allowed = {str} if e["type"] == "action" else {type(None)}
                else:
                    allowed = {int} if k in ENTRY_INT else {str}
            assert type(x) in allowed, (e["type"], k, x)


def test_visit_shapes_types_and_coherence(sim: MatomoSimulator, client: httpx.Client) -> None:
    visits: list[dict[str, Any]] = []
    for idsite, day in [(1, "2024-03-10"), (2, "2024-03-10"), (6, "2024-03-11")]:
        visits += live(client, sim.url, idsite, day, filter_limit=-1)
    assert len(visits) == 257 + 300 + 60
    kinds: Counter[str] = Counter()
    goals = goals_unnamed = 0
    titles: set[str] = set()
    for v in visits:
        _check_visit_shape(v)
        assert re.fullmatch(r"[0-9a-f]{16}", v["visitorId"])
        assert re.fullmatch(r"[0-9a-f]{16}", v["fingerprint"])
        assert v["dimension1"] in ("free", "pro", "enterprise", None)
        last, first = v["lastActionTimestamp"], v["firstActionTimestamp"]
        assert v["serverTimestamp"] == last and first <= last
        utc = datetime.fromtimestamp(last, UTC)
        assert v["serverDate"] == utc.date().isoformat()
        assert v["lastActionDateTime"] == utc.strftime("%Y-%m-%d %H:%M:%S")
        assert v["visitServerHour"] == str(utc.hour)
        entries = v["actionDetails"]
        assert entries[0]["type"] == "action"
        stamps = [e["timestamp"] for e in entries]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] == last - first
        types = Counter(e["type"] for e in entries)
        kinds.update(types)
        assert v["goalConversions"] == types["goal"]
        assert v["visitConverted"] == (1 if types["goal"] else 0)
        assert v["actions"] == len(entries) - types["goal"]
        assert v["searches"] == types["search"] and v["events"] == types["event"]
        assert (v["visitorType"] == "returning") == (v["visitCount"] > 1)
        for e in entries:
            if e["type"] == "goal":
                goals += 1
                goals_unnamed += "goalName" not in e
                assert e["goalId"] in (1, 2)
            if e["type"] == "action":
                titles.add(e["pageTitle"])
    assert set(kinds) == {"action", "event", "search", "outlink", "download", "goal"}
    assert goals > 40 and 0.12 < goals_unnamed / goals < 0.4  # about 1 in 4
    assert any(not t.isascii() for t in titles) and any("🚀" in t for t in titles)
    assert len({v["visitorId"] for v in visits if v["visitorType"] == "returning"}) > 10
    size = len(php_json(visits)) / len(visits)
    print(f"\naverage visit size: {size:.0f} bytes of JSON")
    assert 2000 < size < 5000


def test_visit_shapes_against_sample_files(sim: MatomoSimulator) -> None:
    sample_visits = [
        v for f in sample_files("live_site*.json", at_least=5) for v in orjson.loads(f.read_bytes())
    ]
    assert sample_visits
    types: dict[str, set[type]] = {}
    entry_types: dict[tuple[str, str], set[type]] = {}
    entry_keys: dict[str, list[str]] = {}
    for v in sample_visits:
        assert list(v) == VISIT_KEYS
        for k, x in v.items():
            types.setdefault(k, set()).add(type(x))
        for e in v["actionDetails"]:
            assert list(e) == ENTRY_KEYS[e["type"]].split()
            entry_keys.setdefault(e["type"], list(e))
            for k, x in e.items():
                entry_types.setdefault((e["type"], k), set()).add(type(x))
    for k in VISIT_STR_OR_NULL_EXTENSION:
        types[k].add(str)
    for v in sim.expected_visits(2, "2024-03-10")[:200]:
        assert list(v) == list(sample_visits[0])
        for k, x in v.items():
            assert type(x) in types[k], (k, x)
        for e in v["actionDetails"]:
            assert [k for k in entry_keys[e["type"]] if k in e] == list(e)
            for k, x in e.items():
                assert type(x) in entry_types[(e["type"], k)], (e["type"], k, x)


def test_php_style_escaping(sim: MatomoSimulator, client: httpx.Client) -> None:
    r = api(client, sim.url, "Live.getLastVisitsDetails", idSite=2, period="day",
            date="2024-03-10", filter_limit=-1)  # fmt: skip
    assert r.content.isascii()  # non-ASCII goes out as \uXXXX like PHP's json_encode
    assert b"https:\\/\\/" in r.content and b"\\u20ac" in r.content
    assert b"\\ud83d\\ude80" in r.content  # emoji as a surrogate pair
    assert r.json() == sim.expected_visits(2, "2024-03-10")[::-1]


# --------------------------------------------------------------------------------------
# Paging, ordering, minTimestamp, day cuts
# --------------------------------------------------------------------------------------
def test_pages_partition_a_day_exactly(sim: MatomoSimulator, client: httpx.Client) -> None:
    expected = sim.expected_visits(1, "2024-03-10")
    assert len(expected) == 257 == sim.visit_count(1, "2024-03-10")
    stamps = [v["lastActionTimestamp"] for v in expected]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    asc: list[Any] = []
    for off in range(0, 300, 50):
        asc += live(client, sim.url, 1, "2024-03-10", filter_limit=50, filter_offset=off,
                    filter_sort_order="asc")  # fmt: skip
    assert asc == expected
    desc: list[Any] = []
    for off in range(0, 300, 37):
        desc += live(client, sim.url, 1, "2024-03-10", filter_limit=37, filter_offset=off)
    assert desc == expected[::-1]
    assert live(client, sim.url, 1, "2024-03-10", filter_limit=-1) == expected[::-1]
    assert live(client, sim.url, 1, "2024-03-10") == expected[::-1][:100]  # default limit 100
    assert live(client, sim.url, 1, "2024-03-10", filter_offset=257) == []
    assert len({v["idVisit"] for v in expected}) == 257


def test_min_timestamp_is_strict(sim: MatomoSimulator, client: httpx.Client) -> None:
    expected = sim.expected_visits(1, "2024-03-10")
    t = expected[10]["lastActionTimestamp"]
    after = [v for v in expected if v["lastActionTimestamp"] > t]
    assert len(after) == 246
    got = live(client, sim.url, 1, "2024-03-10", minTimestamp=t, filter_limit=-1,
               filter_sort_order="asc")  # fmt: skip
    assert got == after
    got = live(client, sim.url, 1, "2024-03-10", minTimestamp=t, filter_limit=20,
               filter_offset=230)  # fmt: skip
    assert got == after[::-1][230:]
    last = expected[-1]["lastActionTimestamp"]
    assert live(client, sim.url, 1, "2024-03-10", minTimestamp=last) == []


def test_min_timestamp_with_same_second_ties(sim: MatomoSimulator, client: httpx.Client) -> None:
    # 1,000,000 visits in 86,400 s: ~12 visits share each second.
    page = live(client, sim.url, 3, "2024-03-10", filter_limit=40, filter_offset=500_000,
                filter_sort_order="asc")  # fmt: skip
    stamps = [v["lastActionTimestamp"] for v in page]
    assert stamps == sorted(stamps) and len(set(stamps)) < len(stamps)
    t = stamps[5]
    first_after = next(v for v in page if v["lastActionTimestamp"] > t)
    got = live(client, sim.url, 3, "2024-03-10", minTimestamp=t, filter_limit=3,
               filter_sort_order="asc")  # fmt: skip
    assert got[0] == first_after


def test_paris_day_is_cut_in_site_timezone(sim: MatomoSimulator, client: httpx.Client) -> None:
    visits = live(client, sim.url, 2, "2024-03-10", filter_limit=-1, filter_sort_order="asc")
    start = int(datetime(2024, 3, 10, tzinfo=PARIS).timestamp())
    end = int(datetime(2024, 3, 11, tzinfo=PARIS).timestamp())
    assert end - start == 86400
    assert all(start <= v["lastActionTimestamp"] < end for v in visits)
    assert visits[0]["lastActionTimestamp"] < start + 86400 // 300  # visit 0 opens the day
    # Like the samples: serverDate is the UTC date, pretty fields are Paris-local, and
    # actionDetails timestamps are shifted by the site's UTC offset.
    assert {v["serverDate"] for v in visits} == {"2024-03-09", "2024-03-10"}
    for v in visits:
        local = datetime.fromtimestamp(v["lastActionTimestamp"], PARIS)
        assert v["serverTimePretty"] == local.strftime("%H:%M:%S")
        assert v["serverDatePretty"] == local.strftime("%A, %B ") + f"{local.day}, 2024"
        assert v["actionDetails"][-1]["timestamp"] == v["lastActionTimestamp"] + 3600
    # The next day does not repeat any of them.
    nxt = live(client, sim.url, 2, "2024-03-11", filter_limit=-1)
    assert not {v["idVisit"] for v in nxt} & {v["idVisit"] for v in visits}


@pytest.mark.parametrize(("day", "hours"), [("2024-03-31", 23), ("2024-10-27", 25)])
def test_dst_days(sim: MatomoSimulator, client: httpx.Client, day: str, hours: int) -> None:
    visits = live(client, sim.url, 2, day, filter_limit=-1, filter_sort_order="asc")
    assert len(visits) == 150
    d = date.fromisoformat(day)
    start = int(datetime(d.year, d.month, d.day, tzinfo=PARIS).timestamp())
    nxt = d + timedelta(days=1)
    end = int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=PARIS).timestamp())
    assert end - start == hours * 3600
    stamps = [v["lastActionTimestamp"] for v in visits]
    assert all(start <= t < end for t in stamps)
    assert stamps[-1] - stamps[0] > (hours - 1) * 3600  # the whole local day is used
    for v in visits:
        assert datetime.fromtimestamp(v["lastActionTimestamp"], PARIS).date() == d


def test_new_york_day(sim: MatomoSimulator, client: httpx.Client) -> None:
    ny = ZoneInfo("America/New_York")
    visits = live(client, sim.url, 6, "2024-03-10", filter_limit=-1)  # US DST day
    assert len(visits) == 60
    assert all(
        datetime.fromtimestamp(v["lastActionTimestamp"], ny).date() == date(2024, 3, 10)
        for v in visits
    )


# --------------------------------------------------------------------------------------
# Authentication and error envelopes
# --------------------------------------------------------------------------------------
def test_token_rules(sim: MatomoSimulator, client: httpx.Client) -> None:
    params = {"module": "API", "format": "json", "method": "API.getMatomoVersion"}
    live_params = {**params, "method": "Live.getLastVisitsDetails", **LIVE_DAY}
    r = client.get(sim.url, params={**live_params, "token_auth": TOKEN})
    assert r.status_code == 401 and error_message(r) == MSG_BAD_TOKEN  # POST-only token
    r = client.post(sim.url, params={**params, "token_auth": TOKEN}, data={"x": "1"})
    assert r.status_code == 401  # in the query string even on a POST
    r = client.post(sim.url, params=params, data={"token_auth": TOKEN})  # query + body merge
    assert r.status_code == 200 and r.json() == {"value": "5.0.2"}
    r = api(client, sim.url, "Live.getLastVisitsDetails", token=None, idSite=2)
    assert r.status_code == 401
    assert error_message(r).endswith("'view' access for the website id = 2.")
    r = api(client, sim.url, "Goals.getGoals", token=TOKEN + "x", idSite=1)
    assert r.status_code == 401 and error_message(r) == MSG_BAD_TOKEN
    with MatomoSimulator(main_config(post_only_token=False)) as relaxed:
        r = client.get(relaxed.url, params={**params, "token_auth": TOKEN})
        assert r.status_code == 200 and r.json() == {"value": "5.0.2"}
        assert relaxed.requests[-1]["token_in"] == "query"
        assert relaxed.requests[-1]["verb"] == "GET"


def test_basic_auth_gateway(client: httpx.Client) -> None:
    with MatomoSimulator(peer_config(basic_auth=("gw", "s3cret"))) as gw:
        r = api(client, gw.url, "API.getMatomoVersion")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic ")
        assert r.headers["content-type"].startswith("text/html")
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(r.content)
        with httpx.Client(auth=("gw", "wrong")) as bad:
            assert api(bad, gw.url, "API.getMatomoVersion").status_code == 401
        with httpx.Client(auth=("gw", "s3cret")) as good:
            r = api(good, gw.url, "API.getMatomoVersion")
            assert r.status_code == 200 and r.json() == {"value": "5.0.2"}
            assert api(good, gw.url, "API.getMatomoVersion", token="bad").status_code == 401


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("Live.getLastVisitsDetails", {"idSite": 42, "period": "day", "date": "2024-03-10"},
         "An unexpected website was found in the request: website id was set to '42' ."),
        ("SitesManager.getSiteFromId", {"idSite": 42},
         "An unexpected website was found in the request: website id was set to '42' ."),
        ("VisitsSummary.get", {"idSite": 42, "period": "day", "date": "2024-03-10"},
         "An unexpected website was found in the request: website id was set to '42' ."),
        ("Foo.bar", {"idSite": 1},
         "The method 'bar' does not exist or is not available in the module "
         "'\\Piwik\\Plugins\\Foo\\API'."),
        ("Live.getLastVisitsDetails", {"idSite": 1, "period": "day", "date": "2024-13-01"},
         sim_config.MSG_BAD_DATE),
        ("Live.getLastVisitsDetails", {"idSite": 1, "period": "day", "date": "10/03/2024"},
         sim_config.MSG_BAD_DATE),
        ("Live.getLastVisitsDetails", {"idSite": 4, "period": "day", "date": "2024-03-10"},
         "Visits log is deactivated for this website. This can be changed in the website "
         "settings."),
        ("Live.getLastVisitsDetails", {"idSite": 1, "period": "week", "date": "2024-03-10"},
         sim_config.MSG_ONLY_DAY.format("Live.getLastVisitsDetails", "week")),
        ("Live.getLastVisitsDetails", {"period": "day", "date": "2024-03-10"},
         "Please specify a value for 'idSite'."),
    ],
)  # fmt: skip
def test_error_envelopes(
    sim: MatomoSimulator,
    client: httpx.Client,
    method: str,
    params: dict[str, Any],
    message: str,
) -> None:
    r = api(client, sim.url, method, **params)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert error_message(r) == message


def test_module_and_format_are_required(sim: MatomoSimulator, client: httpx.Client) -> None:
    base = {"module": "API", "format": "json", "method": "API.getMatomoVersion"}
    for override in ({"format": "xml"}, {"module": "CoreHome"}, {"format": ""}):
        r = client.post(sim.url, data={**base, **override, "token_auth": TOKEN})
        assert r.status_code == 200 and error_message(r) == sim_config.MSG_ONLY_API_JSON
    r = client.post(sim.url, data={**base, "module": "api", "format": "JSON", "token_auth": TOKEN})
    assert r.json() == {"value": "5.0.2"}


def test_any_path_and_request_log(sim: MatomoSimulator, client: httpx.Client) -> None:
    url = sim.url.replace("/index.php", "/WA7/4752/index.php")
    sim.clear_requests()
    got = live(client, url, 1, "2024-03-10", filter_limit=3, filter_offset=4)
    assert got == sim.expected_visits(1, "2024-03-10")[::-1][4:7]
    (entry,) = sim.requests
    assert entry["verb"] == "POST" and entry["path"] == "/WA7/4752/index.php"
    assert entry["method"] == "Live.getLastVisitsDetails" and entry["token_in"] == "body"
    assert entry["params"]["filter_offset"] == "4" and "token_auth" not in entry["params"]
    assert entry["status"] == 200


def test_keep_alive_reuses_one_connection(sim: MatomoSimulator, client: httpx.Client) -> None:
    sim.clear_requests()
    for off in range(0, 50, 10):
        live(client, sim.url, 1, "2024-03-10", filter_limit=10, filter_offset=off)
    assert len({e["client_port"] for e in sim.requests}) == 1


def test_today_and_yesterday_keywords(sim: MatomoSimulator, client: httpx.Client) -> None:
    assert len(live(client, sim.url, 1, "yesterday", filter_limit=-1)) == 20
    assert len(live(client, sim.url, 1, "today", filter_limit=5)) == 5


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------
@pytest.fixture
def fsim() -> Iterator[MatomoSimulator]:
    with MatomoSimulator(peer_config()) as s:
        yield s


def _version(client: httpx.Client, url: str) -> httpx.Response:
    return api(client, url, "API.getMatomoVersion")


def test_fault_status_times(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="status", status=503, times=2))
    assert [_version(client, fsim.url).status_code for _ in range(3)] == [503, 503, 200]


def test_fault_rate_limit(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="rate_limit", retry_after=7))
    r = _version(client, fsim.url)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert _version(client, fsim.url).status_code == 200


def test_fault_delay(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="delay", delay_s=0.3))
    t0 = time.perf_counter()
    r = _version(client, fsim.url)
    assert time.perf_counter() - t0 >= 0.3 and r.json() == {"value": "5.0.2"}
    t0 = time.perf_counter()
    _version(client, fsim.url)
    assert time.perf_counter() - t0 < 0.3


def test_fault_truncate(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="truncate", method="Live.getLastVisitsDetails"))
    with pytest.raises(httpx.TransportError):
        live(client, fsim.url, 1, "2024-03-10")
    assert len(live(client, fsim.url, 1, "2024-03-10")) == 5


def test_fault_corrupt_encoding(fsim: MatomoSimulator, client: httpx.Client) -> None:
    """The true answer, labelled gzip but not compressed: the client cannot decode it."""
    fsim.add_fault(Fault(kind="corrupt_encoding", method="Live.getLastVisitsDetails"))
    with pytest.raises(httpx.DecodingError):
        live(client, fsim.url, 1, "2024-03-10")
    assert len(live(client, fsim.url, 1, "2024-03-10")) == 5


def test_fault_disconnect(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="disconnect", times=2))
    for _ in range(2):
        with pytest.raises(httpx.TransportError):
            _version(client, fsim.url)
    assert _version(client, fsim.url).status_code == 200
    assert [e["status"] for e in fsim.requests] == [None, None, 200]


def test_fault_envelope(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="envelope", message="Mysql server has gone away"))
    r = _version(client, fsim.url)
    assert r.status_code == 200
    assert r.json() == {"result": "error", "message": "Mysql server has gone away"}
    assert _version(client, fsim.url).json() == {"value": "5.0.2"}


def test_fault_filters_forever_and_clear(fsim: MatomoSimulator, client: httpx.Client) -> None:
    fsim.add_fault(Fault(kind="status", method="Live.getLastVisitsDetails", idsite=2,
                         date="2024-03-10", offset=1, times=-1))  # fmt: skip
    assert live(client, fsim.url, 2, "2024-03-10", filter_offset=0)
    assert live(client, fsim.url, 1, "2024-03-10", filter_offset=1)
    assert live(client, fsim.url, 2, "2024-03-11", filter_offset=1)
    for _ in range(3):
        r = api(client, fsim.url, "Live.getLastVisitsDetails", idSite=2, period="day",
                date="2024-03-10", filter_offset=1)  # fmt: skip
        assert r.status_code == 500
    fsim.clear_faults()
    assert live(client, fsim.url, 2, "2024-03-10", filter_offset=1)


def test_faults_from_config(client: httpx.Client) -> None:
    cfg = SimConfig.from_dict(
        {**peer_config().to_dict(), "faults": [{"kind": "rate_limit", "times": 1}]}
    )
    with MatomoSimulator(cfg) as s:
        assert _version(client, s.url).status_code == 429
        assert _version(client, s.url).status_code == 200


def test_latency(client: httpx.Client) -> None:
    with MatomoSimulator(peer_config(latency_s=0.2)) as s:
        t0 = time.perf_counter()
        live(client, s.url, 1, "2024-03-10")
        assert time.perf_counter() - t0 >= 0.2


# --------------------------------------------------------------------------------------
# Load model: a fixed number of workers, requests in flight (counts, never durations)
# --------------------------------------------------------------------------------------
def _wait_for(s: MatomoSimulator, **wanted: int) -> dict[str, Any]:
    """Polls the stats until they show `wanted` (requests still on their way in)."""
    deadline = time.monotonic() + 30
    while True:
        stats = s.stats()
        if all(stats[k] == v for k, v in wanted.items()):
            return stats
        assert time.monotonic() < deadline, f"stats never reached {wanted}: {stats}"
        time.sleep(0.01)


def _live_concurrently(s: MatomoSimulator, n: int) -> list[Any]:
    """n Live requests on their own connections, started at once; returns their futures."""

    def fetch(_: int) -> list[Any]:
        with httpx.Client(timeout=60) as c:
            return live(c, s.url, 1, "2024-03-10", filter_limit=100, filter_sort_order="asc")

    pool = ThreadPoolExecutor(n)
    futures = [pool.submit(fetch, i) for i in range(n)]
    pool.shutdown(wait=False)
    return futures


def test_workers_make_requests_beyond_them_wait() -> None:
    with MatomoSimulator(peer_config(workers=1)) as s:
        with s.hold():
            futures = _live_concurrently(s, 2)
            # One request is handled (held), the other waits for the only worker.
            stats = _wait_for(s, requests=2, busy=1, queued=1)
            assert not any(f.done() for f in futures)
        answers = [f.result() for f in futures]
        stats = s.stats()
    assert answers[0] == answers[1] == s.expected_visits(1, "2024-03-10")
    assert stats["requests"] == stats["live_requests"] == 2
    assert stats["max_in_flight"] == stats["max_live_in_flight"] == 2  # both arrived
    assert stats["max_busy"] == 1  # ...but one worker handled them one after the other
    assert stats["waited"] == stats["max_queued"] == 1
    assert stats["in_flight"] == stats["busy"] == stats["queued"] == 0
    assert stats["live_visits"] == 10


def test_without_workers_no_request_waits() -> None:
    with MatomoSimulator(peer_config()) as s:
        with s.hold():
            futures = _live_concurrently(s, 3)
            _wait_for(s, requests=3, busy=3)
        for f in futures:
            f.result()
        stats = s.stats()
    assert stats["workers"] == 0 and stats["waited"] == stats["max_queued"] == 0
    assert stats["max_busy"] == stats["max_in_flight"] == 3


def test_stats_endpoint_counts_api_requests_only(client: httpx.Client) -> None:
    with MatomoSimulator(peer_config(workers=2)) as s:
        stats_url = s.url.replace("/index.php", sim_config.STATS_PATH)
        assert client.get(stats_url).json()["requests"] == 0
        _version(client, s.url)
        live(client, s.url, 1, "2024-03-10")
        got = client.get(stats_url, params={"reset": "1"}).json()
        assert got["workers"] == 2
        assert (got["requests"], got["live_requests"], got["live_visits"]) == (2, 1, 5)
        assert got["max_in_flight"] == got["max_busy"] == 1 and got["waited"] == 0
        after = client.get(stats_url).json()
        assert after["requests"] == after["max_in_flight"] == after["live_visits"] == 0
        assert after["span_s"] == after["live_busy_s"] == 0
        assert [e["method"] for e in s.requests] == [
            "API.getMatomoVersion", "Live.getLastVisitsDetails",
        ]  # fmt: skip


# --------------------------------------------------------------------------------------
# Determinism, runtime changes, config, lifecycle, concurrency
# --------------------------------------------------------------------------------------
def test_determinism_across_instances(client: httpx.Client) -> None:
    def page(s: MatomoSimulator, **kw: Any) -> bytes:
        r = api(client, s.url, "Live.getLastVisitsDetails", idSite=2, period="day",
                date="2024-03-10", **kw)  # fmt: skip
        return r.content

    with MatomoSimulator(main_config()) as a, MatomoSimulator(main_config()) as b:
        assert page(a, filter_limit=100) == page(b, filter_limit=100)
        full = orjson.loads(page(a, filter_limit=100))
        assert orjson.loads(page(b, filter_limit=5, filter_offset=90)) == full[90:95]
    with MatomoSimulator(main_config(seed=2)) as c:
        other = orjson.loads(page(c, filter_limit=100))
        assert [v["idVisit"] for v in other] == [v["idVisit"] for v in full]
        assert [v["visitorId"] for v in other] != [v["visitorId"] for v in full]


def test_ids_unique_across_sites_and_days(sim: MatomoSimulator) -> None:
    ids: list[int] = []
    page_ids: list[int] = []
    for idsite, day in [(1, "2024-03-10"), (1, "2024-03-11"), (2, "2024-03-10"), (6, "2024-03-10")]:
        for v in sim.expected_visits(idsite, day):
            ids.append(v["idVisit"])
            page_ids += [e["pageId"] for e in v["actionDetails"] if e["type"] != "goal"]
    assert len(ids) == len(set(ids)) and len(page_ids) == len(set(page_ids))
    assert max(page_ids) < 2**53


def test_set_visits_at_runtime(client: httpx.Client) -> None:
    with MatomoSimulator(peer_config()) as s:
        assert len(live(client, s.url, 1, "2024-03-12", filter_limit=-1)) == 3
        s.set_visits(1, date(2024, 3, 12), 7)
        assert len(live(client, s.url, 1, "2024-03-12", filter_limit=-1)) == 7
        summary = api(client, s.url, "VisitsSummary.get", idSite=1, period="day",
                      date="2024-03-12").json()  # fmt: skip
        assert summary["nb_visits"] == 7
        assert s.config.sites[0].visits["2024-03-12"] == 7
    assert peer_config().sites[0].visits.get("2024-03-12") is None  # caller's copy untouched


def test_stop_drops_keep_alive_connections(client: httpx.Client) -> None:
    s = MatomoSimulator(peer_config()).start()
    assert _version(client, s.url).status_code == 200
    s.stop()
    with pytest.raises(httpx.TransportError):
        _version(client, s.url)


def test_concurrent_clients(sim: MatomoSimulator) -> None:
    def fetch(off: int) -> list[Any]:
        with httpx.Client(timeout=20) as c:
            return live(c, sim.url, 2, "2024-03-10", filter_limit=25, filter_offset=off,
                        filter_sort_order="asc")  # fmt: skip

    with ThreadPoolExecutor(max_workers=8) as pool:
        pages = list(pool.map(fetch, range(0, 300, 25)))
    assert [v for p in pages for v in p] == sim.expected_visits(2, "2024-03-10")


def test_large_pages_are_streamed(
    sim: MatomoSimulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim_live, "_STREAM_THRESHOLD", 100)
    monkeypatch.setattr(sim_live, "_STREAM_BATCH", 64)
    r = api(client, sim.url, "Live.getLastVisitsDetails", idSite=2, period="day",
            date="2024-03-10", filter_limit=-1, filter_sort_order="asc")  # fmt: skip
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.json() == sim.expected_visits(2, "2024-03-10")


# --------------------------------------------------------------------------------------
# Big days and generation speed (printed, not asserted)
# --------------------------------------------------------------------------------------
def test_million_visit_day_and_speed(sim: MatomoSimulator, client: httpx.Client) -> None:
    day = "2024-03-10"
    assert sim.visit_count(3, day) == 1_000_000
    summary = api(client, sim.url, "VisitsSummary.get", idSite=3, period="day", date=day).json()
    assert summary["nb_visits"] == 1_000_000
    t0 = time.perf_counter()
    r = api(client, sim.url, "Live.getLastVisitsDetails", idSite=3, period="day", date=day,
            filter_limit=1000, filter_offset=600_000, filter_sort_order="asc")  # fmt: skip
    http_s = time.perf_counter() - t0
    page = r.json()
    assert len(page) == 1000 and page[0] == sim.visit(3, day, 600_000)
    newest = live(client, sim.url, 3, day, filter_limit=3)
    assert newest == [sim.visit(3, day, i) for i in (999_999, 999_998, 999_997)]

    plan = sim._plan(3, date(2024, 3, 10))
    n = 5000
    t0 = time.perf_counter()
    visits = [sim_visit._make_visit(plan, i, 1) for i in range(200_000, 200_000 + n)]
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    body = php_json(visits)
    ser_s = time.perf_counter() - t0
    print(
        f"\nvisit generation: {gen_s / n * 1e6:.1f} us/visit, serialisation "
        f"{ser_s / n * 1e6:.1f} us/visit, {len(body) / n:.0f} bytes/visit; "
        f"HTTP page of 1000 from a 1M-visit day: {http_s * 1000:.0f} ms "
        f"({len(r.content) / 1000:.0f} bytes/visit)"
    )


def test_server_threads_are_daemons(sim: MatomoSimulator) -> None:
    assert sim._server is not None
    assert sim._server.daemon_threads and sim._server.request_queue_size == 64
    assert all(t.daemon for t in threading.enumerate() if t.name == "matomo-simulator")


# --------------------------------------------------------------------------------------
# Paging hazards: same-second tie groups, unstable tie order, late and grown visits
# --------------------------------------------------------------------------------------


def ids(visits: list[Any]) -> list[int]:
    return [v["idVisit"] for v in visits]


def assert_same_live_answers(
    client: httpx.Client, url_a: str, url_b: str, idsite: int, offset: int, limit: int
) -> None:
    """Two simulators answer the day's whole Live listing, and one ascending page, byte for
    byte alike."""
    page = {"filter_limit": limit, "filter_offset": offset, "filter_sort_order": "asc"}
    for params in ({"filter_limit": -1}, page):
        answers = [
            api(client, url, "Live.getLastVisitsDetails", idSite=idsite, period="day",
                date=DAY, **params).content
            for url in (url_a, url_b)
        ]  # fmt: skip
        assert answers[0] == answers[1], params


def stamps_of(visits: list[Any]) -> list[int]:
    return [v["lastActionTimestamp"] for v in visits]


def day_bounds(day: str, tz: tzinfo = UTC) -> tuple[int, int]:
    d = date.fromisoformat(day)
    nxt = d + timedelta(days=1)
    return (
        int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()),
        int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()),
    )


def pretty(sec: int) -> str:
    if sec >= 3600:
        return f"{sec // 3600} hours {sec // 60 % 60} min"
    return f"{sec // 60} min {sec % 60}s" if sec >= 60 else f"{sec}s"


def _utc_of(local_ts: int, tz: tzinfo) -> int:
    """Invert the site-local shift of actionDetails[].timestamp (unique off fall-back hours)."""

    def off(ts: int) -> int:
        delta = datetime.fromtimestamp(ts, tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    found = {local_ts - o for o in {off(local_ts + d) for d in (-86400, 0, 86400)}}
    found = {t for t in found if t + off(t) == local_ts}
    assert len(found) == 1, (local_ts, found)
    return found.pop()


def _check_visit_coherence(v: dict[str, Any], tz: tzinfo) -> None:
    """Every field derived from the visit's actions agrees with them (any timezone)."""
    last, first = v["lastActionTimestamp"], v["firstActionTimestamp"]
    assert v["serverTimestamp"] == last and first <= last
    utc = datetime.fromtimestamp(last, UTC)
    local = datetime.fromtimestamp(last, tz)
    assert v["serverDate"] == utc.date().isoformat()
    assert v["lastActionDateTime"] == utc.strftime("%Y-%m-%d %H:%M:%S")
    assert v["visitServerHour"] == str(utc.hour)
    assert v["serverTimePretty"] == local.strftime("%H:%M:%S")
    assert v["serverDatePretty"] == local.strftime("%A, %B ") + f"{local.day}, {local.year}"
    entries = v["actionDetails"]
    types = Counter(e["type"] for e in entries)
    assert v["actions"] == len(entries) - types["goal"]
    assert v["interactions"] == types["action"] + types["search"]
    assert v["searches"] == types["search"] and v["events"] == types["event"]
    assert v["goalConversions"] == types["goal"]
    # Entry timestamps are site-local wall clocks read as UTC; undo that per entry.
    real = [_utc_of(e["timestamp"], tz) for e in entries]
    assert real == sorted(real) and real[0] == first and real[-1] == last
    duration = v["visitDuration"]
    assert (duration == 0) if last == first else (0 <= duration - (last - first) <= 2)
    assert v["visitDurationPretty"] == pretty(duration)
    views = [(j, t) for j, (e, t) in enumerate(zip(entries, real, strict=True))
             if e["type"] == "action"]  # fmt: skip
    for (j, t), nxt in zip(views, [t for _, t in views[1:]] + [last], strict=True):
        assert entries[j]["timeSpent"] == nxt - t, (j, entries)
        assert entries[j]["timeSpentPretty"] == pretty(nxt - t)
    positions = [e["pageviewPosition"] for e in entries if e["type"] in ("action", "search")]
    assert positions == list(range(1, len(positions) + 1))
    page_ids = [e["pageId"] for e in entries if e["type"] != "goal"]
    assert page_ids == sorted(page_ids) and len(set(page_ids)) == len(page_ids)
    assert all(v["idVisit"] * 8 <= x < v["idVisit"] * 8 + 8 for x in page_ids)


def test_coherence_checker_accepts_plain_visits(sim: MatomoSimulator) -> None:
    for idsite, day, tz in [(1, DAY, UTC), (2, DAY, PARIS), (2, "2024-03-31", PARIS),
                            (6, DAY, ZoneInfo("America/New_York"))]:  # fmt: skip
        for v in sim.expected_visits(idsite, day):
            _check_visit_coherence(v, tz)


def test_tie_group_makes_groups_of_equal_last_action(client: httpx.Client) -> None:
    with MatomoSimulator(hazard_config()) as s:
        visits = live(client, s.url, 1, DAY, filter_limit=-1, filter_sort_order="asc")
        assert visits == s.expected_visits(1, DAY) and len(visits) == 300
        start, end = day_bounds(DAY)
        ts = stamps_of(visits)
        assert ts == sorted(ts) and all(start <= t < end for t in ts)
        groups = [ts[k : k + 10] for k in range(0, 300, 10)]
        assert all(len(set(g)) == 1 for g in groups)
        leaders = [g[0] for g in groups]
        assert leaders == sorted(set(leaders))  # different groups, different seconds
        assert leaders[-1] - leaders[0] > 23 * 3600  # still spread over the whole day
        # idVisit still follows the ascending order, and the rest of the visit is unchanged.
        assert ids(visits) == sorted(ids(visits))
        # Strict minTimestamp: a group's second excludes the whole group.
        got = live(client, s.url, 1, DAY, minTimestamp=leaders[4], filter_limit=15,
                   filter_sort_order="asc")  # fmt: skip
        assert got == visits[50:65]
        got = live(client, s.url, 1, DAY, minTimestamp=leaders[4] - 1, filter_limit=-1)
        assert got == visits[40:][::-1]
    # tie_group=1 is the default, byte for byte.
    one = hazard_config()
    one.sites[0].tie_group = 1
    plain = hazard_config()
    plain.sites[0] = SimSite(1, "Ties", "UTC", visits={DAY: 300})
    with MatomoSimulator(one) as a, MatomoSimulator(plain) as b:
        assert_same_live_answers(client, a.url, b.url, 1, offset=7, limit=30)
        assert len(set(stamps_of(a.expected_visits(1, DAY)))) == 300


def _page_through(
    client: httpx.Client, url: str, idsite: int, limit: int, total: int, **kw: Any
) -> list[list[Any]]:
    return [
        live(client, url, idsite, DAY, filter_limit=limit, filter_offset=off, **kw)
        for off in range(0, total, limit)
    ]


def test_unstable_ties_make_offset_paging_skip_and_repeat(client: httpx.Client) -> None:
    with MatomoSimulator(hazard_config()) as stable, \
            MatomoSimulator(hazard_config(unstable_ties=True)) as s:  # fmt: skip
        expected = stable.expected_visits(1, DAY)
        all_ids = set(ids(expected))
        for order in ("asc", "desc"):
            ref = _page_through(client, stable.url, 1, 7, 300, filter_sort_order=order)
            pages = _page_through(client, s.url, 1, 7, 300, filter_sort_order=order)
            # The stable order partitions the day; the unstable one only keeps each page's
            # seconds, so visits of a group cut by a page boundary are lost and repeated.
            assert [v for p in ref for v in p] == (expected if order == "asc" else expected[::-1])
            assert [stamps_of(p) for p in pages] == [stamps_of(p) for p in ref]
            got = [i for p in pages for i in ids(p)]
            assert len(got) == 300
            assert len(set(got)) < 300 and set(got) < all_ids  # repeats and skips
            # Inside a page the visits are whole and genuine, only reordered.
            by_id = {v["idVisit"]: v for v in expected}
            assert all(v == by_id[v["idVisit"]] for p in pages for v in p)
        # One big request still has every visit once, seconds in order, groups shuffled.
        for order in ("asc", "desc"):
            whole = live(client, s.url, 1, DAY, filter_limit=-1, filter_sort_order=order)
            ref_whole = expected if order == "asc" else expected[::-1]
            assert sorted(ids(whole)) == sorted(all_ids) and len(whole) == 300
            assert stamps_of(whole) == stamps_of(ref_whole)
            reordered = [ids(whole)[k : k + 10] != ids(ref_whole)[k : k + 10]
                         for k in range(0, 300, 10)]  # fmt: skip
            assert sum(reordered) >= 25  # every group of 10 is shuffled, not just the edges
        # minTimestamp keeps its strict set; a new request reshuffles.
        t = expected[95]["lastActionTimestamp"]
        after = {v["idVisit"] for v in expected if v["lastActionTimestamp"] > t}
        a = live(client, s.url, 1, DAY, minTimestamp=t, filter_limit=-1, filter_sort_order="asc")
        b = live(client, s.url, 1, DAY, minTimestamp=t, filter_limit=-1, filter_sort_order="asc")
        assert set(ids(a)) == set(ids(b)) == after and len(a) == len(after) == 200
        assert ids(a) != ids(b)
        # Sites without equal seconds are unaffected.
        assert (
            live(client, s.url, 2, "2024-03-12", filter_limit=-1)
            == stable.expected_visits(2, "2024-03-12")[::-1]
        )
    # Deterministic for a given sequence of requests.
    runs = []
    for _ in range(2):
        with MatomoSimulator(hazard_config(unstable_ties=True)) as s:
            runs.append(_page_through(client, s.url, 1, 7, 300, filter_sort_order="asc"))
    assert runs[0] == runs[1]


def test_unstable_ties_on_a_million_visit_day_stay_lazy(client: httpx.Client) -> None:
    with MatomoSimulator(hazard_config()) as stable, \
            MatomoSimulator(hazard_config(unstable_ties=True)) as s:  # fmt: skip
        for kw in ({"filter_offset": 600_000, "filter_sort_order": "asc"}, {"filter_offset": 5}):
            ref = live(client, stable.url, 3, DAY, filter_limit=1000, **kw)
            t0 = time.perf_counter()
            got = live(client, s.url, 3, DAY, filter_limit=1000, **kw)
            elapsed = time.perf_counter() - t0
            assert stamps_of(got) == stamps_of(ref)
            # ~12 visits a second: the boundary seconds trade visits with the next pages.
            assert set(ids(got)) != set(ids(ref)) or ids(got) != ids(ref)
            assert elapsed < 5
        assert not s._states  # nothing materialised for instability alone


def test_late_visits_hidden_until_released(client: httpx.Client) -> None:
    plain_cfg = hazard_config()
    plain_cfg.sites[1].late = {}
    with MatomoSimulator(hazard_config()) as s, MatomoSimulator(plain_cfg) as plain:
        everything = plain.expected_visits(2, DAY)
        hidden = s.hidden_visit_ids(2, DAY)
        assert len(hidden) == 15 and hidden < set(ids(everything))
        # Spread over the day, not bunched at one end.
        hidden_ts = sorted(v["lastActionTimestamp"] for v in everything if v["idVisit"] in hidden)
        start, end = day_bounds(DAY, PARIS)
        assert hidden_ts[0] < start + 2 * 3600 and hidden_ts[-1] > end - 2 * 3600
        visible = [v for v in everything if v["idVisit"] not in hidden]
        assert s.visit_count(2, DAY) == 185 and s.expected_visits(2, DAY) == visible
        assert live(client, s.url, 2, DAY, filter_limit=-1, filter_sort_order="asc") == visible
        assert live(client, s.url, 2, DAY, filter_limit=-1) == visible[::-1]
        pages = _page_through(client, s.url, 2, 40, 200, filter_sort_order="asc")
        assert [v for p in pages for v in p] == visible
        t = visible[100]["lastActionTimestamp"]
        got = live(client, s.url, 2, DAY, minTimestamp=t, filter_limit=-1, filter_sort_order="asc")
        assert got == visible[101:]
        summary = api(client, s.url, "VisitsSummary.get", idSite=2, period="day",
                      date=DAY).json()  # fmt: skip
        assert summary["nb_visits"] == 185
        assert summary["nb_actions"] == sum(v["actions"] for v in visible)
        # The other late day, and release of one day only.
        assert len(s.hidden_visit_ids(2, "2024-03-11")) == 3
        assert len(live(client, s.url, 2, "2024-03-11", filter_limit=-1)) == 4
        s.release_late(2, DAY)
        assert s.hidden_visit_ids(2, DAY) == set()
        assert len(s.hidden_visit_ids(2, "2024-03-11")) == 3
        # In their normal place, byte for byte.
        assert_same_live_answers(client, s.url, plain.url, 2, offset=20, limit=50)
        summary = api(client, s.url, "VisitsSummary.get", idSite=2, period="day", date=DAY)
        assert summary.json()["nb_visits"] == 200
        assert summary.content == api(client, plain.url, "VisitsSummary.get", idSite=2,
                                      period="day", date=DAY).content  # fmt: skip
        s.release_late()
        assert len(live(client, s.url, 2, "2024-03-11", filter_limit=-1)) == 7
        assert s.visit_count(2, DAY) == 200


def test_grow_visits_moves_visits_later(client: httpx.Client) -> None:
    with MatomoSimulator(hazard_config()) as s:
        before = s.expected_visits(2, DAY)  # 185 visible (15 late)
        old = {v["idVisit"]: v for v in before}
        summary0 = api(client, s.url, "VisitsSummary.get", idSite=2, period="day",
                       date=DAY).json()  # fmt: skip
        grown = s.grow_visits(2, DAY, 4)
        assert len(set(grown)) == 4 and set(grown) <= set(old)
        assert not set(grown) & s.hidden_visit_ids(2, DAY)
        start, end = day_bounds(DAY, PARIS)
        spread = sorted(old[i]["lastActionTimestamp"] for i in grown)
        assert spread[0] < start + 6 * 3600 and spread[-1] > end - 6 * 3600
        after = live(client, s.url, 2, DAY, filter_limit=-1, filter_sort_order="asc")
        assert len(after) == 185 and set(ids(after)) == set(old)
        assert stamps_of(after) == sorted(stamps_of(after))
        assert after == s.expected_visits(2, DAY)
        assert live(client, s.url, 2, DAY, filter_limit=-1) == after[::-1]
        new = {v["idVisit"]: v for v in after}
        changed_keys = {
            "actionDetails", "serverDate", "visitServerHour", "lastActionTimestamp",
            "lastActionDateTime", "serverTimestamp", "serverTimePretty", "serverDatePretty",
            "visitDuration", "visitDurationPretty", "actions", "interactions",
        }  # fmt: skip
        for i in grown:
            o, v = old[i], new[i]
            _check_visit_shape(v, max_entries=7)
            _check_visit_coherence(v, PARIS)
            delta = v["lastActionTimestamp"] - o["lastActionTimestamp"]
            assert 60 <= delta <= 8 * 60 and v["lastActionTimestamp"] < end
            assert {k for k in v if v[k] != o[k]} <= changed_keys
            assert v["actions"] == o["actions"] + 1 and v["interactions"] == o["interactions"] + 1
            assert v["firstActionTimestamp"] == o["firstActionTimestamp"]
            assert len(v["actionDetails"]) == len(o["actionDetails"]) + 1
            assert v["actionDetails"][:-1] != o["actionDetails"]  # previous page's timeSpent
            extra = v["actionDetails"][-1]
            assert extra["type"] == "action" and extra["timeSpent"] == 0
            assert extra["pageId"] == v["idVisit"] * 8 + len(o["actionDetails"])
            assert extra["timestamp"] == v["lastActionTimestamp"] + 3600  # Paris, CET
            assert extra["url"].startswith("https://late.example.org/")
        # Unchanged visits are byte-identical.
        assert all(new[i] == old[i] for i in old if i not in grown)
        # The order follows the new time; minTimestamp filters on it.
        i = grown[0]
        pos = ids(after).index(i)
        assert after[pos - 1]["lastActionTimestamp"] <= new[i]["lastActionTimestamp"]
        if pos + 1 < len(after):
            assert after[pos + 1]["lastActionTimestamp"] >= new[i]["lastActionTimestamp"]
        got = live(client, s.url, 2, DAY, minTimestamp=old[i]["lastActionTimestamp"],
                   filter_limit=-1, filter_sort_order="asc")  # fmt: skip
        assert i in ids(got)
        t_new = new[i]["lastActionTimestamp"]
        got = live(client, s.url, 2, DAY, minTimestamp=t_new - 1, filter_limit=-1,
                   filter_sort_order="asc")  # fmt: skip
        assert got[0]["lastActionTimestamp"] >= t_new and i in ids(got)
        assert got == [v for v in after if v["lastActionTimestamp"] > t_new - 1]
        got = live(client, s.url, 2, DAY, minTimestamp=t_new, filter_limit=-1)
        assert i not in ids(got) and all(v["lastActionTimestamp"] > t_new for v in got)
        # Pages still partition the day; the summary counts the extra actions.
        pages = _page_through(client, s.url, 2, 30, 185, filter_sort_order="asc")
        assert [v for p in pages for v in p] == after
        summary = api(client, s.url, "VisitsSummary.get", idSite=2, period="day",
                      date=DAY).json()  # fmt: skip
        assert summary["nb_visits"] == 185
        assert summary["nb_actions"] == summary0["nb_actions"] + 4
        # Growing again picks other visits; releasing late visits keeps the grown ones.
        again = s.grow_visits(2, DAY, 3)
        assert len(again) == 3 and not set(again) & set(grown)
        s.release_late(2, DAY)
        final = live(client, s.url, 2, DAY, filter_limit=-1, filter_sort_order="asc")
        assert len(final) == 200 and stamps_of(final) == sorted(stamps_of(final))
        assert {v["idVisit"]: v for v in final}[i] == new[i]
        assert s.visit(2, DAY, i & ((1 << 24) - 1)) == new[i]


def test_visit_has_moved_in_the_order(client: httpx.Client) -> None:
    """A grown visit overtakes the visits of the minutes after its old last action."""
    cfg = hazard_config()
    cfg.sites[0] = SimSite(1, "Dense", "UTC", visits={DAY: 5000})  # one visit every ~17 s
    with MatomoSimulator(cfg) as s:
        before = ids(s.expected_visits(1, DAY))
        grown = s.grow_visits(1, DAY, 5)
        after = ids(live(client, s.url, 1, DAY, filter_limit=-1, filter_sort_order="asc"))
        for i in grown:
            assert after.index(i) > before.index(i) + 2  # >= 60 s later: 3+ visits overtaken
        assert [i for i in after if i not in grown] == [i for i in before if i not in grown]


def test_grow_visits_stays_inside_the_site_day(client: httpx.Client) -> None:
    day = "2024-03-31"  # 23 hours in Paris; 2000 visits leave under a minute after the last
    with MatomoSimulator(hazard_config()) as s:
        visits = s.expected_visits(4, day)
        start, end = day_bounds(day, PARIS)
        with pytest.raises(ValueError, match=r"only (\d+) visits") as exc:
            s.grow_visits(4, day, 2000)
        m = re.search(r"only (\d+) visits", str(exc.value))
        assert m is not None
        can = int(m.group(1))
        assert 1900 < can < 2000
        grown = set(s.grow_visits(4, day, can))
        never = {v["idVisit"] for v in visits if v["lastActionTimestamp"] >= end - 60}
        assert never and not never & grown
        after = s.expected_visits(4, day)
        assert len(after) == 2000 and stamps_of(after) == sorted(stamps_of(after))
        assert all(start <= t < end for t in stamps_of(after))
        for v in after:
            if v["idVisit"] in grown:
                _check_visit_coherence(v, PARIS)
        with pytest.raises(ValueError):
            s.grow_visits(4, day, 1)
        assert s.grow_visits(4, day, 0) == []


def test_hazard_days_stream_and_survive_concurrency(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sim_live, "_STREAM_THRESHOLD", 50)
    monkeypatch.setattr(sim_live, "_STREAM_BATCH", 16)
    with MatomoSimulator(hazard_config()) as s:
        s.grow_visits(2, DAY, 10)
        r = api(client, s.url, "Live.getLastVisitsDetails", idSite=2, period="day", date=DAY,
                filter_limit=-1, filter_sort_order="asc")  # fmt: skip
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.json() == s.expected_visits(2, DAY)

        stop = threading.Event()
        errors: list[str] = []

        def reader() -> None:
            with httpx.Client(timeout=20) as c:
                while not stop.is_set():
                    got = live(c, s.url, 2, DAY, filter_limit=-1, filter_sort_order="asc")
                    if stamps_of(got) != sorted(stamps_of(got)) or len(got) not in (185, 200):
                        errors.append(f"{len(got)} visits")
                    if len(set(ids(got))) != len(got):
                        errors.append("duplicate")

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(5):
            s.grow_visits(2, DAY, 5)
            time.sleep(0.02)
        s.release_late()
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        assert s.visit_count(2, DAY) == 200
        assert live(client, s.url, 2, DAY, filter_limit=-1)[::-1] == s.expected_visits(2, DAY)


# --------------------------------------------------------------------------------------
# Metadata in bulk: API.getBulkRequest and SitesManager.getSitesWithAtLeastViewAccess
# --------------------------------------------------------------------------------------
def test_bulk_request_answers_in_order_with_errors_inline(
    sim: MatomoSimulator, client: httpx.Client
) -> None:
    urls = {
        "urls[0]": "method=Goals.getGoals&idSite=1",
        "urls[1]": "method=CustomDimensions.getConfiguredCustomDimensions&idSite=2",
        "urls[2]": "method=Nope.nothing&idSite=1",
        "urls[3]": "method=SitesManager.getSiteFromId&idSite=999",
    }
    answers = api(client, sim.url, "API.getBulkRequest", **urls).json()
    assert len(answers) == 4
    calls = (("Goals.getGoals", 1), ("CustomDimensions.getConfiguredCustomDimensions", 2))
    alone = [api(client, sim.url, method, idSite=site).json() for method, site in calls]
    assert answers[:2] == alone
    assert answers[2]["result"] == "error" and "Nope" in answers[2]["message"]
    assert answers[3]["result"] == "error"


def test_a_fault_inside_a_bulk_request(client: httpx.Client) -> None:
    """An envelope on a sub-request stays inline; a status fault fails the whole request."""
    faults = [
        Fault(kind="envelope", method="Goals.getGoals", idsite=2, message="gone", times=1),
        Fault(kind="status", method="Goals.getGoals", idsite=1, status=502, times=1),
    ]
    with MatomoSimulator(SimConfig(token=TOKEN, sites=main_config().sites, faults=faults)) as s:
        both = {"urls[0]": "method=Goals.getGoals&idSite=1",
                "urls[1]": "method=Goals.getGoals&idSite=2"}  # fmt: skip
        assert api(client, s.url, "API.getBulkRequest", **both).status_code == 502
        answers = api(client, s.url, "API.getBulkRequest", **both).json()
        assert answers[1] == {"result": "error", "message": "gone"}
        assert isinstance(answers[0], list)


def test_sites_with_view_access_are_the_sites_as_get_site_from_id_gives_them(
    sim: MatomoSimulator, client: httpx.Client
) -> None:
    sites = api(client, sim.url, "SitesManager.getSitesWithAtLeastViewAccess").json()
    one = [api(client, sim.url, "SitesManager.getSiteFromId", idSite=s["idsite"]).json()
           for s in sites]  # fmt: skip
    assert sites == one and len(sites) >= 2
