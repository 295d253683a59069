"""COLONNE_ANNOMYSE reaches every copy of a value (issue 27): nested paths, action-scope
dimensions listed without `actionDetails.`, the values Matomo repeats in other fields, and
entries that matched nothing reported. The proof at the end runs every real Matomo answer
of tests/fixtures through the transform and looks for any raw value in the messages."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from matomo_kafka.transform.pseudonymise import pseudonymise
from matomo_kafka.transform.visits import (
    Dimension,
    SiteTransform,
    page_messages,
    unmatched_columns,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SALT = "col-test-salt-2f8e1a"
KEY = SALT.encode()
DIMENSIONS = [Dimension(1, "Plan", "visit"), Dimension(2, "Page Type", "action")]


def transform(*columns: str) -> SiteTransform:
    return SiteTransform.build(1, DIMENSIONS, {}, columns, SALT)


def h(value: Any) -> Any:
    return pseudonymise(KEY, value)


def test_nested_paths_reach_through_objects_and_lists() -> None:
    visit = {
        "idVisit": 1,
        "actionDetails": [
            {"type": "ecommerceOrder", "itemDetails": [{"itemSKU": "SKU-1"}, {"itemSKU": "S2"}]},
            {"type": "action", "url": "https://x/"},
        ],
        "customVariables": {"1": {"customVariableName1": "email", "customVariableValue1": "a@b"}},
    }
    t = transform("actionDetails.itemDetails.itemSKU", "customVariables.1.customVariableValue1")
    out = t.apply(visit)
    assert out["actionDetails"][0]["itemDetails"] == [{"itemSKU": h("SKU-1")}, {"itemSKU": h("S2")}]
    assert out["customVariables"]["1"] == {
        "customVariableName1": "email",
        "customVariableValue1": h("a@b"),
    }
    assert out["actionDetails"][1]["url"] == "https://x/"
    assert t.unmatched() == []


@pytest.mark.parametrize("column", ["Page Type", "dimension2"])
def test_an_action_scope_dimension_without_its_prefix_is_pseudonymised_in_the_actions(
    column: str,
) -> None:
    t = transform(column)
    visit = {"idVisit": 1, "actionDetails": [{"type": "action", "dimension2": "checkout"}]}
    assert t.apply(visit)["actionDetails"][0]["Page Type"] == h("checkout")
    assert t.notes == (
        f"COLONNE_ANNOMYSE: {column} is an action-scope custom dimension of site 1: "
        f"pseudonymised in each action (write actionDetails.{column} to say so)",
    )


def test_a_repeated_value_gets_the_same_pseudonym_and_a_containing_one_its_own() -> None:
    t = transform("actionDetails.url", "actionDetails.pageTitle", "actionDetails.siteSearchKeyword",
                  "city")  # fmt: skip
    search_subtitle = "jean dupont - Category: people - Results: 3"
    visit = {
        "idVisit": 1,
        "city": "Lyon",
        "location": "Lyon, Auvergne-Rhone-Alpes, France",
        "actionDetails": [
            {"type": "action", "url": "https://s/u/42", "subtitle": "https://s/u/42",
             "pageTitle": "Profile of Jean Dupont", "title": "Profile of Jean Dupont"},
            {"type": "search", "siteSearchKeyword": "jean dupont", "subtitle": search_subtitle,
             "title": "Site Search"},
            {"type": "outlink", "url": "https://o/", "subtitle": "https://o/", "title": "Outlink"},
        ],
    }  # fmt: skip
    out = t.apply(visit)
    page, search, outlink = out["actionDetails"]
    assert page["subtitle"] == page["url"] == h("https://s/u/42")
    assert page["title"] == page["pageTitle"] == h("Profile of Jean Dupont")
    assert search["siteSearchKeyword"] == h("jean dupont")
    assert search["subtitle"] == h(search_subtitle)
    assert search["title"] == "Site Search"
    assert outlink["subtitle"] == h("https://o/") and outlink["title"] == "Outlink"
    assert out["location"] == h("Lyon, Auvergne-Rhone-Alpes, France")


def test_a_listed_twin_is_pseudonymised_once_as_a_field() -> None:
    """url and subtitle both listed: subtitle is its own pseudonym (the same value), not a
    pseudonym of a pseudonym."""
    out = transform("actionDetails.url", "actionDetails.subtitle").apply(
        {"idVisit": 1, "actionDetails": [{"url": "https://a/", "subtitle": "https://a/"}]}
    )
    assert out["actionDetails"][0] == {"url": h("https://a/"), "subtitle": h("https://a/")}


def test_entries_that_matched_nothing_are_reported_with_a_hint() -> None:
    t = transform("visitIp", "visitorID", "actionDetails.siteSearchKeyword", "ipAddress")
    for visit in json.loads((FIXTURES / "matomo-5.0.2/live_site1_2024-03-10_limit2_off0.json")
                            .read_bytes()):  # fmt: skip
        t.apply(visit)
    lines = unmatched_columns([(t, 2)])
    assert [entry.spec for entry in lines] == [
        "visitorID", "actionDetails.siteSearchKeyword", "ipAddress"
    ]  # fmt: skip
    assert lines[0].line == (
        "COLONNE_ANNOMYSE: visitorID matched no field in the 2 visit(s) sent for site(s) 1, so "
        "it pseudonymised nothing there; did you mean visitorId?"
    )
    assert unmatched_columns([(t, 0)]) == []


def test_an_entry_is_judged_per_site_since_dimension_names_are_per_site() -> None:
    """`Email` is a dimension of site 1 only: site 2 named it otherwise, so its visits keep
    the value in clear, and the end of the run must say so for site 2."""
    one = SiteTransform.build(1, [Dimension(1, "Email", "visit")], {}, ["Email"], SALT)
    two = SiteTransform.build(2, [Dimension(1, "E-mail", "visit")], {}, ["Email"], SALT)
    one.apply({"idVisit": 1, "dimension1": "a@b.fr"})
    two.apply({"idVisit": 2, "dimension1": "c@d.fr"})
    lines = unmatched_columns([(one, 1), (two, 1)])
    assert [(entry.spec, entry.sites) for entry in lines] == [("Email", (2,))]


#: Columns a privacy-minded user lists, each with every field Matomo copies it into.
PERSONAL = (
    "visitIp", "visitorId", "userId", "fingerprint", "city", "Plan", "referrerKeyword",
    "actionDetails.url", "actionDetails.pageTitle", "actionDetails.siteSearchKeyword",
    "actionDetails.eventName", "actionDetails.eventAction", "actionDetails.Page Type",
)  # fmt: skip


def raw_values(visit: dict[str, Any]) -> set[str]:
    """The text of every listed field of a raw visit (short ones could occur by chance)."""
    found: set[str] = set()
    visit_names = ("visitIp", "visitorId", "userId", "fingerprint", "city", "dimension1",
                   "referrerKeyword")  # fmt: skip
    action_names = ("url", "pageTitle", "siteSearchKeyword", "eventName", "eventAction",
                    "dimension2")  # fmt: skip
    fields = [visit.get(name) for name in visit_names]
    for action in visit.get("actionDetails") or []:
        fields += [action.get(name) for name in action_names]
    for value in fields:
        if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) >= 4:
            found.add(str(value))
    return found


def live_answers() -> list[Path]:
    paths = []
    for path in sorted(FIXTURES.glob("*/live_*.json")):
        body = json.loads(path.read_bytes())
        if isinstance(body, list) and body:
            paths.append(path)
    return paths


@pytest.mark.parametrize("path", live_answers(), ids=lambda path: path.stem)
def test_no_listed_value_survives_anywhere_in_a_real_message(path: Path) -> None:
    raw = path.read_bytes()
    visits = json.loads(raw)
    idsite = int(visits[0]["idSite"])
    day = date.fromisoformat(visits[0]["serverDate"])
    t = SiteTransform.build(idsite, DIMENSIONS, {}, PERSONAL, SALT)
    batch = page_messages(raw, idsite, day, len(visits), t, keyset=False)
    assert len(batch.items) == len(visits)
    for visit, message in zip(visits, batch.items, strict=True):
        text = message.value.decode()
        leaks = [value for value in raw_values(visit) if orjson.dumps(value).decode()[1:-1]
                 in text]  # fmt: skip
        assert leaks == [], (visit["idVisit"], leaks)


def test_copies_are_found_url_encoded_and_page_scope_variables_in_actions() -> None:
    t = transform("referrerKeyword", "customVariables")
    out = t.apply(
        {
            "idVisit": 1,
            "referrerKeyword": "jean dupont",
            "referrerUrl": "https://www.google.com/search?q=jean+dupont",
            "customVariables": {"1": {"customVariableValue1": "v"}},
            "actionDetails": [
                {"type": "goal", "referrerKeyword": "jean dupont"},
                {"type": "action", "customVariables": {"2": {"customVariableValue2": "p"}}},
            ],
        }
    )
    assert out["referrerUrl"] == h("https://www.google.com/search?q=jean+dupont")
    assert out["actionDetails"][0]["referrerKeyword"] == h("jean dupont")
    assert out["actionDetails"][1]["customVariables"] == h({"2": {"customVariableValue2": "p"}})


@pytest.mark.parametrize("actions", [3, True, "x", [1, "a", None], {"a": 1}])
def test_odd_action_lists_are_left_alone_never_a_crash(actions: Any) -> None:
    t = transform("visitIp", "actionDetails.url", "actionDetails.itemDetails.itemSKU")
    out = t.apply({"idVisit": 1, "visitIp": "192.0.2.1", "actionDetails": actions})
    assert out["visitIp"] == h("192.0.2.1")
