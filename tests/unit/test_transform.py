"""Transforms on real Matomo 5.0.2 answers: dimension names, goal names, HMAC pseudonyms."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matomo_kafka.errors import MatomoResponseError, TransformError
from matomo_kafka.transform.pseudonymise import KeyedHash, pseudonymise, value_text
from matomo_kafka.transform.visits import (
    Dimension,
    SiteTransform,
    page_messages,
    parse_dimensions,
    parse_goals,
)
from support.samples import sample_files, sample_json


def sample(name: str) -> Any:
    return sample_json(name)


def site1_transform(columns: tuple[str, ...] = (), salt: str = "salt") -> SiteTransform:
    return SiteTransform.build(
        1,
        parse_dimensions(sample("customdimensions_site1"), 1),
        parse_goals(sample("goals_site1"), 1),
        columns,
        salt,
    )


def test_readme_test_vector() -> None:
    # The vector in docs/configuration.md (computed once with `openssl dgst -sha256 -hmac`).
    assert pseudonymise(b"my-salt", "192.0.2.10") == (
        "7668215ee5f144bd84f91b1b3f1f2bb26cce5a23cb33dd9c564d914fac5320f6"
    )
    assert pseudonymise("clé".encode(), "José") == pseudonymise(b"cl\xc3\xa9", "Jos\u00e9")


def test_value_text_rules() -> None:
    assert value_text("abc") == "abc"
    assert value_text(12) == "12"
    assert value_text(True) == "true"
    assert value_text(1.5) == "1.5"
    assert value_text({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert pseudonymise(b"k", None) is None
    # Matomo 5 numbers and older Matomo digit strings give the same pseudonym.
    assert pseudonymise(b"k", 42) == pseudonymise(b"k", "42")


def test_dimensions_renamed_by_scope() -> None:
    visits = sample("live_site1_2024-03-10_asc_limit2_off0")
    transform = site1_transform()
    visit = transform.apply(copy.deepcopy(visits[0]))
    assert "dimension1" not in visit and visit["Plan"] == "pro"
    for action in visit["actionDetails"]:
        assert "dimension2" not in action
        assert "Page Type" in action
    assert visit["actionDetails"][0]["Page Type"] == "home"


def test_goal_name_filled_only_when_missing() -> None:
    transform = site1_transform()
    visit = copy.deepcopy(sample("live_site1_2024-03-10_asc_limit2_off0")[1])
    goals = [a for a in visit["actionDetails"] if a["type"] == "goal"]
    del goals[0]["goalName"]
    goals[0]["goalId"] = "2"  # older Matomo: ids as strings
    transform.apply(visit)
    assert goals[0]["goalName"] == "Newsletter signup"


def test_pseudonymised_columns_visit_and_action() -> None:
    raw = sample("live_site1_2024-03-10_asc_limit2_off0")[1]
    transform = site1_transform(("visitIp", "userId", "Plan", "actionDetails.url"), "pepper")
    visit = transform.apply(copy.deepcopy(raw))
    key = b"pepper"
    assert visit["visitIp"] == hmac.new(key, b"192.0.2.20", hashlib.sha256).hexdigest()
    assert visit["userId"] is None  # null stays null
    assert visit["Plan"] == hmac.new(key, b"free", hashlib.sha256).hexdigest()
    for before, after in zip(raw["actionDetails"], visit["actionDetails"], strict=True):
        expected = pseudonymise(key, before["url"])
        assert after["url"] == expected
    assert "192.0.2.20" not in json.dumps(visit)


def test_dimension_column_named_by_its_raw_key() -> None:
    raw = sample("live_site1_2024-03-10_asc_limit2_off0")[0]
    visit = site1_transform(("dimension1",), "k").apply(copy.deepcopy(raw))
    assert visit["Plan"] == pseudonymise(b"k", "pro")


def test_dimension_name_colliding_with_matomo_field() -> None:
    transform = SiteTransform.build(3, [Dimension(1, "userId", "visit")], {}, (), None)
    with pytest.raises(TransformError, match="already a Matomo field"):
        transform.apply({"idVisit": 1, "userId": "u", "dimension1": "x"})


def test_two_dimensions_with_one_name() -> None:
    with pytest.raises(TransformError, match="two visit-scope"):
        SiteTransform.build(
            3, [Dimension(1, "Plan", "visit"), Dimension(4, "Plan", "visit")], {}, (), None
        )


@given(st.text(), st.text(min_size=1))
def test_hmac_matches_reference(value: str, salt: str) -> None:
    expected = hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()
    assert pseudonymise(salt.encode(), value) == expected


# Integers within 64 bits: orjson, which parses Matomo's answers, holds no larger ones.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300)
@given(key=st.binary(max_size=150), value=json_values)
def test_prepared_key_hashes_as_the_rule_says(key: bytes, value: object) -> None:
    """KeyedHash (the hot path, key states prepared once) equals hmac.digest's HMAC-SHA256,
    for empty keys, keys longer than SHA-256's 64-byte block, and any JSON value."""
    assert KeyedHash(key)(value) == pseudonymise(key, value)


