"""The consumers' contract: every message value matomo-kafka makes validates against
message.schema.json (JSON Schema draft 2020-12), from every real Matomo 5.0.2 and 4.15.1 Live
answer and from the simulator's visits, always through the real code path (MatomoClient,
parse_dimensions/parse_goals, SiteTransform, page_messages); the schema does reject bad
messages; docs/message.schema.json links to what `matomo-kafka schema` prints; the example in
docs/consumers.md is an excerpt of a real message.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from matomo_kafka.simulator import MATOMO_VERSIONS, MatomoSimulator, SimConfig, SimSite
from matomo_kafka.simulator.visits.php_json import php_json
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.transform.schema import message_schema, message_schema_text
from matomo_kafka.transform.visits import (
    SiteTransform,
    page_messages,
    parse_dimensions,
    parse_goals,
)
from support.cli import run_cli
from support.kafka import REPO
from support.parm import SALT, TOKEN
from support.samples import MATOMO_4, MATOMO_5, sample_bytes, sample_files, sample_json

pytestmark = [pytest.mark.simulator]

#: The configuration of every test here: custom dimensions 1 "Plan" (visit scope) and
#: 2 "Page Type" (action scope) renamed; these columns pseudonymised ("Plan" by its raw key).
COLUMNS = ("visitIp", "visitorId", "userId", "fingerprint", "dimension1", "actionDetails.url")
PSEUDONYMISED_VISIT = ("visitIp", "visitorId", "userId", "fingerprint", "Plan")
PSEUDONYMISED_ACTION = ("url",)
ACTION_KINDS = {"action", "event", "search", "outlink", "download", "goal"}
DOCS = REPO / "docs"

SCHEMA = message_schema()
VALIDATOR = Draft202012Validator(SCHEMA)
PSEUDONYM = Draft202012Validator(SCHEMA["$defs"]["pseudonym"])


def transform_of(
    idsite: int, dimensions: list[dict[str, Any]], goals: list[dict[str, Any]]
) -> SiteTransform:
    return SiteTransform.build(
        idsite, parse_dimensions(dimensions, idsite), parse_goals(goals, idsite), COLUMNS, SALT
    )


def sample_transform(version: Path, idsite: int) -> SiteTransform:
    return transform_of(
        idsite,
        sample_json(f"customdimensions_site{idsite}", version),
        sample_json(f"goals_site{idsite}", version),
    )


def messages(raw: bytes, idsite: int, day: date, transform: SiteTransform) -> Iterator[Any]:
    """The values page_messages makes of a Live page (keys checked on the way)."""
    for message in page_messages(raw, idsite, day, 10_000, transform).items:
        value = orjson.loads(message.value)
        assert message.key == f"{idsite}:{int(value['idVisit'])}".encode()
        yield value


def schema_errors(value: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in VALIDATOR.iter_errors(value)
    ]


def check_message(value: dict[str, Any], kinds: Counter[str] | None = None) -> None:
    """Valid against the schema, and as the schema's descriptions say: dimensions renamed,
    configured columns pseudonymised (or null), every goal entry of a known goal named."""
    errors = schema_errors(value)
    assert not errors, f"visit {value.get('idVisit')}: {errors}"
    assert not [key for key in value if key.startswith("dimension")], value["idVisit"]
    for column in PSEUDONYMISED_VISIT:
        assert value[column] is None or PSEUDONYM.is_valid(value[column]), column
    for action in value["actionDetails"]:
        assert "Page Type" in action and "dimension2" not in action, action
        for column in PSEUDONYMISED_ACTION:
            if column in action:
                assert action[column] is None or PSEUDONYM.is_valid(action[column]), action
        if action["type"] == "goal" and action["goalId"] is not None:  # null: a deleted goal
            assert isinstance(action["goalName"], str) and action["goalName"], action
        if kinds is not None:
            kinds[action["type"]] += 1


# -- the schema itself ------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["additionalProperties"] is True
    assert {"idSite", "idVisit", "lastActionTimestamp", "actionDetails"} <= set(SCHEMA["required"])


def test_every_listed_field_is_described() -> None:
    action = SCHEMA["$defs"]["action"]
    for where, properties in (("visit", SCHEMA["properties"]), ("action", action["properties"])):
        for name, field in properties.items():
            assert field.get("description"), f"{where} field {name} has no description"


# -- real Matomo answers ----------------------------------------------------------------------

LIVE_PAGE = re.compile(r"live_site(\d+)_.*?(\d{4}-\d{2}-\d{2})")


@pytest.mark.parametrize(
    ("version", "files_at_least", "visits"),
    [(MATOMO_5, 11, 16), (MATOMO_4, 1, 3)],
    ids=["5.0.2", "4.15.1"],
)
def test_every_real_sample_gives_valid_messages(
    version: Path, files_at_least: int, visits: int
) -> None:
    """Every Live answer captured from a real Matomo of this version (all of its pages of
    visits: empty days too; in 5.0.2 a visit whose secondsSinceFirstVisit and
    secondsSinceLastVisit are null), transformed with its own site's dimensions and goals."""
    kinds: Counter[str] = Counter()
    made = 0
    for path in sample_files("live_site*.json", version, at_least=files_at_least):
        found = LIVE_PAGE.match(path.name)
        assert found is not None, f"{path.name}: no site and day in the name"
        idsite, day = int(found.group(1)), date.fromisoformat(found.group(2))
        raw = path.read_bytes()
        for value in messages(raw, idsite, day, sample_transform(version, idsite)):
            check_message(value, kinds)
            made += 1
    assert made == visits  # the visits of all its pages (some captured pages overlap)
    assert {"action", "goal", "search"} <= set(kinds)


