"""Deterministic visits in Matomo 5.0.2's shapes: visit i of a (site, day) is a pure function of
(seed, idsite, day, i, n), so any page costs only itself; plus the paging hazards (ties, late
and grown visits) and PHP's JSON escaping."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, TypeVar

import orjson

from matomo_kafka.simulator.config import _EPOCH_2000, _SUMMARY_SAMPLE, JSON, SimSite
from matomo_kafka.source.days import site_timezone

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# Time helpers: Matomo cuts days in the site's timezone, pretty-prints in site-local time.
# --------------------------------------------------------------------------------------
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DATE_CACHE: dict[int, tuple[str, str, str]] = {}
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _dates(day_number: int) -> tuple[str, str, str]:
    """(ISO date, "Sunday, March 10, 2024", "Mar 10, 2024") for days since 1970, cached."""
    got = _DATE_CACHE.get(day_number)
    if got is None:
        d = date.fromordinal(day_number + _UNIX_EPOCH_ORDINAL)
        month = _MONTHS[d.month - 1]
        got = (
            d.isoformat(),
            f"{_WEEKDAYS[d.weekday()]}, {month} {d.day}, {d.year}",
            f"{month[:3]} {d.day}, {d.year}",
        )
        _DATE_CACHE[day_number] = got
    return got


_HHMM = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(1440))
_SS = tuple(f":{s:02d}" for s in range(60))


def _hms(ts: int) -> str:
    """HH:MM:SS of a (shifted) timestamp; table lookups beat f-strings in the hot path."""
    s = ts % 86400
    return _HHMM[s // 60] + _SS[s % 60]


def _pretty_duration(sec: int) -> str:
    """Matomo's getPrettyTimeFromSeconds ("1 min 35s", "0s", "1 hours 5 min")."""
    if sec >= 3600:
        return f"{sec // 3600} hours {sec // 60 % 60} min"
    if sec >= 60:
        return f"{sec // 60} min {sec % 60}s"
    return f"{sec}s"


def _day_bounds(tz: tzinfo, day: date) -> tuple[int, int]:
    """UTC [start, end) of a site-local day; 23 or 25 hours long on DST days."""
    nxt = day + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    return int(start), int(end)


# --------------------------------------------------------------------------------------
# PHP json_encode look-alike: "\/" for slashes and \uXXXX for non-ASCII, as in the samples.
# --------------------------------------------------------------------------------------
_UTF8_CHAR_RE = re.compile(rb"[\xc0-\xf7][\x80-\xbf]+")


def _u_escape(m: re.Match[bytes]) -> bytes:
    cp = ord(m.group().decode("utf-8"))
    if cp < 0x10000:
        return b"\\u%04x" % cp
    cp -= 0x10000
    return b"\\u%04x\\u%04x" % (0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF))


class _PStr(str):
    """A non-ASCII str marked for the fast escaping path of php_json.

    orjson hands str subclasses to ``default`` (OPT_PASSTHROUGH_SUBCLASS), which returns the
    precomputed \\uXXXX form; scanning 3 KB per visit with a regex would cost more than
    generating the visit. It compares equal to the plain str.
    """


_FRAGMENTS: dict[str, orjson.Fragment] = {}


def _p(s: str) -> str:
    """Mark s for php_json's fast path if it is not ASCII (call outside hot loops)."""
    if s.isascii():
        return s
    if s not in _FRAGMENTS:
        _FRAGMENTS[s] = orjson.Fragment(json.dumps(s).encode("ascii"))
    return _PStr(s)


def _default(obj: Any) -> orjson.Fragment:
    if isinstance(obj, str):
        frag = _FRAGMENTS.get(obj)
        if frag is None:
            frag = _FRAGMENTS[obj] = orjson.Fragment(json.dumps(str(obj)).encode("ascii"))
        return frag
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def php_json(obj: Any) -> bytes:
    """Serialise like PHP's json_encode ("\\/" and \\uXXXX) so clients meet real escaping."""
    raw = orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    raw = raw.replace(b"/", b"\\/")
    if raw.isascii():
        return raw
    return _UTF8_CHAR_RE.sub(_u_escape, raw)  # unmarked non-ASCII strings: slow but right


