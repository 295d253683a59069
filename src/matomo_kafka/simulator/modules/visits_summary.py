"""VisitsSummary.get: a day's aggregates computed from its visits, so they agree with Live;
a purged day keeps the counts Matomo archived before the purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import _SUMMARY_SAMPLE, JSON
from matomo_kafka.simulator.days import day_state, visible, visible_in
from matomo_kafka.simulator.modules.params import day_param, site_param
from matomo_kafka.simulator.server import _json_reply, _Reply
from matomo_kafka.simulator.visits.grown import _render
from matomo_kafka.simulator.visits.plan import _DayPlan

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def get(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """VisitsSummary.get: a day's aggregates, from the visits Live serves (so both agree)."""
    site, err = site_param(sim, params)
    if site is None:
        assert err is not None
        return err
    day = day_param(sim, site, params, "VisitsSummary.get")
    if isinstance(day, _Reply):
        return day
    plan = sim._plan(site.idsite, day)
    state = day_state(sim, site.idsite, day, plan)
    n = visible(sim, plan) if state is None else visible_in(sim, state)
    if state is not None and state.archived:  # purged: the archived reports stay
        return _json_reply(_aggregate(plan, state.archived, state.grown, sim.config.seed))
    if n == 0:
        return _json_reply(
            {
                "nb_uniq_visitors": 0,
                "nb_users": 0,
                "nb_visits": 0,
                "nb_actions": 0,
                "nb_visits_converted": 0,
                "bounce_count": 0,
                "sum_visit_length": 0,
                "max_actions": 0,
                "bounce_rate": "0%",
                "nb_actions_per_visit": 0,
                "avg_time_on_site": 0,
            }
        )
    if state is not None:
        if n < len(state.idx):  # the clock shows part of the day: not cached
            return _json_reply(_aggregate(plan, state.idx[:n], state.grown, sim.config.seed))
        if state.summary is None:  # a benign race: both threads compute the same dict
            state.summary = _aggregate(plan, state.idx, state.grown, sim.config.seed)
        return _json_reply(state.summary)
    return _json_reply(_summary(sim, site.idsite, day, n))


def _summary(sim: MatomoSimulator, idsite: int, day: date, n: int) -> JSON:
    """Aggregates of a day without hidden or grown visits, cached."""
    key = (idsite, day, n)
    cached = sim._summaries.get(key)
    if cached is not None:
        return cached
    summary = _aggregate(sim._plan(idsite, day), range(n), None, sim.config.seed)
    with sim._lock:
        if len(sim._summaries) > 4096:
            sim._summaries.clear()
        sim._summaries[key] = summary
    return summary


def _aggregate(
    p: _DayPlan, indices: Sequence[int], grown: dict[int, int] | None, seed: int
) -> JSON:
    """VisitsSummary.get from the visits themselves (exact up to _SUMMARY_SAMPLE visits,
    extrapolated from an even sample above), so it agrees with Live."""
    n = len(indices)
    m = min(n, _SUMMARY_SAMPLE)
    sample = _render(p, [indices[(j * n) // m] for j in range(m)], seed, grown)
    scale = n / m
    actions = sum(v["actions"] for v in sample)
    bounces = sum(1 for v in sample if v["actions"] <= 1)
    length = sum(v["visitDuration"] for v in sample)
    summary: JSON = {
        "nb_uniq_visitors": round(len({v["visitorId"] for v in sample}) * scale),
        "nb_users": round(len({v["userId"] for v in sample} - {None}) * scale),
        "nb_visits": n,
        "nb_actions": round(actions * scale),
        "nb_visits_converted": round(sum(v["visitConverted"] for v in sample) * scale),
        "bounce_count": round(bounces * scale),
        "sum_visit_length": round(length * scale),
        "max_actions": max(v["actions"] for v in sample),
        "bounce_rate": f"{round(100 * bounces / m)}%",
        "nb_actions_per_visit": round(actions / m, 1),
        "avg_time_on_site": round(length / m),
    }
    return summary