def test_digit_strings_of_older_matomo_versions_pass_through_valid() -> None:
    """Older Matomo versions give ids and timestamps as digit strings: the transform passes
    them through (the key still has the integer form) and the schema accepts them."""
    page = sample_json("live_site1_2024-03-10_asc_limit2_off0")
    for visit in page:
        for key in ("idSite", "idVisit", "firstActionTimestamp", "lastActionTimestamp"):
            visit[key] = str(visit[key])
        for action in visit["actionDetails"]:
            action["timestamp"] = str(action["timestamp"])
            if "goalId" in action:
                del action["goalName"]
                action["goalId"] = str(action["goalId"])
    raw = orjson.dumps(page)
    values = list(messages(raw, 1, date(2024, 3, 10), sample_transform(MATOMO_5, 1)))
    assert values and values[0]["idVisit"] == "1"
    for value in values:
        check_message(value)


# -- the simulator's visits -------------------------------------------------------------------


def simulated_sites() -> list[SimSite]:
    """Three sites, timezones either side of UTC, a DST change (2024-03-31 in Paris), a site
    whose visits end in groups of three per second."""
    return [
        SimSite(idsite=1, name="Shop UTC", timezone="UTC",
                visits={"2024-03-30": 130, "2024-03-31": 90}),
        SimSite(idsite=2, name="Boutique Paris", timezone="Europe/Paris", currency="EUR",
                visits={"2024-03-30": 100, "2024-03-31": 70}),
        SimSite(idsite=3, name="Store New York", timezone="America/New_York", tie_group=3,
                visits={"2024-03-30": 80, "2024-03-31": 60}),
    ]  # fmt: skip


