"""A visit's actions (actionDetails): which kinds, when, and each entry as Matomo shows it --
page views, events, site searches, outlinks, downloads and goal conversions."""

from __future__ import annotations

import hashlib
from typing import Any

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.catalogue import (
    _ENTRY_COUNTS,
    _ENTRY_KINDS,
    _EVENTS,
    _GOAL_ICON,
    _GOAL_SVG,
    _GOALS,
    _ICON_ACTION_SVG,
    _REVENUES,
    _SEARCHES,
)
from matomo_kafka.simulator.visits.dates import _dates, _hms, _pretty_duration
from matomo_kafka.simulator.visits.plan import _DayPlan


def _page_view(
    url: str,
    title: str,
    pid: Any,
    idpageview: str,
    pretty: str,
    page_id: int,
    position: int,
    timestamp: int,
    dim2: Any,
) -> JSON:
    """A page-view entry of actionDetails, in Matomo 5.0.2's key order (timeSpent filled later)."""
    return {
        "type": "action",
        "url": url,
        "pageTitle": title,
        "pageIdAction": pid,
        "idpageview": idpageview,
        "serverTimePretty": pretty,
        "pageId": page_id,
        "timeSpent": 0,
        "timeSpentPretty": "0s",
        "pageviewPosition": position,
        "title": title,
        "subtitle": url,
        "icon": "",
        "iconSVG": _ICON_ACTION_SVG,
        "timestamp": timestamp,
        "dimension2": dim2,
    }


def _entry_plan(
    h: bytes, h2: bytes, last: int, count: int = 0
) -> tuple[list[str], list[int], list[int], list[bool]]:
    """The kinds of a visit's entries (the first is a page view), their timestamps ending
    exactly at `last`, the goal of each goal entry, and which page view is the thank-you page
    that goal 1 converts on (the one just before it). `count`: that many entries (a
    single-page app's or a bot's visit, seconds apart), else 1 to 6."""
    k = count or _ENTRY_COUNTS[h[4]]
    kinds = ["action"]
    for j in range(1, k):
        kinds.append(_ENTRY_KINDS[h2[j]])
    gaps = [0] * k
    for j in range(1, k):
        g = h2[12 + j]
        kind = kinds[j]
        if kind == "goal":
            gaps[j] = 0 if kinds[j - 1] == "action" else 5 + g % 90
        elif kind == "action":
            gaps[j] = 8 + (g * 7) % 420
        else:
            gaps[j] = 3 + g % 120
        if count:
            gaps[j] %= 30
    stamps = [last - sum(gaps)] * k
    for j in range(1, k):
        stamps[j] = stamps[j - 1] + gaps[j]
    thank_you = [False] * k
    goal_ids = [0] * k
    had_goal1 = False
    for j in range(1, k):
        if kinds[j] == "goal":
            if kinds[j - 1] == "action" and not had_goal1:
                goal_ids[j] = 1
                thank_you[j - 1] = True
                had_goal1 = True
            else:
                goal_ids[j] = 2
    return kinds, stamps, goal_ids, thank_you


