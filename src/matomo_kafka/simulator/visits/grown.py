"""A visit given one more page view (MatomoSimulator.grow_visits), and the visits of a page as
generated, grown where grown."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.actions import _page_view
from matomo_kafka.simulator.visits.dates import _dates, _hms, _pretty_duration
from matomo_kafka.simulator.visits.plan import _DayPlan
from matomo_kafka.simulator.visits.visit import _make_visit


def _grow_hash(p: _DayPlan, i: int) -> bytes:
    return hashlib.blake2b(p.digest(i) + b"grown", digest_size=16).digest()


def _grow_delay(p: _DayPlan, i: int) -> int:
    """Seconds between a grown visit's old last action and its extra page view (1-8 min)."""
    return 60 + int.from_bytes(_grow_hash(p, i)[0:2], "little") % 421


def _grown_visit(p: _DayPlan, i: int, seed: int, new_last: int) -> JSON:
    """Visit i after grow_visits: one more page view at new_last, every field kept coherent."""
    v = _make_visit(p, i, seed)
    gh = _grow_hash(p, i)
    old_last: int = v["lastActionTimestamp"]
    entries: list[JSON] = v["actionDetails"]
    for e in reversed(entries):  # the last page view now lasts until the new one
        if e["type"] == "action":
            spent = e["timeSpent"] + new_last - old_last
            e["timeSpent"] = spent
            e["timeSpentPretty"] = _pretty_duration(spent)
            break
    url, title, pid, dim2 = p.ctx.pages[gh[2] % len(p.ctx.pages)]
    lt = new_last + p.offset(new_last)
    position = 1 + sum(1 for e in entries if e["type"] in ("action", "search"))
    pretty = f"{_dates(lt // 86400)[2]} {_hms(lt)}"
    page_id = v["idVisit"] * 8 + len(entries)
    entries.append(_page_view(url, title, pid, gh[3:6].hex(), pretty, page_id, position, lt, dim2))
    duration = new_last - v["firstActionTimestamp"] + p.digest(i)[46] % 3
    utc_iso = _dates(new_last // 86400)[0]
    last_local = new_last + p.offset(new_last)
    v.update(
        serverDate=utc_iso,
        visitServerHour=str(new_last % 86400 // 3600),
        lastActionTimestamp=new_last,
        lastActionDateTime=f"{utc_iso} {_hms(new_last)}",
        serverTimestamp=new_last,
        serverTimePretty=_hms(last_local),
        serverDatePretty=_dates(last_local // 86400)[1],
        visitDuration=duration,
        visitDurationPretty=_pretty_duration(duration),
        actions=v["actions"] + 1,
        interactions=v["interactions"] + 1,
    )
    return v


def _render(
    p: _DayPlan, indices: Sequence[int], seed: int, grown: dict[int, int] | None
) -> list[JSON]:
    if not grown:
        return [_make_visit(p, i, seed) for i in indices]
    return [
        _grown_visit(p, i, seed, grown[i]) if i in grown else _make_visit(p, i, seed)
        for i in indices
    ]
