from datetime import date
from typing import Any

import msgspec
import orjson

from matomo_kafka.errors import MatomoResponseError

Visit = dict[str, Any]


def as_int(value: Any) -> int | None:
    """Matomo ids come as numbers (5.x) or digit strings (older versions)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def last_action_time(visit: Visit, idsite: int, id_visit: int) -> int:
    """The visit's last action time (Unix seconds), what Live sorts on: keyset paging needs it."""
    stamp = visit.get("lastActionTimestamp")
    if type(stamp) is not int:
        stamp = as_int(stamp)
        if stamp is None:
            raise MatomoResponseError(
                f"Live.getLastVisitsDetails for site {idsite}: visit {id_visit} has no valid "
                "lastActionTimestamp (keyset paging needs it; MATOMO_PAGING=offset does not)"
            )
    return stamp


def page_where(idsite: int, day: date) -> str:
    return f"Live.getLastVisitsDetails for site {idsite} on {day}"


def split_visits(raw: bytes, idsite: int, day: date, limit: int) -> list[msgspec.Raw]:
    """Cuts one Live page into its visits' JSON, unparsed. msgspec checks the page's syntax
    and finds each visit's bounds without building Python objects, so each visit is then
    parsed, transformed and serialised alone, while its objects are still in the CPU cache
    (a 1000-visit page parsed at once is ~30 MB of objects: see docs/performance.md)."""
    where = page_where(idsite, day)
    try:
        visits = _split_page.decode(raw)
    except msgspec.ValidationError:
        raise MatomoResponseError(f"{where}: expected a JSON list of objects") from None
    except msgspec.DecodeError:
        raise MatomoResponseError(f"{where}: invalid JSON") from None
    if len(visits) > limit:
        raise MatomoResponseError(
            f"{where}: {len(visits)} visits for filter_limit={limit} (paging ignored?)"
        )
    return visits


def parse_visit(raw: msgspec.Raw, where: str) -> Visit:
    """Parses and checks one visit of a page (split_visits): an object with an idVisit."""
    try:
        visit = orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError:
        raise MatomoResponseError(f"{where}: invalid JSON") from None
    if type(visit) is not dict:
        raise MatomoResponseError(f"{where}: expected a JSON list of objects")
    if as_int(visit.get("idVisit")) is None:
        raise MatomoResponseError(f"{where}: a visit has no valid idVisit")
    return visit


def parse_visits(raw: bytes, idsite: int, day: date, limit: int) -> list[Visit]:
    """Parses and checks one whole Live page: a list of visit objects, each with an idVisit."""
    where = page_where(idsite, day)
    return [parse_visit(visit, where) for visit in split_visits(raw, idsite, day, limit)]


_split_page = msgspec.json.Decoder(list[msgspec.Raw])