class _Walk:
    """Builds a visit's entries in order, keeping what later entries refer to (the current
    page view) and the counts the visit reports."""

    def __init__(
        self, plan: _DayPlan, h2: bytes, id_visit: int, referrer: tuple[Any, Any, Any]
    ) -> None:
        self.plan, self.ctx, self.h2, self.id_visit = plan, plan.ctx, h2, id_visit
        self.referrer = referrer
        self.page_id0 = id_visit * 8
        self.pv_pos = 0
        self.cur_url, self.cur_idpv, self.cur_page_id = "", "", 0
        self.actions = self.searches = self.events = self.goals = self.interactions = 0

    def entry(self, j: int, kind: str, t: int, goal_id: int, thank_you: bool) -> JSON:
        lt = t + self.plan.offset(t)
        pretty = f"{_dates(lt // 86400)[2]} {_hms(lt)}"
        page_id = self.page_id0 + j
        if kind == "action":
            return self._page_view(j, thank_you, pretty, page_id, lt)
        if kind == "event":
            return self._event(j, pretty, page_id, lt)
        if kind == "search":
            return self._search(j, pretty, page_id, lt)
        if kind in ("outlink", "download"):
            return self._link(j, kind, pretty, page_id, lt)
        return self._goal(j, goal_id, pretty, lt)

    def _page_view(self, j: int, thank_you: bool, pretty: str, page_id: int, lt: int) -> JSON:
        self.pv_pos += 1
        self.actions += 1
        self.interactions += 1
        h2, ctx = self.h2, self.ctx
        if thank_you:
            url, title, pid, dim2 = ctx.thank_you
            if h2[6 + j] & 1:
                url = f"{url}?order={self.id_visit % 100000}"
        else:
            url, title, pid, dim2 = ctx.pages[h2[6 + j] % len(ctx.pages)]
        self.cur_url, self.cur_page_id = url, page_id
        self.cur_idpv = h2[24 + 3 * j : 27 + 3 * j].hex()
        return _page_view(url, title, pid, self.cur_idpv, pretty, page_id, self.pv_pos, lt, dim2)

    def _event(self, j: int, pretty: str, page_id: int, lt: int) -> JSON:
        self.actions += 1
        self.events += 1
        which = self.h2[42 + j] % len(_EVENTS)
        cat, act, name, value, ev_subtitle = _EVENTS[which]
        return {
            "type": "event",
            "url": self.cur_url,
            "pageIdAction": self.ctx.event_ids[which],
            "idpageview": "",
            "serverTimePretty": pretty,
            "pageId": page_id,
            "eventCategory": cat,
            "eventAction": act,
            "pageviewPosition": self.pv_pos,
            "timestamp": lt,
            "icon": "plugins/Morpheus/images/event.png",
            "iconSVG": "plugins/Morpheus/images/event.svg",
            "title": "Event",
            "subtitle": ev_subtitle,
            "eventName": name,
            "eventValue": value,
            "dimension2": None,
        }

    def _search(self, j: int, pretty: str, page_id: int, lt: int) -> JSON:
        self.pv_pos += 1
        self.actions += 1
        self.searches += 1
        self.interactions += 1
        kw, count, search_subtitle = _SEARCHES[self.h2[54 + j] % len(_SEARCHES)]
        return {
            "type": "search",
            "url": None,
            "pageIdAction": None,
            "idpageview": "",
            "serverTimePretty": pretty,
            "pageId": page_id,
            "siteSearchKeyword": kw,
            "siteSearchCategory": "",
            "siteSearchCount": count,
            "pageviewPosition": self.pv_pos,
            "icon": "plugins/Morpheus/images/search.png",
            "iconSVG": "plugins/Morpheus/images/search.svg",
            "title": "Site Search",
            "subtitle": search_subtitle,
            "timestamp": lt,
            "dimension2": None,
        }

    def _link(self, j: int, kind: str, pretty: str, page_id: int, lt: int) -> JSON:
        self.actions += 1
        ctx = self.ctx
        if kind == "outlink":
            url, pid = ctx.outlinks[self.h2[54 + j] % len(ctx.outlinks)]
            icon, title = "link", "Outlink"
        else:
            url, pid = ctx.downloads[self.h2[54 + j] % len(ctx.downloads)]
            icon, title = "download", "Download"
        return {
            "type": kind,
            "url": url,
            "pageTitle": None,
            "pageIdAction": pid,
            "idpageview": "",
            "serverTimePretty": pretty,
            "pageId": page_id,
            "pageviewPosition": self.pv_pos,
            "icon": f"plugins/Morpheus/images/{icon}.png",
            "iconSVG": f"plugins/Morpheus/images/{icon}.svg",
            "title": title,
            "subtitle": url,
            "timestamp": lt,
            "dimension2": None,
        }

    def _goal(self, j: int, gid: int, pretty: str, lt: int) -> JSON:
        self.goals += 1
        rb = self.h2[48 + j]
        revs = _REVENUES[gid]
        revenue = revs[rb % len(revs)]
        # Goal 1 converts on the thank-you page view just before it; goal 2 on no page.
        idpv = self.cur_idpv if gid == 1 else None
        goal_page = self.cur_page_id if gid == 1 else None
        g_rtype, g_rname, g_rkw = self.referrer
        e: JSON = {"type": "goal"}
        # About 1 in 4 goal entries lack goalName in the wild; consumers must fill it.
        if rb >= 64:
            e["goalName"] = _GOALS[gid]
        e.update(
            {
                "goalId": gid,
                "idpageview": idpv,
                "revenue": revenue,
                "goalPageId": goal_page,
                "serverTimePretty": pretty,
                "url": self.cur_url,
                "referrerType": g_rtype,
                "referrerName": g_rname,
                "referrerKeyword": g_rkw,
                "icon": _GOAL_ICON,
                "iconSVG": _GOAL_SVG,
                "title": "Goal conversion",
                "subtitle": self.ctx.goal_subtitles[(gid, revenue)],
                "timestamp": lt,
                "dimension2": None,
            }
        )
        return e


def _add_time_spent(entries: list[JSON], kinds: list[str], stamps: list[int], last: int) -> None:
    """A page view's timeSpent: until the next page view, else until the visit's last action."""
    next_pv = last
    for j in range(len(kinds) - 1, -1, -1):
        if kinds[j] == "action":
            spent = next_pv - stamps[j]
            entries[j]["timeSpent"] = spent
            entries[j]["timeSpentPretty"] = _pretty_duration(spent)
            next_pv = stamps[j]


def _visit_actions(
    p: _DayPlan, h: bytes, id_visit: int, last: int, referrer: tuple[Any, Any, Any]
) -> tuple[list[JSON], _Walk, int]:
    """The visit's actionDetails ending at `last`, the walk that counted them, and the first
    action's time. The entries draw on a second hash of the visit's bytes (longer for heavy
    visits: more bytes to pick each entry's parts from)."""
    h2 = hashlib.blake2b(h, digest_size=64).digest()
    entries_wanted = p.ctx.site.actions_per_visit
    if entries_wanted:
        h2 += hashlib.shake_256(h2).digest(3 * entries_wanted + 64)
    kinds, stamps, goal_ids, thank_you = _entry_plan(h, h2, last, entries_wanted)
    walk = _Walk(p, h2, id_visit, referrer)
    entries = [
        walk.entry(j, kind, stamps[j], goal_ids[j], thank_you[j]) for j, kind in enumerate(kinds)
    ]
    _add_time_spent(entries, kinds, stamps, last)
    return entries, walk, stamps[0]
