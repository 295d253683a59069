"""A visit as Live.getLastVisitsDetails serves it: Matomo 5.0.2's fields in their order (the
samples' bytes are checked against it), built from the parts a visit is made of."""

from __future__ import annotations

from typing import Any

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.actions import _visit_actions, _Walk
from matomo_kafka.simulator.visits.catalogue import _GOAL_SVG, _PLANS
from matomo_kafka.simulator.visits.dates import _dates, _hms, _pretty_duration
from matomo_kafka.simulator.visits.devices import _DEVICES
from matomo_kafka.simulator.visits.locations import _LANGUAGES
from matomo_kafka.simulator.visits.plan import _DayPlan
from matomo_kafka.simulator.visits.referrers import _REFERRERS
from matomo_kafka.simulator.visits.visitor import _visit_ip, _Visitor, _visitor


def _make_visit(p: _DayPlan, i: int, seed: int) -> JSON:
    """Visit i (asc order) of a day: a pure function of (seed, idsite, day, i, n).

    Each part below is a run of consecutive fields in Matomo's order, so merging them in this
    order gives the record Matomo serves."""
    h = p.digest(i)
    last = p.last_ts(i, h)
    id_visit = p.id_base | i
    referrer_fields, referrer = _REFERRERS[h[5]]
    entries, walk, first = _visit_actions(p, h, id_visit, last, referrer)
    who = _visitor(h, seed, p.ctx.site.idsite)
    return {
        **_identity(p, h, id_visit, who, entries, walk),
        **_server_times(p, first, last),
        **_visitor_fields(who, walk),
        **_duration_and_counts(h, first, last, walk),
        **referrer_fields,
        **_client(h, walk),
        **_local_time_and_rest(p, h, first, who),
    }


def _identity(
    p: _DayPlan, h: bytes, id_visit: int, who: _Visitor, entries: list[JSON], walk: _Walk
) -> JSON:
    """idSite .. siteCurrencySymbol: which visit of which site, its actions and currency."""
    ctx = p.ctx
    return {
        "idSite": ctx.site.idsite,
        "idVisit": id_visit,
        "visitIp": _visit_ip(h),
        "visitorId": who.visitor_id,
        "fingerprint": h[16:24].hex(),
        "actionDetails": entries,
        "goalConversions": walk.goals,
        "siteCurrency": ctx.site.currency,
        "siteCurrencySymbol": ctx.symbol,
    }


def _server_times(p: _DayPlan, first: int, last: int) -> JSON:
    """serverDate .. serverTimePrettyFirstAction: the last action in UTC, then both ends of the
    visit pretty-printed in site-local time (siteName sits among them in Matomo's order)."""
    first_local = first + p.offset(first)
    last_local = last + p.offset(last)
    utc_iso = _dates(last // 86400)[0]
    return {
        "serverDate": utc_iso,
        "visitServerHour": str(last % 86400 // 3600),
        "lastActionTimestamp": last,
        "lastActionDateTime": f"{utc_iso} {_hms(last)}",
        "siteName": p.ctx.name,
        "serverTimestamp": last,
        "firstActionTimestamp": first,
        "serverTimePretty": _hms(last_local),
        "serverDatePretty": _dates(last_local // 86400)[1],
        "serverDatePrettyFirstAction": _dates(first_local // 86400)[1],
        "serverTimePrettyFirstAction": _hms(first_local),
    }


def _visitor_fields(who: _Visitor, walk: _Walk) -> JSON:
    """userId .. secondsSinceLastEcommerceOrder: who visits, converted or not, how often."""
    converted = 1 if walk.goals else 0
    return {
        "userId": who.user_id,
        "visitorType": "returning" if who.returning else "new",
        "visitorTypeIcon": "plugins/Live/images/returningVisitor.png" if who.returning else None,
        "visitConverted": converted,
        "visitConvertedIcon": _GOAL_SVG if converted else None,
        "visitCount": who.visit_count,
        "visitEcommerceStatus": "none",
        "visitEcommerceStatusIcon": None,
        "daysSinceFirstVisit": who.days_first,
        "secondsSinceFirstVisit": who.sec_first,
        "daysSinceLastEcommerceOrder": 0,
        "secondsSinceLastEcommerceOrder": None,
    }


def _duration_and_counts(h: bytes, first: int, last: int, walk: _Walk) -> JSON:
    """visitDuration .. interactions: how long the visit lasted and what it did."""
    span = last - first
    duration = span + (h[46] % 3) if span else 0
    return {
        "visitDuration": duration,
        "visitDurationPretty": _pretty_duration(duration),
        "searches": walk.searches,
        "actions": walk.actions,
        "interactions": walk.interactions,
    }


def _client(h: bytes, walk: _Walk) -> JSON:
    """languageCode .. longitude: language, device, the events count, location."""
    dev_fields: dict[str, Any] = _DEVICES[h[6]][0]
    lang_code, lang_name, geo = _LANGUAGES[h[7]]
    return {
        "languageCode": lang_code,
        "language": lang_name,
        **dev_fields,
        "events": walk.events,
        **geo,
    }


def _local_time_and_rest(p: _DayPlan, h: bytes, first: int, who: _Visitor) -> JSON:
    """visitLocalTime .. dimension1: the visit's start in site-local time, the time since the
    last visit, the screen, plugins and the visit-scoped custom dimension."""
    first_local = first + p.offset(first)
    resolutions = _DEVICES[h[6]][1]
    return {
        "visitLocalTime": _hms(first_local),
        "visitLocalHour": str(first_local % 86400 // 3600),
        "daysSinceLastVisit": who.days_last,
        "secondsSinceLastVisit": who.sec_last,
        "resolution": resolutions[h[8] % len(resolutions)],
        "plugins": "",
        "pluginsIcons": None,
        "dimension1": _PLANS[h[9]],
    }