@pytest.mark.parametrize("version", MATOMO_VERSIONS)
def test_simulator_visits_over_http_give_valid_messages(
    sim_factory: Callable[..., MatomoSimulator], version: str
) -> None:
    """Hundreds of simulated visits, read page by page over real HTTP by MatomoClient with
    each site's dimensions and goals as the simulator answers them."""
    simulator = sim_factory(simulated_sites(), matomo_version=version, seed=20240331)
    kinds: Counter[str] = Counter()
    visits = 0
    limit = 50
    with MatomoClient(simulator.url, TOKEN) as client:
        for site in simulated_sites():
            idsite = site.idsite
            transform = transform_of(idsite, client.custom_dimensions(idsite), client.goals(idsite))
            for text in site.visits:
                day = date.fromisoformat(text)
                offset = 0
                while True:
                    raw = client.visits_page_raw(idsite, day, limit, offset)
                    page = list(messages(raw, idsite, day, transform))
                    for value in page:
                        check_message(value, kinds)
                    offset += len(page)
                    if len(page) < limit:
                        break
                assert offset == simulator.visit_count(idsite, day)
                visits += offset
    assert visits == 530
    assert set(kinds) == ACTION_KINDS, kinds


TIMEZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "America/Los_Angeles")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(-(2**31), 2**31),
    idsite=st.integers(1, 2047),
    timezone=st.sampled_from(TIMEZONES),
    currency=st.sampled_from(("USD", "EUR", "GBP", "JPY", "CHF")),
    day=st.dates(date(2020, 1, 1), date(2026, 12, 31)),
    visits=st.integers(1, 20_000),
    position=st.floats(0, 1, exclude_max=True),
    tie_group=st.integers(1, 4),
)
def test_any_simulated_visit_gives_a_valid_message(
    seed: int,
    idsite: int,
    timezone: str,
    currency: str,
    day: date,
    visits: int,
    position: float,
    tie_group: int,
) -> None:
    """Any visit of any simulated day (sites, timezones, currencies, seeds), served as the
    simulator serves it (php_json) and made a message by page_messages."""
    site = SimSite(idsite=idsite, name=f"Site {idsite}", timezone=timezone, currency=currency,
                   visits={day.isoformat(): visits}, tie_group=tie_group)  # fmt: skip
    simulator = MatomoSimulator(SimConfig(token=TOKEN, sites=[site], seed=seed))
    visit = simulator.visit(idsite, day, int(position * visits))
    # The simulator names the same dimensions and goals as the real samples.
    dimensions, goals = sample_json("customdimensions_site1"), sample_json("goals_site1")
    transform = transform_of(idsite, dimensions, goals)
    (value,) = messages(php_json([visit]), idsite, day, transform)
    check_message(value)


# -- what Matomo's code can send ----------------------------------------------------------------

