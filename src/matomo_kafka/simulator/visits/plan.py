"""The deterministic random source: a site's constants, and a day's plan (bounds in the
site's timezone, hash key, id base) from which visit i's bytes and last action time follow."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from matomo_kafka.simulator.config import _EPOCH_2000, SimSite
from matomo_kafka.simulator.visits.catalogue import (
    _CURRENCIES,
    _DOWNLOADS,
    _EVENTS,
    _GOALS,
    _OUTLINKS,
    _PAGES,
    _REVENUES,
    _THANK_YOU,
)
from matomo_kafka.simulator.visits.dates import _day_bounds
from matomo_kafka.simulator.visits.php_json import _p
from matomo_kafka.source.days import site_timezone


@dataclass
class _SiteCtx:
    """Per-site constants reused by every visit, built once."""

    site: SimSite
    tz: tzinfo
    base: str
    name: str
    symbol: str
    goal_subtitles: dict[tuple[int, int], str]
    pages: tuple[tuple[str, str, int, str], ...]  # url, title, pageIdAction, dimension2
    thank_you: tuple[str, str, int, str]
    outlinks: tuple[tuple[str, int], ...]
    downloads: tuple[tuple[str, int], ...]
    event_ids: tuple[int, ...]


def _site_ctx(site: SimSite) -> _SiteCtx:
    base = site.base_url()
    pages = tuple(
        (base + path, title, 2 * k + 2, dim2) for k, (path, title, dim2) in enumerate(_PAGES)
    )
    ty = _THANK_YOU
    symbol = _CURRENCIES.get(site.currency, (site.currency, site.currency))[0]
    goal_subtitles = {
        (gid, rev): _p(f"{_GOALS[gid]} ({symbol}{rev} revenue)" if rev else _GOALS[gid])
        for gid, revs in _REVENUES.items()
        for rev in revs
    }
    return _SiteCtx(
        site=site,
        tz=site_timezone(site.timezone),
        base=base,
        name=_p(site.name),
        symbol=_p(symbol),
        goal_subtitles=goal_subtitles,
        pages=pages,
        thank_you=(base + ty[0], ty[1], 2 * len(_PAGES) + 2, ty[2]),
        outlinks=tuple((u, 101 + 2 * k) for k, u in enumerate(_OUTLINKS)),
        downloads=tuple((base + p, 121 + 2 * k) for k, p in enumerate(_DOWNLOADS)),
        event_ids=tuple(141 + 2 * k for k in range(len(_EVENTS))),
    )


@dataclass
class _DayPlan:
    """What every visit of one (site, day, n) shares: bounds, hash key, id base."""

    ctx: _SiteCtx
    day: date
    n: int
    start: int
    end: int
    span: int
    width: int
    key: bytes
    id_base: int
    offsets: dict[int, int]
    tie_group: int = 1

    def offset(self, ts: int) -> int:
        """Site UTC offset at ts; cached per 15 minutes (tz transitions sit on those)."""
        b = ts // 900
        off = self.offsets.get(b)
        if off is None:
            delta = datetime.fromtimestamp(ts, self.ctx.tz).utcoffset()
            off = int(delta.total_seconds()) if delta is not None else 0
            self.offsets[b] = off
        return off

    def digest(self, i: int) -> bytes:
        return hashlib.blake2b(self.key + i.to_bytes(4, "little"), digest_size=64).digest()

    def last_ts(self, i: int, h: bytes | None = None) -> int:
        """Nondecreasing in i, inside [start, end); ties only when n > span."""
        if h is None:
            h = self.digest(i)
        jitter = int.from_bytes(h[0:4], "little") % self.width if self.width else 0
        return self.start + (i * self.span) // self.n + jitter

    def first_index_after(self, min_ts: int) -> int:
        """Smallest i whose last action is strictly after min_ts (binary search)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.last_ts(mid) > min_ts:
                hi = mid
            else:
                lo = mid + 1
        return lo


class _TiedDayPlan(_DayPlan):
    """A plan whose visits come in groups of ``tie_group`` sharing the leader's second."""

    def last_ts(self, i: int, h: bytes | None = None) -> int:
        lead = i - i % self.tie_group
        return _DayPlan.last_ts(self, lead, h if lead == i else None)


def _make_plan(ctx: _SiteCtx, day: date, n: int, seed: int) -> _DayPlan:
    start, end = _day_bounds(ctx.tz, day)
    span = end - start
    days = (day - _EPOCH_2000).days
    key = (
        b"matomo-sim\x00"
        + seed.to_bytes(8, "little", signed=True)
        + ctx.site.idsite.to_bytes(4, "little")
        + day.toordinal().to_bytes(4, "little")
    )
    tie_group = ctx.site.tie_group
    return (_TiedDayPlan if tie_group > 1 else _DayPlan)(
        ctx=ctx,
        day=day,
        n=n,
        start=start,
        end=end,
        span=span,
        width=span // n if n else 0,
        key=key,
        id_base=(days << 35) | (ctx.site.idsite << 24),
        offsets={},
        tie_group=tie_group,
    )
