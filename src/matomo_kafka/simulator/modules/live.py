"""Live.getLastVisitsDetails: a page of a day's visits, by offset or after minTimestamp, in
either order, with the paging hazards (shuffled ties, late and grown visits) and, for huge
pages, the answer streamed in batches."""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import _STREAM_BATCH, _STREAM_THRESHOLD, MSG_LIVE_DISABLED
from matomo_kafka.simulator.days import DayState, day_state, visible, visible_in
from matomo_kafka.simulator.errors import php_limit_reply
from matomo_kafka.simulator.modules.params import day_param, int_param, site_param
from matomo_kafka.simulator.modules.privacy_manager import Anonymisation, render_visits
from matomo_kafka.simulator.server import _error, _json_reply, _Reply
from matomo_kafka.simulator.visits.hazards import _shuffle_ties
from matomo_kafka.simulator.visits.php_json import php_json
from matomo_kafka.simulator.visits.plan import _DayPlan

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def get_last_visits_details(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """Live.getLastVisitsDetails: a page of a day's visits, as heavy for the server as
    configured (latency, PHP's limits, worker time per visit)."""
    if sim.config.latency_s > 0:
        time.sleep(sim.config.latency_s)
    reply = _live_page(sim, params)
    if 0 < sim.config.page_limit_visits < reply.visits:
        return php_limit_reply(sim.config.page_limit_kind)
    sim._load.count_visits(reply.visits)
    cost = sim.config.live_cost_s(reply.visits)
    if cost > 0:
        time.sleep(cost)  # inside the request's worker (see load.py)
    return reply


def _live_page(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """The page the parameters ask for, from the lazy order or the day's materialised one."""
    site, err = site_param(sim, params)
    if site is None:
        assert err is not None
        return err
    if site.live_disabled:
        return _error(MSG_LIVE_DISABLED)
    day = day_param(sim, site, params, "Live.getLastVisitsDetails")
    if isinstance(day, _Reply):
        return day
    plan = sim._plan(site.idsite, day)
    limit = int_param(params, "filter_limit", 100)
    offset = max(0, int_param(params, "filter_offset", 0))
    asc = params.get("filter_sort_order", "desc").lower() == "asc"
    rng = _tie_rng(sim) if sim.config.unstable_ties else None
    state = day_state(sim, site.idsite, day, plan)
    if state is not None:
        return _live_materialised(sim, state, params, limit, offset, asc, rng)
    n = visible(sim, plan)  # with a clock, the visits ended by it: a prefix of the day
    lo = 0
    raw_min = params.get("minTimestamp")
    if raw_min and n:
        try:
            lo = min(n, plan.first_index_after(int(raw_min)))
        except ValueError:
            lo = 0
    total = n - lo
    stop = total if limit < 0 else min(total, offset + limit)
    if offset >= stop:
        return _Reply(status=200, body=b"[]")
    indices: Sequence[int]
    indices = range(lo + offset, lo + stop) if asc else range(n - 1 - offset, n - 1 - stop, -1)
    if rng is not None and (plan.width == 0 or plan.tie_group > 1):  # else no equal seconds
        a, b = (lo + offset, lo + stop) if asc else (n - stop, n - offset)
        indices = _shuffle_ties(plan.last_ts, plan.first_index_after, a, b, asc, rng)
    return _page_reply(plan, indices, sim.config.seed, None)


def _live_materialised(
    sim: MatomoSimulator,
    state: DayState,
    params: dict[str, str],
    limit: int,
    offset: int,
    asc: bool,
    rng: random.Random | None,
) -> _Reply:
    """Live for a day with hidden or grown visits: the same paging over state's order."""
    ts, idx = state.ts, state.idx
    n = visible_in(sim, state)  # with a clock, the visits ended by it
    lo = 0
    raw_min = params.get("minTimestamp")
    if raw_min and n:
        try:
            lo = min(n, bisect_right(ts, int(raw_min)))
        except ValueError:
            lo = 0
    stop = n - lo if limit < 0 else min(n - lo, offset + limit)
    if offset >= stop:
        return _Reply(status=200, body=b"[]")
    a, b = (lo + offset, lo + stop) if asc else (n - stop, n - offset)
    positions: Sequence[int]
    if rng is not None:
        positions = _shuffle_ties(ts.__getitem__, lambda t: bisect_right(ts, t), a, b, asc, rng)
    else:
        positions = range(a, b) if asc else range(b - 1, a - 1, -1)
    indices = [idx[q] for q in positions]
    return _page_reply(state.plan, indices, sim.config.seed, state.grown, state.anonymised)


def _tie_rng(sim: MatomoSimulator) -> random.Random:
    """A fresh shuffle source per Live request: deterministic for a request sequence."""
    with sim._lock:
        sim._live_requests += 1
        k = sim._live_requests
    seed = sim.config.seed.to_bytes(8, "little", signed=True)
    return random.Random(b"ties" + seed + k.to_bytes(8, "little"))


def _page_reply(
    plan: _DayPlan,
    indices: Sequence[int],
    seed: int,
    grown: dict[int, int] | None,
    anonymised: dict[int, Anonymisation] | None = None,
) -> _Reply:
    if len(indices) <= _STREAM_THRESHOLD:
        reply = _json_reply(render_visits(plan, indices, seed, grown, anonymised))
    else:
        reply = _Reply(status=200, stream=_live_chunks(plan, indices, seed, grown, anonymised))
    reply.visits = len(indices)
    return reply


def _live_chunks(
    plan: _DayPlan,
    indices: Sequence[int],
    seed: int,
    grown: dict[int, int] | None = None,
    anonymised: dict[int, Anonymisation] | None = None,
) -> Iterator[bytes]:
    """A huge page as JSON pieces so memory stays bounded by one batch."""
    yield b"["
    for b0 in range(0, len(indices), _STREAM_BATCH):
        batch = render_visits(plan, indices[b0 : b0 + _STREAM_BATCH], seed, grown, anonymised)
        body = php_json(batch)[1:-1]
        yield body if b0 == 0 else b"," + body
    yield b"]"