#: Each visit field the schema lists: the core plugin whose VisitorDetails.php sets it, and
#: whether it can be null, as read in matomo-org/matomo 4.15.1 and 5.0.2 (the same in both):
#: null where the getter passes a NULL-able log_visit column through (plugins/*/Columns/*.php
#: give the column types), or returns null itself (CoreHome's getUserId, Referrers' URLs,
#: UserCountry's city, Live's getIp for an anonymous token).
VISIT_FIELDS: dict[str, tuple[str, bool]] = {
    "idSite": ("Live", False), "idVisit": ("Live", False), "visitIp": ("Live", True),
    "visitorId": ("Live", False), "fingerprint": ("Live", False),
    "actionDetails": ("Live", False), "siteCurrency": ("Live", False),
    "siteCurrencySymbol": ("Live", True), "siteName": ("Live", False),
    "serverDate": ("Live", False), "visitServerHour": ("Live", False),
    "lastActionTimestamp": ("Live", False), "lastActionDateTime": ("Live", False),
    "serverTimestamp": ("Live", False), "firstActionTimestamp": ("Live", False),
    "goalConversions": ("Goals", False),
    "userId": ("CoreHome", True), "visitorType": ("CoreHome", False),
    "visitConverted": ("CoreHome", True), "visitCount": ("CoreHome", False),
    "visitEcommerceStatus": ("CoreHome", False), "visitDuration": ("CoreHome", False),
    "daysSinceFirstVisit": ("CoreHome", False), "secondsSinceFirstVisit": ("CoreHome", True),
    "daysSinceLastEcommerceOrder": ("CoreHome", False),
    "secondsSinceLastEcommerceOrder": ("CoreHome", True),
    "visitLocalTime": ("VisitTime", True), "visitLocalHour": ("VisitTime", False),
    "daysSinceLastVisit": ("VisitorInterest", False),
    "secondsSinceLastVisit": ("VisitorInterest", True),
    "referrerType": ("Referrers", False), "referrerTypeName": ("Referrers", False),
    "referrerName": ("Referrers", False), "referrerKeyword": ("Referrers", False),
    "referrerKeywordPosition": ("Referrers", True), "referrerUrl": ("Referrers", True),
    "referrerSearchEngineUrl": ("Referrers", True),
    "referrerSocialNetworkUrl": ("Referrers", True),
    "deviceType": ("DevicesDetection", False), "deviceBrand": ("DevicesDetection", False),
    "deviceModel": ("DevicesDetection", False), "operatingSystem": ("DevicesDetection", False),
    "operatingSystemName": ("DevicesDetection", False),
    "operatingSystemCode": ("DevicesDetection", True),
    "operatingSystemVersion": ("DevicesDetection", True),
    "browser": ("DevicesDetection", False), "browserName": ("DevicesDetection", False),
    "browserCode": ("DevicesDetection", True), "browserVersion": ("DevicesDetection", True),
    "browserFamily": ("DevicesDetection", True),
    "browserFamilyDescription": ("DevicesDetection", False),
    "plugins": ("DevicePlugins", False), "resolution": ("Resolution", True),
    "languageCode": ("UserLanguage", True), "language": ("UserLanguage", False),
    "continent": ("UserCountry", False), "continentCode": ("UserCountry", False),
    "country": ("UserCountry", False), "countryCode": ("UserCountry", True),
    "region": ("UserCountry", True), "regionCode": ("UserCountry", True),
    "city": ("UserCountry", True), "location": ("UserCountry", False),
    "latitude": ("UserCountry", True), "longitude": ("UserCountry", True),
    "searches": ("Actions", True), "actions": ("Actions", True),
    "interactions": ("Actions", True), "events": ("Events", True),
}  # fmt: skip
#: Plugins that are always active (Matomo's Plugin\\Manager::$pluginToAlwaysActivate, and
#: Live, without which there is no Live API): their fields are never absent.
ALWAYS_ACTIVE = {"Live", "CoreHome"}
#: Fields of actionDetails entries that can be null (LEFT JOINs of log_action and goal, NULL
#: columns of log_link_visit_action and log_conversion; Actions, Events, Goals).
NULLABLE_ACTION = (
    "url", "pageTitle", "pageIdAction", "idpageview", "pageviewPosition", "eventCategory",
    "eventAction", "eventName", "siteSearchKeyword", "siteSearchCategory", "siteSearchCount",
    "goalId", "goalName", "revenue", "goalPageId", "referrerType", "referrerName",
    "referrerKeyword",
)  # fmt: skip
#: Integer fields filled from a log column: digit strings where Matomo's database driver
#: returns strings (PHP before 8.1).
DB_INTEGERS = (
    "idSite", "idVisit", "visitCount", "visitDuration", "secondsSinceFirstVisit",
    "secondsSinceLastVisit", "secondsSinceLastEcommerceOrder", "visitConverted", "actions",
    "interactions", "searches", "events",
)  # fmt: skip


def test_schema_lists_every_field_matomo_code_sends_with_its_plugin() -> None:
    """The schema's visit fields are those of the table above, each described from the
    plugin that sets it."""
    assert set(SCHEMA["properties"]) == set(VISIT_FIELDS)
    for name, (plugin, _) in VISIT_FIELDS.items():
        assert re.match(rf"{plugin}[ .]", SCHEMA["properties"][name]["description"]), name
    for name, field in SCHEMA["$defs"]["action"]["properties"].items():
        assert re.match(r"(Actions|Events|Goals)[ ,.]", field["description"]), name


