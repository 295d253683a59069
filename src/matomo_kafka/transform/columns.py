"""Where each COLONNE_ANNOMYSE entry reaches in a visit, and what Matomo repeats of it.

An entry is a path: `visitIp` (a visit field), `actionDetails.url` (a field of each action),
`actionDetails.itemDetails.itemSKU` or `customVariables.1.customVariableValue1` (through
objects and lists alike). A custom dimension is named `dimensionN` or by its name; an
action-scope one listed without `actionDetails.` is pseudonymised in each action (and said).

Matomo repeats some values in other fields of the same action or visit
(`plugins/*/VisitorDetails.php`, 4.x and 5.x): a page view's URL in `subtitle`, its title in
`title`, a search keyword in `subtitle`, a city in `location`... A twin of a listed field is
pseudonymised too: with the field's own pseudonym when it holds the same value, whole when it
contains it among other text. Fields carrying the same fact in another form (`countryCode`
for `country`) are no copies: config/review.py names them at start.

Each transform also remembers which entries reached a field at least once, so a run (and
`check`) can report an entry that matched nothing: a typo, a renamed dimension.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from matomo_kafka.transform.pseudonymise import KeyedHash, value_text

ACTIONS = "actionDetails"

#: Action field -> fields of the same action where Matomo repeats its value
#: (Actions, Events, Contents and Goals' VisitorDetails::extendActionDetails).
ACTION_TWINS: dict[str, tuple[str, ...]] = {
    "url": ("subtitle",),  # page views, downloads, outlinks
    "pageTitle": ("title",),  # page views
    "siteSearchKeyword": ("subtitle",),  # "<keyword> - Category: ... - Results: ..."
    "siteSearchCategory": ("subtitle",),
    "eventCategory": ("subtitle",),  # 'Category: "<c>", Name: "<n>", Action: "<a>", ...'
    "eventAction": ("subtitle",),
    "eventName": ("subtitle",),
    "eventValue": ("subtitle",),
    "contentName": ("subtitle",),  # "<name> - <piece>"
    "contentPiece": ("subtitle",),
    "contentInteraction": ("title",),  # "Content interaction (<interaction>)"
    "goalName": ("subtitle",),
    "orderId": ("title",),  # "Ordered (<orderId>)"
    "itemDetails.itemName": ("subtitle",),  # "Revenue ... - N items: <names>)"
}

#: Visit field -> visit fields where Matomo repeats its value (UserCountry's location is
#: "<city>, <region>, <country>"; a search engine's referrer URL holds the keyword).
VISIT_TWINS: dict[str, tuple[str, ...]] = {
    "city": ("location",),
    "region": ("location",),
    "country": ("location",),
    "referrerKeyword": ("referrerUrl",),
}

#: Visit fields Matomo copies, under the same name, into actions (Goals' VisitorDetails
#: gives each goal conversion its referrer): listed for the visit, they are for the actions.
VISIT_FIELDS_IN_ACTIONS = frozenset(
    {"referrerName", "referrerKeyword", "referrerType", "customVariables"}
)  # customVariables: page-scope ones are in each action, under the same name


@dataclass(frozen=True)
class Column:
    """One COLONNE_ANNOMYSE entry: as written, and the path it reaches in a message."""

    spec: str
    path: tuple[str, ...]


def resolve(
    spec: str, visit_renames: dict[str, str], action_renames: dict[str, str]
) -> tuple[Column, bool]:
    """The entry's path in a published message (dimensions renamed), and whether it was an
    action-scope dimension listed without `actionDetails.` (applied to the actions)."""
    head, *rest = spec.split(".")
    if head == ACTIONS and rest:
        name = rest[0]
        return Column(spec, (ACTIONS, action_renames.get(name, name), *rest[1:])), False
    if head in visit_renames or head in visit_renames.values():
        return Column(spec, (visit_renames.get(head, head), *rest)), False
    if head in action_renames or head in action_renames.values():
        return Column(spec, (ACTIONS, action_renames.get(head, head), *rest)), True
    return Column(spec, (head, *rest)), False


def hash_at(node: Any, path: tuple[str, ...], keyed: KeyedHash) -> None:
    """Pseudonymises the field at `path` under `node`, through objects and every list item."""
    if isinstance(node, list):
        for item in node:
            hash_at(item, path, keyed)
        return
    if not isinstance(node, dict) or path[0] not in node:
        return
    if len(path) == 1:
        node[path[0]] = keyed(node[path[0]])
    else:
        hash_at(node[path[0]], path[1:], keyed)


def reaches(node: Any, path: tuple[str, ...]) -> bool:
    """Whether `path` names a field present under `node` (in any list item)."""
    if isinstance(node, list):
        return any(reaches(item, path) for item in node)
    if not isinstance(node, dict) or path[0] not in node:
        return False
    return len(path) == 1 or reaches(node[path[0]], path[1:])


def texts_at(node: Any, path: tuple[str, ...]) -> list[str]:
    """The non-empty text forms of the values at `path` (a twin can only repeat those)."""
    if isinstance(node, list):
        return [text for item in node for text in texts_at(item, path)]
    if not isinstance(node, dict) or path[0] not in node:
        return []
    value = node[path[0]]
    if len(path) > 1:
        return texts_at(value, path[1:])
    if value is None or isinstance(value, dict | list):
        return []
    text = value_text(value)
    return [text] if text else []


def cover_twin(record: dict[str, Any], twin: str, texts: list[str], keyed: KeyedHash) -> None:
    """The twin field of a record: the field's pseudonym where it is the same value, its own
    pseudonym where it contains one of the values among other text, as written or
    URL-encoded (a search keyword in the referrer URL's query)."""
    value = record.get(twin)
    if not isinstance(value, str) or not value:
        return
    for text in texts:
        if value == text:
            record[twin] = keyed.of_text(text)
            return
    if any(form in value for text in texts for form in (text, quote(text), quote_plus(text))):
        record[twin] = keyed.of_text(value)


def twins_of(
    columns: Iterable[Column], table: dict[str, tuple[str, ...]], prefix: tuple[str, ...]
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """(path inside the record, twins) for the listed fields whose value Matomo repeats,
    leaving out twins that are listed themselves (pseudonymised as fields already)."""
    listed = {column.path for column in columns}
    found = []
    for column in columns:
        if column.path[: len(prefix)] != prefix:
            continue
        inner = column.path[len(prefix) :]
        twins = table.get(".".join(inner), ())
        twins = tuple(twin for twin in twins if (*prefix, twin) not in listed)
        if inner and twins:
            found.append((inner, twins))
    return tuple(found)
