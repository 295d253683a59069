"""The C hot path (_fastvisit.c) against its reference, transform.py.

For every visit it takes, `SiteTransform.rewriter().rewrite(raw)` must give exactly
`orjson.dumps(SiteTransform.apply(orjson.loads(raw)))`, with idVisit and lastActionTimestamp
read as matomo.as_int reads them; every visit it does not take (None) goes to the Python
path. So: same bytes on real answers and generated ones, None on what it leaves to Python,
and never an answer for a visit that is not valid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOKEN
from matomo_kafka.errors import MatomoResponseError, TransformError
from matomo_kafka.matomo import MatomoClient, as_int, split_visits
from matomo_kafka.pipeline import page_messages
from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.transform import (
    Dimension,
    KeyedHash,
    SiteTransform,
    VisitRewriter,
    pseudonymise,
)
from samples import sample_files

DIMENSIONS = [
    Dimension(1, "Plan", "visit"),
    Dimension(2, "Page Type", "action"),
    Dimension(3, 'Segment é/"x"', "visit"),  # a name that JSON must escape
]
GOALS = {1: "Thank-you page", 2: "Newsletter signup"}
COLUMNS = ("visitIp", "visitorId", "userId", "dimension3", "actionDetails.url")


def transform(columns: tuple[str, ...] = COLUMNS, goals: dict[int, str] = GOALS) -> SiteTransform:
    return SiteTransform.build(1, DIMENSIONS, goals, columns, "sel")


def reference(site: SiteTransform, raw: bytes) -> tuple[bytes, int, Any]:
    visit = orjson.loads(raw)
    id_visit, stamp = as_int(visit.get("idVisit")), visit.get("lastActionTimestamp")
    stamp = stamp if type(stamp) is int else as_int(stamp)
    return orjson.dumps(site.apply(visit)), id_visit, stamp


def check(site: SiteTransform, raw: bytes) -> bool:
    """True if the C path took the visit (and then gave the reference), False if it left it.
    Where the reference refuses the visit (invalid JSON, a rename collision), C must too."""
    rewriter = site.rewriter()
    assert rewriter is not None
    got = rewriter.rewrite(raw)
    try:
        expected = reference(site, raw)
    except Exception as exc:
        assert got is None, f"C rewrote a visit the reference refuses ({exc}): {raw!r}"
        return False
    if got is None:
        return False
    assert got == expected, raw
    return True


def test_the_c_path_is_built() -> None:
    assert VisitRewriter is not None, "matomo_kafka._fastvisit not built: is a C compiler there?"


def test_real_answers_take_the_c_path_and_give_the_reference_bytes() -> None:
    site = transform()
    taken = 0
    for path in sample_files("live_site*.json", at_least=5):
        raw = path.read_bytes()
        if not raw.lstrip().startswith(b"["):
            continue
        for visit in split_visits(raw, 1, date(2024, 3, 10), 100):
            assert check(site, bytes(visit)), path.name
            taken += 1
    assert taken >= 10


def test_simulator_pages_take_the_c_path(sim_factory: Callable[..., MatomoSimulator]) -> None:
    """The simulator's visits (PHP escapes, goals, dimensions): all but the goal actions
    without a goalName (Python fills it in) go through C, with the reference bytes."""
    site_config = SimSite.from_dict({"idsite": 1, "name": "s1", "visits": {"2024-03-01": 300}})
    simulator = sim_factory([site_config])
    with MatomoClient(simulator.url, TOKEN) as client:
        raw = client.call_raw_list(
            "Live.getLastVisitsDetails", idSite=1, period="day", date="2024-03-01",
            filter_limit=300, filter_offset=0, filter_sort_order="asc",
        )  # fmt: skip
    site = transform()
    results = [check(site, bytes(visit)) for visit in split_visits(raw, 1, date(2024, 3, 1), 300)]
    assert len(results) == 300 and sum(results) >= 250


def test_page_messages_are_the_same_with_and_without_the_c_path() -> None:
    raw = b"".join(
        [
            b'[{"idVisit":7,"lastActionTimestamp":1710000000,"visitIp":"192.0.2.1",',
            b'"actionDetails":[{"type":"goal","goalId":"2","dimension2":"x"}],"dimension1":"p"},',
            b'{"idVisit":"8","lastActionTimestamp":"1710000001","visitIp":"192.0.2.2",',
            b'"actionDetails":[{"type":"action","url":"https:\\/\\/e.org\\/\\u00e9"}]}]',
        ]
    )
    with_c = page_messages(raw, 1, date(2024, 3, 10), 10, transform())
    without_c = page_messages(raw, 1, date(2024, 3, 10), 10, python_only())
    assert with_c.items == without_c.items
    assert list(with_c.ids) == list(without_c.ids) == [7, 8]
    assert list(with_c.stamps) == list(without_c.stamps) == [1710000000, 1710000001]
    # the first visit's goal had no name: Python gave it one; the second went through C
    assert b'"goalName":"Newsletter signup"' in with_c.items[0].value


# -- generated visits ---------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
#: Keys the transform looks at, and others.
action_keys = (
    st.sampled_from(
        ["type", "goalName", "goalId", "url", "dimension2", "Page Type", "timestamp", "title"]
    )
    | texts
)
visit_keys = st.sampled_from(
    ["idVisit", "lastActionTimestamp", "visitIp", "visitorId", "userId", "dimension1",
     "dimension3", "Plan", "serverDate"]
) | texts  # fmt: skip
action_values = st.sampled_from(["goal", "action", "Thank-you page", 1, 2, "2", None, ""]) | values
actions = st.dictionaries(action_keys, action_values, max_size=6)
visit_values = st.integers(0, 2**40) | st.sampled_from(["17", "x", None]) | values
visits = st.builds(
    lambda fields, acts, has_actions: {**fields, "actionDetails": acts} if has_actions else fields,
    st.dictionaries(visit_keys, visit_values, max_size=8),
    st.lists(actions | values, max_size=4),
    st.booleans(),
)


def php_json(value: Any, style: str) -> bytes:
    """JSON as Matomo (PHP) writes it, or with unicode and spaces, as another server might."""
    if style == "php":
        return json.dumps(value, separators=(",", ":")).replace("/", "\\/").encode()
    if style == "unicode":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(value, indent=1).encode()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(visit=visits, style=st.sampled_from(["php", "unicode", "spaced"]))
def test_any_visit_gives_the_reference_or_goes_to_python(visit: dict[str, Any], style: str) -> None:
    check(transform(), php_json(visit, style))


@settings(max_examples=300)
@given(visit=visits, cut=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_a_damaged_visit_is_never_rewritten(visit: dict[str, Any], cut: int, byte: int) -> None:
    """Truncated, or one byte changed: C answers only for valid JSON, and then the reference."""
    raw = php_json(visit, "php")
    cut %= len(raw)
    for damaged in (raw[:cut], raw[:cut] + bytes([byte]) + raw[cut + 1 :]):
        check(transform(), damaged)


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"x"',
        b'{"idVisit":1,"revenue":1.5}',  # floats: orjson re-formats them
        b'{"idVisit":1,"n":-0}',
        b'{"idVisit":1,"n":1234567890123456789}',  # beyond 18 digits
        b'{"idVisit":1,"city":"Orl\xc3\xa9ans"}',  # raw UTF-8
        b'{"idVisit":1,"city":"\\ud800"}',  # a lone surrogate
        b'{"idVisit":1,"vis\\u0069tIp":"192.0.2.1"}',  # an escaped key
        b'{"idVisit":1,"Plan":"x","dimension1":"y"}',  # a dimension named like a field
        b'{"idVisit":1,"dimension1":"x","dimension1":"y"}',  # a rename source twice
        b'{"idVisit":1,"actionDetails":[{"type":"goal","goalId":1}]}',  # a goal name to add
        b'{"idVisit":1,"actionDetails":[{"type":"go\\u0061l","goalName":"x"}]}',
        b'{"idVisit":1,"deep":' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"idVisit":1} x',
        b'{"idVisit":1,}',
        b'{"idVisit":01}',
    ],
)
def test_what_the_c_path_leaves_to_python(raw: bytes) -> None:
    assert transform().rewriter().rewrite(raw) is None  # type: ignore[union-attr]


def test_ids_read_as_as_int_reads_them() -> None:
    rewriter = transform().rewriter()
    assert rewriter is not None
    for raw_id, expected in [(b"12", 12), (b'"0012"', 12), (b"-3", -3), (b'"x"', None),
                             (b"true", None), (b'""', None), (b"null", None)]:  # fmt: skip
        got = rewriter.rewrite(b'{"idVisit":' + raw_id + b',"lastActionTimestamp":' + raw_id + b"}")
        assert got is not None and got[1:] == (expected, expected), raw_id
    got = rewriter.rewrite(b'{"visitIp":null}')
    assert got is not None and got[1:] == (None, None)  # no id: the Python path says so


def test_renamed_keys_move_to_the_end_in_rename_order() -> None:
    """As dict.pop + insert does in the reference."""
    site = SiteTransform.build(
        1, [Dimension(5, "Five", "visit"), Dimension(4, "Four", "visit")], {}, ("Four",), "k"
    )
    raw = b'{"dimension4":"a","idVisit":1,"dimension5":"b","z":[1,{"dimension4":2}]}'
    assert check(site, raw)
    message = site.rewriter().rewrite(raw)[0]  # type: ignore[union-attr,index]
    assert list(orjson.loads(message)) == ["idVisit", "z", "Five", "Four"]


def test_sites_whose_renames_reach_what_c_reads_stay_in_python() -> None:
    for name in ("actionDetails", "idVisit", "lastActionTimestamp", "dimension9"):
        site = SiteTransform.build(1, [Dimension(9, "x", "visit"), Dimension(1, name, "visit")],
                                   {}, (), None)  # fmt: skip
        assert site.rewriter() is None, name
    assert SiteTransform.build(1, [], {}, ("actionDetails",), None).rewriter() is None
    assert SiteTransform.build(1, [], {}, ("actionDetails.type",), None).rewriter() is None
    assert SiteTransform.build(1, [], {}, ("visitIp",), None).rewriter() is not None


def test_strings_re_escaped_as_orjson_does() -> None:
    """Every ASCII character, escaped or not, and \\u escapes up to surrogate pairs."""
    text = "".join(map(chr, range(128))) + "é€😀\u2028"
    visit = {"idVisit": 1, "title": text, "visitIp": text, "actionDetails": [{"url": text}]}
    for style in ("php", "spaced"):
        assert check(transform(), php_json(visit, style)), style
    short = b'{"idVisit":1,"s":"\\b\\f\\n\\r\\t\\/\\\\\\"\\u001f\\u001A\\u007f"}'
    assert check(transform(), short)


def test_pseudonyms_are_computed_in_c_through_libcrypto() -> None:
    rewriter = transform().rewriter()
    assert rewriter is not None and rewriter.native_hmac


@settings(max_examples=300)
@given(
    key=st.binary(max_size=150),
    text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
)
def test_c_pseudonyms_equal_the_rule(key: bytes, text: str) -> None:
    """Empty keys, keys longer than SHA-256's 64-byte block, any plain string."""
    site = SiteTransform.build(1, [], {}, ("visitIp", "actionDetails.url"), None)
    site.hash = KeyedHash(key)
    rewriter = site.rewriter()
    assert rewriter is not None and rewriter.native_hmac
    raw = orjson.dumps({"idVisit": 1, "visitIp": text, "actionDetails": [{"url": text}]})
    got = rewriter.rewrite(raw)
    assert got is not None
    visit = orjson.loads(got[0])
    assert visit["visitIp"] == visit["actionDetails"][0]["url"] == pseudonymise(key, text)


