"""Pure per-visit transforms: dimension names, goal names, pseudonymisation.

A `SiteTransform` is prepared once per site (lookup tables, the HMAC key) and then applied to
each visit in place, with no I/O, so the hot path stays a few dict operations per visit.

Pseudonymisation rule (documented in docs/configuration.md, with a test vector):
    hex(HMAC-SHA256(key = SALAGE encoded UTF-8, message = text(value) encoded UTF-8))
where text(value) is the string itself, `true`/`false` for booleans, the decimal form for
integers, Python's shortest repr for floats, and compact JSON with sorted keys for lists and
objects. null stays null; a missing column stays missing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

import orjson

from matomo_kafka.errors import MatomoResponseError, TransformError
from matomo_kafka.model import Message
from matomo_kafka.source.paging import Batch
from matomo_kafka.source.responses import (
    as_int,
    last_action_time,
    page_where,
    parse_visit,
    split_visits,
)
from matomo_kafka.transform.columns import (
    ACTION_TWINS,
    ACTIONS,
    VISIT_FIELDS_IN_ACTIONS,
    VISIT_TWINS,
    Column,
    cover_twin,
    hash_at,
    reaches,
    resolve,
    texts_at,
    twins_of,
)
from matomo_kafka.transform.pseudonymise import KeyedHash


@dataclass(frozen=True)
class Dimension:
    id: int
    name: str
    scope: str  # "visit" or "action"


def parse_dimensions(raw: Iterable[dict[str, Any]], idsite: int) -> list[Dimension]:
    """CustomDimensions answers ids as strings ("1"); compare them as integers."""
    dimensions = []
    for item in raw:
        try:
            dim_id = int(item["idcustomdimension"])
            name = str(item["name"]).strip()
            scope = str(item["scope"])
        except (KeyError, TypeError, ValueError):
            raise MatomoResponseError(
                f"CustomDimensions for site {idsite}: an entry lacks idcustomdimension/name/scope"
            ) from None
        if not name:
            raise MatomoResponseError(
                f"CustomDimensions for site {idsite}: dimension {dim_id} has an empty name"
            )
        if scope in ("visit", "action"):
            dimensions.append(Dimension(dim_id, name, scope))
    return dimensions


def parse_goals(raw: Iterable[dict[str, Any]], idsite: int) -> dict[int, str]:
    goals: dict[int, str] = {}
    for item in raw:
        try:
            goals[int(item["idgoal"])] = str(item["name"])
        except (KeyError, TypeError, ValueError):
            raise MatomoResponseError(
                f"Goals.getGoals for site {idsite}: an entry lacks idgoal/name"
            ) from None
    return goals


@dataclass
class SiteTransform:
    """Everything needed to turn one raw visit of a site into the published one."""

    idsite: int
    visit_renames: dict[str, str] = field(default_factory=dict)
    action_renames: dict[str, str] = field(default_factory=dict)
    goal_names: dict[int, str] = field(default_factory=dict)
    #: COLONNE_ANNOMYSE as paths in the message; the three tuples below split them by shape,
    #: so the common ones (a visit field, a field of each action) cost one dict look-up.
    columns: tuple[Column, ...] = ()
    visit_columns: tuple[str, ...] = ()
    action_columns: tuple[str, ...] = ()
    deep_paths: tuple[tuple[str, ...], ...] = ()
    visit_twins: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    action_twins: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    hash: KeyedHash = field(default_factory=lambda: KeyedHash(b""), repr=False)
    #: What the user should hear once about this site's columns (see columns.resolve).
    notes: tuple[str, ...] = ()
    #: Entries (as written) that reached a field in at least one visit so far.
    matched: set[str] = field(default_factory=set)
    #: Field names of the first visits seen, to suggest what an unmatched entry meant.
    sample_fields: set[str] = field(default_factory=set)

    @classmethod
    def build(
        cls,
        idsite: int,
        dimensions: list[Dimension],
        goals: dict[int, str],
        columns: Iterable[str],
        salt: str | None,
    ) -> SiteTransform:
        visit_renames: dict[str, str] = {}
        action_renames: dict[str, str] = {}
        for dim in dimensions:
            renames = visit_renames if dim.scope == "visit" else action_renames
            if dim.name in renames.values():
                raise TransformError(
                    f"site {idsite}: two {dim.scope}-scope custom dimensions are named "
                    f"{dim.name!r}; rename one in Matomo"
                )
            renames[f"dimension{dim.id}"] = dim.name
        resolved: list[Column] = []
        notes: list[str] = []
        for spec in columns:
            column, moved = resolve(spec, visit_renames, action_renames)
            resolved.append(column)
            if moved:
                notes.append(
                    f"COLONNE_ANNOMYSE: {spec} is an action-scope custom dimension of site "
                    f"{idsite}: pseudonymised in each action (write {ACTIONS}.{spec} to say so)"
                )
        paths = [column.path for column in resolved]
        paths += [
            (ACTIONS, path[0])
            for path in paths
            if len(path) == 1
            and path[0] in VISIT_FIELDS_IN_ACTIONS
            and (ACTIONS, path[0]) not in paths
        ]
        return cls(
            idsite=idsite,
            visit_renames=visit_renames,
            action_renames=action_renames,
            goal_names=goals,
            columns=tuple(resolved),
            visit_columns=tuple(path[0] for path in paths if len(path) == 1),
            action_columns=tuple(
                path[1] for path in paths if len(path) == 2 and path[0] == ACTIONS
            ),
            deep_paths=tuple(
                path for path in paths if len(path) > 2 or (len(path) == 2 and path[0] != ACTIONS)
            ),
            visit_twins=twins_of(resolved, VISIT_TWINS, ()),
            action_twins=twins_of(resolved, ACTION_TWINS, (ACTIONS,)),
            hash=KeyedHash((salt or "").encode("utf-8")),
            notes=tuple(notes),
        )

    def apply(self, visit: dict[str, Any]) -> dict[str, Any]:
        """Transforms one visit in place and returns it."""
        if self.visit_renames:
            _rename(visit, self.visit_renames, self.idsite, "visit")
        actions = visit.get(ACTIONS)
        if isinstance(actions, list):
            for action in actions:
                if not isinstance(action, dict):
                    continue
                if self.action_renames:
                    _rename(action, self.action_renames, self.idsite, "action")
                if action.get("type") == "goal" and not action.get("goalName"):
                    goal_id = as_int(action.get("goalId"))
                    name = None if goal_id is None else self.goal_names.get(goal_id)
                    if name is not None:
                        action["goalName"] = name
                for inner, twins in self.action_twins:
                    texts = texts_at(action, inner)
                    for twin in twins if texts else ():
                        cover_twin(action, twin, texts, self.hash)
                for column in self.action_columns:
                    if column in action:
                        action[column] = self.hash(action[column])
        for inner, twins in self.visit_twins:
            texts = texts_at(visit, inner)
            for twin in twins if texts else ():
                cover_twin(visit, twin, texts, self.hash)
        for column in self.visit_columns:
            if column in visit:
                visit[column] = self.hash(visit[column])
        for path in self.deep_paths:
            hash_at(visit, path, self.hash)
        if len(self.matched) < len(self.columns):
            self._note_matches(visit)
        return visit

    def _note_matches(self, visit: dict[str, Any]) -> None:
        """Records the entries this visit has a field for (only while some have none)."""
        for column in self.columns:
            if column.spec not in self.matched and reaches(visit, column.path):
                self.matched.add(column.spec)
        actions = visit.get(ACTIONS)
        if len(self.sample_fields) < 1000:
            self.sample_fields.update(visit)
            for action in actions if isinstance(actions, list) else ():
                if isinstance(action, dict):
                    self.sample_fields.update(f"{ACTIONS}.{name}" for name in action)

    def unmatched(self) -> list[str]:
        """The entries that reached no field of any visit transformed so far."""
        return [column.spec for column in self.columns if column.spec not in self.matched]


class Unmatched(NamedTuple):
    """A COLONNE_ANNOMYSE entry that reached no field of the visits some sites sent."""

    spec: str
    sites: tuple[int, ...]
    line: str


def unmatched_columns(sent: Iterable[tuple[SiteTransform, int]]) -> list[Unmatched]:
    """One line for each COLONNE_ANNOMYSE entry that reached no field of the visits
    a site sent, given (transform, visits sent) per site: a typo, a separator, a dimension
    renamed or named otherwise on that site, a scope left out. Judged per site, since
    dimension names are per site. Said at the end of a run (a day's first visits may lack a
    field that later ones have)."""
    sent = [(transform, visits) for transform, visits in sent if visits > 0]
    if not sent:
        return []
    fields = set().union(*(transform.sample_fields for transform, _ in sent))
    lines: list[Unmatched] = []
    for column in sent[0][0].columns:
        missed = [(t, visits) for t, visits in sent if column.spec not in t.matched]
        if not missed:
            continue
        like = [name for name in fields if name.lower() == column.spec.lower()]
        like = like or difflib.get_close_matches(column.spec, fields, n=1, cutoff=0.75)
        hint = f"; did you mean {like[0]}?" if like else ""
        sites = tuple(transform.idsite for transform, _ in missed)
        visits = sum(count for _, count in missed)
        line = (
            f"COLONNE_ANNOMYSE: {column.spec} matched no field in the {visits} visit(s) sent "
            f"for site(s) {','.join(map(str, sites))}, so it pseudonymised nothing there{hint}"
        )
        lines.append(Unmatched(column.spec, sites, line))
    return lines


def _rename(record: dict[str, Any], renames: dict[str, str], idsite: int, scope: str) -> None:
    for source, target in renames.items():
        if source in record:
            if target in record and target != source:
                raise TransformError(
                    f"site {idsite}: {scope}-scope custom dimension {source} is named "
                    f"{target!r}, which is already a Matomo field; rename it in Matomo"
                )
            record[target] = record.pop(source)


def page_messages(
    raw: bytes, idsite: int, day: date, limit: int, transform: SiteTransform, keyset: bool = True
) -> Batch[Message]:
    """One compact JSON message per visit of a Live page, keyed `<idSite>:<idVisit>` (ids as
    integers), with each visit's id and last action time for the pager (keyset: checked,
    else 0).

    msgspec checks the page's syntax and cuts it into visits without building objects; each
    visit is then parsed, transformed and serialised alone, while its objects are still in the
    CPU cache (a 1000-visit page parsed at once is ~30 MB of objects).
    """
    where = page_where(idsite, day)
    raws = split_visits(raw, idsite, day, limit)
    messages: list[Message] = []
    ids: list[int] = []
    stamps: list[int] = []
    prefix = f"{idsite}:"
    apply, dumps = transform.apply, orjson.dumps
    for raw_visit in raws:
        visit = parse_visit(raw_visit, where)
        id_visit = int(visit["idVisit"])
        stamps.append(last_action_time(visit, idsite, id_visit) if keyset else 0)
        ids.append(id_visit)
        value = dumps(apply(visit))
        # orjson's bytes keep its 32 KiB write buffer; a right-sized copy (0.4 us) keeps a
        # page of 1000 messages at 3.5 MB instead of 32 MB while it waits to be sent.
        messages.append(Message((prefix + str(id_visit)).encode(), memoryview(value).tobytes()))
    return Batch(messages, ids, stamps, len(raw))