def test_schema_allows_null_exactly_where_matomo_can_send_it() -> None:
    """A real message with one field set to null is valid if and only if Matomo's code can
    give that field null (and in actionDetails entries, every field Matomo can null)."""
    good = real_message()
    for name, (_, nullable) in VISIT_FIELDS.items():
        value = copy.deepcopy(good)
        value[name] = None
        assert (not schema_errors(value)) == nullable, (name, schema_errors(value))
    value = copy.deepcopy(good)
    for action in value["actionDetails"]:
        for name in NULLABLE_ACTION:
            if name in action:
                action[name] = None
    assert not schema_errors(value)


def real_visits() -> list[dict[str, Any]]:
    """Every visit of every real Live answer, both versions (the raw answers, before the
    transform), with the site it was read for."""
    visits: list[dict[str, Any]] = []
    for version in (MATOMO_5, MATOMO_4):
        for path in sample_files("live_site*.json", version):
            visits.extend(orjson.loads(path.read_bytes()))
    return visits


REAL_VISITS = real_visits()
FIELD_CHOICES = ("keep", "null", "absent", "string")


def varied(visit: dict[str, Any], choose: Callable[[str, tuple[str, ...]], str]) -> dict[str, Any]:
    """The visit with each field kept, null (where Matomo can send null), absent (where its
    plugin can be deactivated) or a digit string (integers from a log column)."""
    out = copy.deepcopy(visit)
    for name, (plugin, nullable) in VISIT_FIELDS.items():
        options = ["keep"]
        if nullable:
            options.append("null")
        if plugin not in ALWAYS_ACTIVE:
            options.append("absent")
        if name in DB_INTEGERS and isinstance(out.get(name), int):
            options.append("string")
        choice = choose(name, tuple(options))
        if choice == "null":
            out[name] = None
        elif choice == "absent":
            out.pop(name, None)
        elif choice == "string":
            out[name] = str(out[name])
    for action in out["actionDetails"]:
        for name in NULLABLE_ACTION:
            if name in action and choose(f"action.{name}", ("keep", "null")) == "null":
                action[name] = None
    return out


def message_of(visit: dict[str, Any]) -> dict[str, Any]:
    (value,) = messages(php_json([visit]), int(visit["idSite"]), date(2024, 3, 10),
                        sample_transform(MATOMO_5, 1))  # fmt: skip
    result: dict[str, Any] = value
    return result


def test_a_visit_with_every_nullable_field_null_and_every_optional_field_absent() -> None:
    """The extreme: each real visit with all it can lose lost, and with all it can null
    nulled (the anonymous token's false visitorId and fingerprint too)."""
    for visit in REAL_VISITS:
        nulled = varied(visit, lambda _name, options: "null" if "null" in options else "keep")
        nulled["visitorId"] = nulled["fingerprint"] = False
        check_message(message_of(nulled))
        bare = varied(visit, lambda _name, options: "absent" if "absent" in options else "keep")
        assert set(bare) & set(VISIT_FIELDS) <= {
            name for name, (plugin, _) in VISIT_FIELDS.items() if plugin in ALWAYS_ACTIVE
        }
        check_message(message_of(bare))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(REAL_VISITS), data=st.data())
def test_any_visit_matomo_code_can_send_gives_a_valid_message(
    base: dict[str, Any], data: st.DataObject
) -> None:
    """Any real visit with any mix of nulls, absent plugin fields and digit strings, as
    Matomo 4 and 5 can send them, is a valid message after the transform."""

    def choose(name: str, options: tuple[str, ...]) -> str:
        choice: str = data.draw(st.sampled_from(options), label=name)
        return choice

    check_message(message_of(varied(base, choose)))


# -- the schema rejects what breaks the contract ----------------------------------------------