def python_only() -> SiteTransform:
    site = transform()
    site._rewriter_applies = lambda: False  # type: ignore[method-assign]
    return site


def outcome(raw: bytes, site: SiteTransform, limit: int, keyset: bool) -> tuple[Any, ...]:
    try:
        batch = page_messages(raw, 1, date(2024, 3, 10), limit, site, keyset)
    except (MatomoResponseError, TransformError) as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", batch.items, list(batch.ids), list(batch.stamps))


#: Mostly visits with an id and a time (pages that pass), some without, some not visits.
good_visits = st.builds(
    lambda visit, id_visit, stamp: {**visit, "idVisit": id_visit, "lastActionTimestamp": stamp},
    visits,
    st.integers(1, 2**40) | st.sampled_from(["17", "x"]),
    st.integers(0, 2**31) | st.sampled_from(["1710000000", None]),
)
page_items = st.one_of(good_visits, good_visits, good_visits, good_visits, visits, values)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    page=st.lists(page_items, max_size=5),
    style=st.sampled_from(["php", "unicode", "spaced"]),
    damage=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
    limit=st.integers(1, 6),
    keyset=st.booleans(),
)
def test_whole_pages_give_the_same_messages_and_errors_with_or_without_c(
    page: list[Any], style: str, damage: tuple[int, int] | None, limit: int, keyset: bool
) -> None:
    """The C path reads whole pages (its own cutting into visits): same messages, ids,
    stamps, and the same error where the page or a visit is bad."""
    raw = php_json(page, style)
    if damage is not None:
        at = damage[0] % len(raw)
        raw = raw[:at] + bytes([damage[1]]) + raw[at + 1 :]
    assert outcome(raw, transform(), limit, keyset) == outcome(raw, python_only(), limit, keyset)