def test_prepared_key_never_shows_in_a_repr() -> None:
    transform = SiteTransform.build(1, [], {}, ["visitIp"], "sel-secret-42")
    assert "sel-secret-42" not in repr(transform)
    assert b"sel-secret-42" not in repr(transform).encode()


# -- one visit at a time: the hot path (transform/visits.py page_messages) ------------------------


def whole_page_messages(raw: bytes, transform: SiteTransform) -> list[tuple[bytes, bytes]]:
    """The reference: the page parsed at once, each visit transformed and serialised."""
    return [
        (
            f"{transform.idsite}:{int(visit['idVisit'])}".encode(),
            orjson.dumps(transform.apply(visit)),
        )
        for visit in orjson.loads(raw)
    ]


def test_page_messages_equal_the_whole_page_way_on_real_answers() -> None:
    columns = ("visitIp", "visitorId", "actionDetails.url")
    for path in sample_files("live_site1_*.json", at_least=5):
        raw = path.read_bytes()
        if not raw.lstrip().startswith(b"["):
            continue
        batch = page_messages(raw, 1, date(2024, 3, 10), 100, site1_transform(columns))
        expected = whole_page_messages(raw, site1_transform(columns))
        assert [(m.key, m.value) for m in batch.items] == expected, path.name
        assert list(batch.ids) == [int(key.split(b":")[1]) for key, _ in expected]


finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
visit_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in ("idVisit", "actionDetails")),
    finite_json_values,
    max_size=6,
)


@settings(max_examples=200)
@given(
    visits=st.lists(
        st.tuples(st.integers(1, 2**53), visit_fields, st.lists(visit_fields, max_size=3)),
        max_size=6,
    ),
    ascii_only=st.booleans(),
)
def test_page_messages_equal_the_whole_page_way_on_any_page(
    visits: list[tuple[int, dict[str, Any], list[dict[str, Any]]]], ascii_only: bool
) -> None:
    """Cutting a page into visits (msgspec) before parsing each one changes nothing: same
    messages, whatever the values, escapes (PHP's \\/ and \\uXXXX) or unicode."""
    page = [
        {"idVisit": idvisit, **fields, "lastActionTimestamp": 1710000000 + n,
         "actionDetails": actions}
        for n, (idvisit, fields, actions) in enumerate(visits)
    ]  # fmt: skip
    text = json.dumps(page, ensure_ascii=ascii_only)
    raw = (text.replace("/", "\\/") if ascii_only else text).encode()
    columns = ("visitIp", "actionDetails.url")
    batch = page_messages(raw, 1, date(2024, 3, 10), 10, site1_transform(columns))
    assert [(m.key, m.value) for m in batch.items] == whole_page_messages(
        raw, site1_transform(columns)
    )
    assert list(batch.stamps) == [1710000000 + n for n in range(len(page))]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"idVisit": 1}', "expected a JSON list of objects"),
        (b"[1, 2]", "expected a JSON list of objects"),
        (b'[{"idVisit": 1}, ["x"]]', "expected a JSON list of objects"),
        (b'[{"idVisit": 1}, {"idVisit": 2', "invalid JSON"),
        (b'[{"idVisit": 1},, {"idVisit": 2}]', "invalid JSON"),
        (b'[{"idVisit": "x1"}]', "a visit has no valid idVisit"),
        (b'[{"visitIp": "192.0.2.1"}]', "a visit has no valid idVisit"),
        (b'[{"idVisit": 1}, {"idVisit": 2}, {"idVisit": 3}]', "3 visits for filter_limit=2"),
    ],
)
def test_page_messages_refuse_a_bad_page_with_one_line(raw: bytes, error: str) -> None:
    with pytest.raises(MatomoResponseError, match=error) as caught:
        page_messages(raw, 1, date(2024, 3, 10), 2, site1_transform(), keyset=False)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("Live.getLastVisitsDetails for site 1 on 2024-03-10: ")