def real_message() -> dict[str, Any]:
    raw = sample_bytes("live_site1_2024-03-10_asc_limit2_off0")
    value: dict[str, Any] = next(messages(raw, 1, date(2024, 3, 10), sample_transform(MATOMO_5, 1)))
    return value


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda value: value.pop(key)


def _set(key: str, new: Any) -> Callable[[dict[str, Any]], None]:
    return lambda value: value.__setitem__(key, new)


def _goal(value: dict[str, Any]) -> dict[str, Any]:
    goal: dict[str, Any] = next(a for a in value["actionDetails"] if a["type"] == "goal")
    return goal


BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "idVisit missing": (_drop("idVisit"), "'idVisit' is a required property"),
    "idVisit not a number": (_set("idVisit", "x7"), "idVisit"),
    "idVisit a float": (_set("idVisit", 7.5), "idVisit"),
    "idSite null": (_set("idSite", None), "idSite"),
    "lastActionTimestamp missing": (_drop("lastActionTimestamp"), "lastActionTimestamp"),
    "serverDate not a date": (_set("serverDate", "10/03/2024"), "serverDate"),
    "actionDetails an object": (_set("actionDetails", {}), "actionDetails"),
    "an action without type": (
        lambda value: value["actionDetails"][0].pop("type"),
        "actionDetails/0: 'type' is a required property",
    ),
    "a goal without goalId": (
        lambda value: _goal(value).pop("goalId"),
        "'goalId' is a required property",
    ),
    "a dimension as a number": (_set("dimension7", 3), "dimension7"),
    "visitCount a boolean": (_set("visitCount", True), "visitCount"),
    "secondsSinceFirstVisit a word": (_set("secondsSinceFirstVisit", "soon"), "secondsSince"),
    "visitorId a number": (_set("visitorId", 7), "visitorId"),
    "visitorId true": (_set("visitorId", True), "visitorId"),
    "goalConversions true": (_set("goalConversions", True), "goalConversions"),
    "countryCode a number": (_set("countryCode", 33), "countryCode"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_schema_rejects_a_broken_message(name: str) -> None:
    good = real_message()
    assert not schema_errors(good)
    bad = copy.deepcopy(good)
    breaks, expected = BREAKS[name]
    breaks(bad)
    errors = schema_errors(bad)
    assert errors, f"{name}: the schema accepted it"
    assert any(expected in error for error in errors), errors


# -- what readers see: docs/ and `matomo-kafka schema` ----------------------------------------


def test_schema_command_prints_the_schema() -> None:
    result = run_cli("schema")
    assert result.code == 0, result.output
    assert result.stdout == message_schema_text()
    assert json.loads(result.stdout) == SCHEMA
    assert result.stderr == ""


def test_docs_schema_is_the_shipped_one() -> None:
    """docs/message.schema.json is a link to the file the package ships (one copy, no drift)."""
    path = DOCS / "message.schema.json"
    shipped = REPO / "src" / "matomo_kafka" / "transform" / "message.schema.json"
    assert path.is_symlink(), f"{path} must link to {shipped}, not copy it"
    assert path.resolve() == shipped.resolve()
    assert path.read_text(encoding="utf-8") == message_schema_text()


def is_excerpt(part: Any, whole: Any) -> bool:
    """`part` is `whole` with some object keys left out (lists keep all their items)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and is_excerpt(value, whole[key]) for key, value in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(part) == len(whole)
            and all(is_excerpt(a, b) for a, b in zip(part, whole, strict=True))
        )
    return bool(part == whole and type(part) is type(whole))


def test_consumers_doc_example_is_an_excerpt_of_a_real_message() -> None:
    """The example in docs/consumers.md: the first message made from the real 5.0.2 sample
    live_site1_2024-03-10_asc_limit2_off0 with this file's configuration and SALAGE."""
    text = (DOCS / "consumers.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/consumers.md has no ```json example"
    example = json.loads(blocks[0])
    assert is_excerpt(example, real_message()), "docs/consumers.md's example is not a real message"
    assert not schema_errors(example)