# --------------------------------------------------------------------------------------
# Static reference data, shaped like the samples.
# --------------------------------------------------------------------------------------
_CURRENCIES: dict[str, tuple[str, str]] = {
    "USD": ("$", "US Dollar"),
    "EUR": ("€", "Euro"),
    "GBP": ("£", "British Pound Sterling"),
    "JPY": ("¥", "Japanese Yen"),
    "CHF": ("CHF", "Swiss Franc"),
    "CAD": ("$", "Canadian Dollar"),
}
_TZ_NAMES: dict[str, str] = {
    "UTC": "UTC",
    "Europe/Paris": "France",
    "Europe/Berlin": "Germany - Berlin",
    "Europe/London": "United Kingdom",
    "Europe/Madrid": "Spain - Madrid",
    "Europe/Rome": "Italy",
    "America/New_York": "United States - New York",
    "America/Los_Angeles": "United States - Los Angeles",
    "Asia/Tokyo": "Japan",
}


def _weighted(items: Sequence[tuple[T, int]]) -> tuple[T, ...]:
    """A 256-entry table so one random byte picks an item with the given weights."""
    flat: list[T] = []
    for item, w in items:
        flat.extend([item] * w)
    return tuple(flat[(j * len(flat)) // 256] for j in range(256))


_ICON_ACTION_SVG = "plugins/Morpheus/images/action.svg"
_GOAL_ICON = "plugins/Morpheus/images/goal.png"
_GOAL_SVG = "plugins/Morpheus/images/goal.svg"
_GOALS: dict[int, str] = {1: "Thank-you page", 2: "Newsletter signup"}

# (path, title, dimension2). Non-ASCII titles exercise unicode end to end.
_PAGES_RAW: tuple[tuple[str, str, str], ...] = (
    ("/", "Home", "home"),
    ("/products", "Products", "listing"),
    ("/products/espresso-pro-x", "Espresso Pro X", "product"),
    ("/products/moulin-a-cafe", "Moulin à café — édition limitée", "product"),
    ("/pricing", "Pricing", "pricing"),
    ("/blog/hello", "Hello blog", "article"),
    ("/blog/cafe-creme", "Café crème : nos secrets", "article"),
    ("/fr/evenements", "Événements à Paris", "listing"),
    ("/fr/nouveautes", "Nouveautés 🚀", "article"),
    ("/fr/a-propos", "À propos", "about"),
    ("/docs/getting-started", "Getting started", "docs"),
    ("/docs/faq", "FAQ – questions fréquentes", "docs"),
    ("/contact", "Contact", "contact"),
    ("/account", "Account", "account"),
    ("/checkout/cart", "Cart", "checkout"),
    ("/?mtm_source=newsletter&mtm_campaign=spring", "Home", "home"),
)
_PAGES = tuple((path, _p(title), dim2) for path, title, dim2 in _PAGES_RAW)
_THANK_YOU = ("/checkout/thank-you", "Thank you", "confirmation")
_EVENTS_RAW: tuple[tuple[str, str, str, int], ...] = (
    ("Video", "Play", "intro.mp4", 12),
    ("Video", "Pause", "intro.mp4", 37),
    ("Form", "Submit", "contact-form", 1),
    ("Scroll", "Depth", "75%", 75),
    ("Téléchargement", "Clic", "brochure.pdf", 1),
)
# (category, action, name, value, subtitle); Matomo's own quote mismatch kept as served.
_EVENTS = tuple(
    (_p(c), _p(a), _p(n), v, _p(f'Category: "{c}\', Action: "{a}"')) for c, a, n, v in _EVENTS_RAW
)
_SEARCHES_RAW: tuple[tuple[str, int], ...] = (
    ("pricing", 3),
    ("crème brûlée", 0),
    ("tarifs", 5),
    ("api", 12),
    ("café ☕", 1),
)
_SEARCHES = tuple(
    (_p(kw), count, _p(f"{kw} - Search Results Count: {count}")) for kw, count in _SEARCHES_RAW
)
_OUTLINKS = (
    "https://external.example.net/",
    "https://github.com/matomo-org/matomo",
    "https://fr.wikipedia.org/wiki/Caf%C3%A9",
)
_DOWNLOADS = ("/files/brochure.pdf", "/files/tarifs-2024.pdf")

_ENTRY_COUNTS = _weighted([(1, 40), (2, 25), (3, 15), (4, 10), (5, 6), (6, 4)])
_ENTRY_KINDS = _weighted(
    [("action", 55), ("event", 13), ("search", 8), ("outlink", 7), ("download", 5), ("goal", 12)]
)


def _referrer(
    rtype: str, type_name: str, name: str, keyword: str, url: str | None,
    se_url: str | None = None, se_icon: str | None = None,
    social_url: str | None = None, social_icon: str | None = None,
) -> tuple[JSON, tuple[str, str | None, str | None]]:  # fmt: skip
    visit_fields: JSON = {
        "referrerType": rtype,
        "referrerTypeName": type_name,
        "referrerName": name,
        "referrerKeyword": keyword,
        "referrerKeywordPosition": None,
        "referrerUrl": url,
        "referrerSearchEngineUrl": se_url,
        "referrerSearchEngineIcon": se_icon,
        "referrerSocialNetworkUrl": social_url,
        "referrerSocialNetworkIcon": social_icon,
    }
    name, keyword = _p(name), _p(keyword)
    visit_fields["referrerName"], visit_fields["referrerKeyword"] = name, keyword
    goal_fields = (rtype, name or None, keyword or None)
    return visit_fields, goal_fields


_SE_ICONS = "plugins/Morpheus/icons/dist/searchEngines/"
_REFERRERS = _weighted(
    [
        (_referrer("direct", "Direct Entry", "", "", None), 40),
        (
            _referrer(
                "search", "Search Engines", "Google", "Keyword not defined",
                "https://www.google.com/", "http://google.com", _SE_ICONS + "google.com.png",
            ),
            25,
        ),
        (
            _referrer(
                "search", "Search Engines", "Google", "peer",
                "https://www.google.com/search?q=peer", "http://google.com",
                _SE_ICONS + "google.com.png",
            ),
            5,
        ),
        (
            _referrer(
                "search", "Search Engines", "DuckDuckGo", "Keyword not defined",
                "https://duckduckgo.com/", "http://duckduckgo.com",
                _SE_ICONS + "duckduckgo.com.png",
            ),
            5,
        ),
        (
            _referrer(
                "search", "Search Engines", "Qwant", "café paris", "https://www.qwant.com/",
                "http://qwant.com", _SE_ICONS + "qwant.com.png",
            ),
            4,
        ),
        (
            _referrer(
                "campaign", "Campaigns", "spring", "news.example.com",
                "https://news.example.com/article",
            ),
            8,
        ),
        (_referrer("website", "Websites", "news.example.com", "", "https://news.example.com/"), 8),
        (
            _referrer(
                "social", "Social Networks", "LinkedIn", "", "https://www.linkedin.com/",
                social_url="https://linkedin.com",
                social_icon="plugins/Morpheus/icons/dist/socials/linkedin.com.png",
            ),
            5,
        ),
    ]
)  # fmt: skip

_DEV = "plugins/Morpheus/icons/dist/"


def _device(
    dtype: str, brand: str, model: str, os_full: str, os_name: str, os_code: str,
    os_ver: str, family: str, family_desc: str, bname: str, bcode: str, bver: str,
    resolutions: tuple[str, ...],
) -> tuple[JSON, tuple[str, ...]]:  # fmt: skip
    fields: JSON = {
        "deviceType": dtype,
        "deviceTypeIcon": f"{_DEV}devices/{dtype.lower()}.png",
        "deviceBrand": brand,
        "deviceModel": model,
        "operatingSystem": os_full,
        "operatingSystemName": os_name,
        "operatingSystemIcon": f"{_DEV}os/{os_code}.png",
        "operatingSystemCode": os_code,
        "operatingSystemVersion": os_ver,
        "browserFamily": family,
        "browserFamilyDescription": family_desc,
        "browser": f"{bname} {bver}",
        "browserName": bname,
        "browserIcon": f"{_DEV}browsers/{bcode}.png",
        "browserCode": bcode,
        "browserVersion": bver,
    }
    return fields, resolutions


_DESKTOP_RES = ("1920x1080", "1366x768", "2560x1440", "1440x900", "1280x800")
_DEVICES = _weighted(
    [
        (_device("Desktop", "Unknown", "Generic Desktop", "GNU/Linux", "GNU/Linux", "LIN", "",
                 "Blink", "Blink (Chrome, Opera)", "Chrome", "CH", "120.0", _DESKTOP_RES), 20),
        (_device("Desktop", "Unknown", "Generic Desktop", "Windows 10", "Windows", "WIN", "10",
                 "Gecko", "Gecko (Firefox)", "Firefox", "FF", "123.0", _DESKTOP_RES), 18),
        (_device("Desktop", "Unknown", "Generic Desktop", "Windows 10", "Windows", "WIN", "10",
                 "Blink", "Blink (Chrome, Opera)", "Microsoft Edge", "PS", "122.0",
                 _DESKTOP_RES), 14),
        (_device("Desktop", "Apple", "", "Mac 14.3", "Mac", "MAC", "14.3", "WebKit",
                 "WebKit (Safari)", "Safari", "SF", "17.3", ("2560x1600", "1440x900")), 10),
        (_device("Smartphone", "Apple", "iPhone", "iOS 17.3", "iOS", "IOS", "17.3", "WebKit",
                 "WebKit (Safari)", "Mobile Safari", "MF", "17.3", ("390x844", "430x932")), 20),
        (_device("Smartphone", "Samsung", "Galaxy S23", "Android 14", "Android", "AND", "14",
                 "Blink", "Blink (Chrome, Opera)", "Chrome Mobile", "CM", "121.0",
                 ("360x780", "412x915")), 13),
        (_device("Tablet", "Apple", "iPad", "iPadOS 17.3", "iPadOS", "IPA", "17.3", "WebKit",
                 "WebKit (Safari)", "Mobile Safari", "MF", "17.3", ("820x1180",)), 5),
    ]
)  # fmt: skip


def _geo(continent: str, ccode: str, country: str, code: str) -> JSON:
    return {
        "continent": continent,
        "continentCode": ccode,
        "country": country,
        "countryCode": code,
        "countryFlag": f"{_DEV}flags/{code}.png",
        "region": None,
        "regionCode": None,
        "city": None,
        "location": country,
        "latitude": None,
        "longitude": None,
    }


_GEO_UNKNOWN = _geo("Unknown", "unk", "Unknown", "xx")
_LANGUAGES = _weighted(
    [
        (("en", "English", _geo("North America", "amn", "United States", "us")), 30),
        (("en", "English", _GEO_UNKNOWN), 10),
        (("fr", "French", _geo("Europe", "eur", "France", "fr")), 25),
        (("de", "German", _geo("Europe", "eur", "Germany", "de")), 10),
        (("es", "Spanish", _geo("Europe", "eur", "Spain", "es")), 8),
        (("it", "Italian", _GEO_UNKNOWN), 6),
        (("nl", "Dutch", _geo("Europe", "eur", "Netherlands", "nl")), 5),
        (("pt", "Portuguese", _geo("South America", "ams", "Brazil", "br")), 4),
        (("ja", "Japanese", _geo("Asia", "asi", "Japan", "jp")), 2),
    ]
)
_PLANS = _weighted([("free", 45), ("pro", 25), ("enterprise", 8), (None, 22)])
_FIRST_NAMES = (
    "alice", "bob", "chloé", "dave", "élodie", "françois", "marie", "paul", "jürgen", "søren",
)  # fmt: skip
_REVENUES = {1: (10, 10, 10, 25, 49), 2: (5, 0, 0, 0)}


# --------------------------------------------------------------------------------------
# Deterministic lazy visit generation
# --------------------------------------------------------------------------------------
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


def _make_visit(p: _DayPlan, i: int, seed: int) -> JSON:
    """Visit i (asc order) of a day: a pure function of (seed, idsite, day, i, n).

    The record is one literal in Matomo 5.0.2's field order (the samples' bytes are checked
    against it), hence its length; its parts are computed by the functions below."""
    h = p.digest(i)
    h2 = hashlib.blake2b(h, digest_size=64).digest()
    ctx = p.ctx
    site = ctx.site
    entries_wanted = site.actions_per_visit
    if entries_wanted:  # heavy visits: more bytes to pick each entry's parts from
        h2 += hashlib.shake_256(h2).digest(3 * entries_wanted + 64)
    last = p.last_ts(i, h)
    id_visit = p.id_base | i
    kinds, stamps, goal_ids, thank_you = _entry_plan(h, h2, last, entries_wanted)
    first = stamps[0]
    rtype_fields, referrer = _REFERRERS[h[5]]
    walk = _Walk(p, h2, id_visit, referrer)
    entries = [
        walk.entry(j, kind, stamps[j], goal_ids[j], thank_you[j]) for j, kind in enumerate(kinds)
    ]
    _add_time_spent(entries, kinds, stamps, last)
    span = last - first
    duration = span + (h[46] % 3) if span else 0
    dev_fields, resolutions = _DEVICES[h[6]]
    lang_code, lang_name, geo = _LANGUAGES[h[7]]
    who = _visitor(h, seed, site.idsite)
    first_local = first + p.offset(first)
    last_local = last + p.offset(last)
    utc_iso = _dates(last // 86400)[0]
    converted = 1 if walk.goals else 0
    return {
        "idSite": site.idsite,
        "idVisit": id_visit,
        "visitIp": _visit_ip(h),
        "visitorId": who.visitor_id,
        "fingerprint": h[16:24].hex(),
        "actionDetails": entries,
        "goalConversions": walk.goals,
        "siteCurrency": site.currency,
        "siteCurrencySymbol": ctx.symbol,
        "serverDate": utc_iso,
        "visitServerHour": str(last % 86400 // 3600),
        "lastActionTimestamp": last,
        "lastActionDateTime": f"{utc_iso} {_hms(last)}",
        "siteName": ctx.name,
        "serverTimestamp": last,
        "firstActionTimestamp": first,
        "serverTimePretty": _hms(last_local),
        "serverDatePretty": _dates(last_local // 86400)[1],
        "serverDatePrettyFirstAction": _dates(first_local // 86400)[1],
        "serverTimePrettyFirstAction": _hms(first_local),
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
        "visitDuration": duration,
        "visitDurationPretty": _pretty_duration(duration),
        "searches": walk.searches,
        "actions": walk.actions,
        "interactions": walk.interactions,
        **rtype_fields,
        "languageCode": lang_code,
        "language": lang_name,
        **dev_fields,
        "events": walk.events,
        **geo,
        "visitLocalTime": _hms(first_local),
        "visitLocalHour": str(first_local % 86400 // 3600),
        "daysSinceLastVisit": who.days_last,
        "secondsSinceLastVisit": who.sec_last,
        "resolution": resolutions[h[8] % len(resolutions)],
        "plugins": "",
        "pluginsIcons": None,
        "dimension1": _PLANS[h[9]],
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


@dataclass(frozen=True)
class _Visitor:
    returning: bool
    visitor_id: str
    user_id: str | None
    visit_count: int
    days_first: int
    days_last: int
    sec_first: int
    sec_last: int


def _visitor(h: bytes, seed: int, idsite: int) -> _Visitor:
    """Who visits: ~35% returning visitors from a per-site pool, with stable ids."""
    returning = h[10] < 90
    if returning:
        v = int.from_bytes(h[11:14], "little") % 5000
        vh = hashlib.blake2b(
            b"visitor" + seed.to_bytes(8, "little", signed=True) + idsite.to_bytes(4, "little")
            + v.to_bytes(4, "little"),
            digest_size=8,
        ).digest()  # fmt: skip
        visitor_id = vh.hex()
        has_user = vh[0] < 100
        style = vh[1] % 3
        who = _FIRST_NAMES[vh[2] % len(_FIRST_NAMES)]
        visit_count = 2 + h[38] % 25
        days_first = 1 + (h[39] | h[40] << 8) % 400
        days_last = min(days_first, h[41] % 30 + 1)
        sec_first = days_first * 86400 + h[42] * 97
        sec_last = days_last * 86400 + h[43] * 89
    else:
        v = int.from_bytes(h[28:31], "little")
        visitor_id = h[28:36].hex()
        has_user = h[14] < 40
        style = h[15] % 3
        who = _FIRST_NAMES[h[13] % len(_FIRST_NAMES)]
        visit_count, days_first, days_last, sec_first, sec_last = 1, 0, 0, 0, 0
    user_id: str | None = None
    if has_user:
        user_id = _p((f"user-{v}", f"{who}.{v % 1000}@example.com", who)[style])
    return _Visitor(returning, visitor_id, user_id, visit_count, days_first, days_last,
                    sec_first, sec_last)  # fmt: skip


def _visit_ip(h: bytes) -> str:
    """Documentation addresses only (RFC 3849, RFC 5737): 1 in 10 IPv6."""
    ipb = h[24]
    if ipb < 25:
        return f"2001:db8::{h[25]:x}{h[26]:02x}"
    net = ("192.0.2", "198.51.100", "203.0.113")[ipb % 3]
    return f"{net}.{h[25]}"


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


def _hidden_indices(n: int, late: int) -> frozenset[int]:
    """``late`` visit indices spread evenly over the day (distinct as long as late <= n)."""
    c = min(late, n)
    return frozenset(((2 * j + 1) * n) // (2 * c) for j in range(c)) if c > 0 else frozenset()


def _shuffle_ties(
    ts_at: Callable[[int], int],
    first_after: Callable[[int], int],
    a: int,
    b: int,
    asc: bool,
    rng: random.Random,
) -> list[int]:
    """Positions [a, b) of an ascending order, served asc or desc, with every run of equal
    timestamps that the page touches shuffled; runs crossing a or b are shuffled whole
    first, so which of their members land in the page changes from request to request.
    ``first_after(t)`` is the first position whose timestamp is > t."""
    a0 = first_after(ts_at(a) - 1)
    b0 = first_after(ts_at(b - 1))
    stamps = [ts_at(q) for q in range(a0, b0)]
    order: list[int] = []
    r, size = 0, b0 - a0
    while r < size:
        e = r + 1
        while e < size and stamps[e] == stamps[r]:
            e += 1
        run = list(range(a0 + r, a0 + e))
        if e - r > 1:
            rng.shuffle(run)
        order += run
        r = e
    if asc:
        return order[a - a0 : b - a0]
    order.reverse()
    return order[b0 - b : b0 - a]


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
