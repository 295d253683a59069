"""Which visits of a day are served, in which order: an untouched day keeps the lazy index
arithmetic; a day with hidden (late), grown, erased, anonymised or purged visits is served
from a materialised order; with a clock, only the visits it has seen end."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.modules.privacy_manager import Anonymisation, split_purged
from matomo_kafka.simulator.visits.hazards import _hidden_indices
from matomo_kafka.simulator.visits.plan import _DayPlan

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


@dataclass
class DayState:
    """A day with hidden, grown, erased, anonymised or purged visits, materialised: visible
    visits by (last ts, i)."""

    plan: _DayPlan
    grown: dict[int, int]  # visit index -> new last action timestamp
    ts: list[int]
    idx: list[int]
    summary: JSON | None = None
    anonymised: dict[int, Anonymisation] = field(default_factory=dict)
    #: A day the raw-data purge reached: the visits VisitsSummary still counts (Matomo keeps
    #: the reports it archived before the purge); None for a day it did not reach.
    archived: list[int] | None = None


def visible(sim: MatomoSimulator, plan: _DayPlan) -> int:
    """How many of the day's visits (lazy order) have their last action by the clock."""
    now = sim._now
    if now is None or plan.n == 0 or now >= plan.end:
        return plan.n
    return plan.first_index_after(int(now // 1))


def visible_in(sim: MatomoSimulator, state: DayState) -> int:
    """How many visits of a materialised day have their last action by the clock."""
    now = sim._now
    return len(state.ts) if now is None else bisect_right(state.ts, int(now // 1))


def day_state(sim: MatomoSimulator, idsite: int, day: date, plan: _DayPlan) -> DayState | None:
    """The materialised order of a day with hidden or grown visits; None for the others
    (two dict lookups: the fast path pays nothing more)."""
    key = (idsite, day)
    privacy = sim.privacy
    if key not in sim._late and key not in sim._grown and not privacy.touches(key, plan):
        return None
    with sim._lock:
        state = sim._states.get(key)
        if state is not None and state.plan is plan:
            return state
        version = sim._version
        late = sim._late.get(key, 0)
        grown = dict(sim._grown.get(key, {}))
        now = sim._now
        erased = privacy.erased.get(key, frozenset())
        anonymised = privacy.anonymised.get(key, {})
        cut = privacy.purged_before
    if now is not None:  # a visit grows when the clock reaches its new action
        grown = {i: t for i, t in grown.items() if t <= now}
    hidden = _hidden_indices(plan.n, late) | erased
    if cut is not None and (plan.n == 0 or plan.start >= cut):
        cut = None  # the purge did not reach this day
    if not hidden and not grown and not anonymised and cut is None:
        return None
    pairs = sorted(
        (grown[i] if i in grown else plan.last_ts(i), i) for i in range(plan.n) if i not in hidden
    )
    shown, archived = split_purged(pairs, cut)
    state = DayState(
        plan,
        grown,
        [t for t, _ in shown],
        [i for _, i in shown],
        anonymised=anonymised,
        archived=None if cut is None else archived,
    )
    with sim._lock:
        if sim._version == version:
            sim._states[key] = state
    return state
