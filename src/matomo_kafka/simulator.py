"""Matomo 5.0.2 (or 4.15.1) HTTP API simulator.

Tests and benchmarks need a Matomo that speaks the real HTTP API (same JSON shapes, types,
error messages and status codes as the captured Matomo 5.0.2 samples) without a PHP/MariaDB
stack. Visits are generated lazily and deterministically: visit i of a (site, day) is a pure
function of (seed, idsite, day, i, n), so a page of a 1,000,000-visit day costs only that
page and two simulators with the same config serve the same bytes. Faults (5xx, 429,
delays, truncated bodies, dropped connections, error envelopes) exercise client retries.

Real-Matomo details reproduced on purpose, because the exporter must cope with them:
days are cut in the site's timezone on the last action time while ``serverDate`` is the UTC
date; ``actionDetails[].timestamp`` is shifted by the site's UTC offset (site-local wall
clock read as UTC), unlike ``lastActionTimestamp``; about 1 goal entry in 4 has no
``goalName``; bodies are escaped like PHP's json_encode ("\\/", "\\u00e9", surrogate pairs).

Paging hazards an exporter must survive, all off by default: ``SimSite.tie_group`` makes
groups of consecutive visits share one last-action second; ``SimConfig.unstable_ties``
reorders the visits of each such second afresh on every Live request, as MySQL may for
ORDER BY visit_last_action_time LIMIT/OFFSET without a tie-breaker, so offset paging can skip
or repeat visits; ``SimSite.late`` hides some visits of a day (log imports, queued tracking)
until ``MatomoSimulator.release_late``; ``MatomoSimulator.grow_visits`` gives visits one more
page view, moving their last action later. Days with hidden or grown visits are served from
a materialised order; all other days keep the lazy index arithmetic.

Served over plain HTTP, or over HTTPS with a certificate given to ``start(tls=(cert, key))``
(``simulate --tls-cert/--tls-key``): a corporate gateway's TLS, made testable. Handshakes that
fail (a client that does not trust the certificate) are listed in ``tls_refusals``.

Load, for benchmarks: ``SimConfig.workers`` gives the server a fixed number of workers
(requests beyond them queue), each Live request holding one for ``page_cost_s`` +
``visit_cost_s`` per visit of its page; ``MatomoSimulator.stats()`` (also GET /__stats)
counts the requests seen, the most in flight at once, those that waited for a worker.

Versions: ``SimConfig.matomo_version`` ("5.0.2", the default, or "4.15.1") sets what
API.getMatomoVersion says and how Matomo refuses a token. 5.0.2: HTTP 401, Matomo's HTML error
page for API.getMatomoVersion and a JSON envelope for the other methods; 4.15.1 takes a token it
does not know for the anonymous user: HTTP 200 envelopes saying it needs view access "for at
least one website" (methods without idSite) or "for the website id = N". A valid token gets the
same per-site answer for ``SimConfig.denied_sites`` (HTTP 401 in 5.0.2, 200 in 4.15.1). Other
answers keep the 5.0.2 shapes in both versions.

Only the standard library and orjson are used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import html
import json
import random
import re
import socket
import ssl
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

__all__ = [
    "MATOMO_VERSION",
    "MATOMO_VERSIONS",
    "Fault",
    "FaultKind",
    "MatomoSimulator",
    "SimConfig",
    "SimSite",
    "run_simulator",
]

MATOMO_VERSION = "5.0.2"
#: The Matomo versions whose refusals the simulator reproduces (tests/fixtures/matomo-*).
MATOMO_VERSIONS = ("5.0.2", "4.15.1")

FaultKind = Literal["status", "rate_limit", "delay", "truncate", "envelope", "disconnect"]
_FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

JSON = dict[str, Any]
T = TypeVar("T")

# --------------------------------------------------------------------------------------
# Real Matomo 5.0.2 messages (verbatim from the samples where one exists).
# --------------------------------------------------------------------------------------
MSG_BAD_TOKEN = (
    "Unable to authenticate with the provided token. It is either invalid, expired or is "
    "required to be sent as a POST parameter."
)
MSG_NO_VIEW = "You can't access this resource as it requires 'view' access for the website id = {}."
#: 4.15.1, to a token it does not know (the anonymous user), for a method without idSite.
MSG_NO_VIEW_ANY = (
    "You can't access this resource as it requires view access for at least one website."
)
#: 5.0.2's HTML error page (API.getMatomoVersion with a bad token) says it more briefly.
MSG_BAD_TOKEN_PAGE = (
    "Unable to authenticate with the provided token. It is either invalid or expired."
)
MSG_UNKNOWN_SITE = "An unexpected website was found in the request: website id was set to '{}' ."
MSG_BAD_DATE = (
    "Date format must be: YYYY-MM-DD, or 'today' or 'yesterday' or any keyword supported by the "
    "strtotime function (see http://php.net/strtotime for more information): false"
)
MSG_UNKNOWN_METHOD = (
    "The method '{}' does not exist or is not available in the module '\\Piwik\\Plugins\\{}\\API'."
)
MSG_LIVE_DISABLED = (
    "Visits log is deactivated for this website. This can be changed in the website settings."
)
MSG_MISSING_PARAM = "Please specify a value for '{}'."
MSG_BAD_METHOD_NAME = "The method name is invalid. Expected 'module.methodName'"
MSG_ONLY_API_JSON = "This Matomo simulator only answers module=API requests with format=json."
MSG_ONLY_DAY = "This Matomo simulator only supports period=day for {} (got period '{}')."
DEFAULT_ENVELOPE_MESSAGE = "SQLSTATE[HY000] [2002] Connection refused"

_HTML_401 = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    b"<title>401 Unauthorized</title>\n</head><body>\n<h1>Unauthorized</h1>\n"
    b"<p>This server could not verify that you are authorized to access the document "
    b"requested.</p>\n</body></html>\n"
)

#: Matomo 5.0.2's HTML error page, verbatim (tests/fixtures/matomo-5.0.2/version_bad_token.html)
#: but for {base}, the scheme and host Matomo was reached at, and the {message} (HTML-escaped).
_ERROR_PAGE = (
    "<!DOCTYPE html>\n"
    "<html>\n"
    "<head>\n"
    '\t<meta charset="utf-8">\n'
    '\t<meta name="robots" content="noindex,nofollow">\n'
    "\t<title>Matomo &rsaquo; Error</title>\n"
    '\t<link rel="shortcut icon" href="misc/user/favicon.png" />\n'
    '\t<link rel="stylesheet" type="text/css"'
    ' href="plugins/Morpheus/stylesheets/simple_structure.css" />\n'
    "</head>\n"
    '<body id="simple">\n'
    "\n"
    '<div class="logo">\n'
    '\t<img title="Matomo" alt="Matomo" style="height: 40px;"'
    ' src="{base}/plugins/Morpheus/images/logo.svg"/>\n'
    "</div>\n"
    "\n"
    '<div class="box">\n'
    "\n"
    '\t<div class="header">\n'
    "\t\t<h1>An error occurred</h1>\n"
    "\t</div>\n"
    "\n"
    '\t<div class="content"><h2>{message}</h2><p><a'
    ' href="javascript:window.history.back();">Go Back</a> | <a href="index.php">Go to'
    " Matomo</a></p>  <ul>\n"
    '                            <li><a rel="noreferrer noopener" target="_blank"'
    ' href="https://matomo.org">Matomo.org homepage</a></li>\n'
    '                            <li><a rel="noreferrer noopener" target="_blank"'
    ' href="https://matomo.org/faq/">Frequently Asked Questions</a></li>\n'
    '                            <li><a rel="noreferrer noopener" target="_blank"'
    ' href="https://matomo.org/docs/">User Guides</a></li>\n'
    '                            <li><a rel="noreferrer noopener" target="_blank"'
    ' href="https://forum.matomo.org/">Matomo Forums</a></li>\n'
    '                            <li><a rel="noreferrer noopener" target="_blank"'
    ' href="https://matomo.org/support/">Professional Support for Matomo</a></li>\n'
    "                            </ul>    </div>\n"
    "\n"
    '    <div class="footer">\n'
    '        <a href="index.php">&laquo; Back to Matomo</a>\n'
    "    </div>\n"
    "\n"
    "</div>\n"
    "</body>\n"
    "</html>\n"
    "\n"
)


# idVisit = days since 2000-01-01 << 35 | idsite << 24 | i: unique, < 2**50, and pageId =
# idVisit * 8 + j stays below 2**53 so JavaScript consumers keep exact ids.
_EPOCH_2000 = date(2000, 1, 1)
_MAX_DAYS = 1 << 15
_MAX_SITE = (1 << 11) - 1
MAX_VISITS_PER_DAY = 1 << 24
_STREAM_THRESHOLD = 20_000  # pages above this many visits are sent chunked, in batches
_STREAM_BATCH = 1_000
_SUMMARY_SAMPLE = 2_000  # VisitsSummary is exact up to this many visits a day
REQUEST_LOG_LIMIT = 200_000  # oldest entries are dropped past this (long CLI runs)
STATS_PATH = "/__stats"  # GET: MatomoSimulator.stats() as JSON; ?reset=1 also resets them


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclass
class SimSite:
    """One simulated website; visits per day are ``visits[day]`` or ``default_visits``.

    ``tie_group``: visits come in groups of that many consecutive ones sharing one last
    action second. ``late``: day -> how many of its visits stay hidden (from Live and
    VisitsSummary) until ``MatomoSimulator.release_late``.
    """

    idsite: int
    name: str
    timezone: str = "UTC"
    default_visits: int = 0
    visits: dict[str, int] = field(default_factory=dict)
    live_disabled: bool = False
    currency: str = "USD"
    main_url: str | None = None  # default: https://<slug-of-name>.example.org
    ts_created: str | None = None  # default: first configured day, else 2024-01-01
    tie_group: int = 1
    late: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimSite:
        _reject_unknown_keys(d, cls.__dataclass_fields__, "site")
        site = cls(
            idsite=int(d["idsite"]),
            name=str(d["name"]),
            timezone=str(d.get("timezone", "UTC")),
            default_visits=int(d.get("default_visits", 0)),
            visits={str(k): int(v) for k, v in dict(d.get("visits", {})).items()},
            live_disabled=bool(d.get("live_disabled", False)),
            currency=str(d.get("currency", "USD")),
            main_url=None if d.get("main_url") is None else str(d["main_url"]),
            ts_created=None if d.get("ts_created") is None else str(d["ts_created"]),
            tie_group=int(d.get("tie_group", 1)),
            late={str(k): int(v) for k, v in dict(d.get("late", {})).items()},
        )
        site.validate()
        return site

    def validate(self) -> None:
        """Fail early on values the id scheme or the timezone code cannot represent."""
        if not 1 <= self.idsite <= _MAX_SITE:
            raise ValueError(f"idsite must be in 1..{_MAX_SITE}, got {self.idsite}")
        _tzinfo(self.timezone)
        _check_count(self.default_visits)
        for day, n in self.visits.items():
            date.fromisoformat(day)
            _check_count(n)
        if self.tie_group < 1:
            raise ValueError(f"tie_group must be >= 1, got {self.tie_group}")
        for day, n in self.late.items():
            total = self.count_for(date.fromisoformat(day))
            if not 0 <= n <= total:
                raise ValueError(f"late visits of {day} must be in 0..{total}, got {n}")

    def base_url(self) -> str:
        if self.main_url:
            return self.main_url.rstrip("/")
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or f"site{self.idsite}"
        return f"https://{slug}.example.org"

    def count_for(self, day: date) -> int:
        return self.visits.get(day.isoformat(), self.default_visits)


@dataclass
class Fault:
    """An injected failure, hitting the next ``times`` matching requests (-1 = forever).

    ``None`` filters match anything; ``offset`` matches ``filter_offset`` (default 0).
    """

    kind: FaultKind
    method: str | None = None
    idsite: int | None = None
    date: str | None = None
    offset: int | None = None
    times: int = 1
    status: int = 500
    retry_after: int = 1
    delay_s: float = 0.0
    message: str = DEFAULT_ENVELOPE_MESSAGE

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_FAULT_KINDS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        _reject_unknown_keys(d, cls.__dataclass_fields__, "fault")
        return cls(**d)

    def matches(self, method: str | None, idsite: int | None, day: str | None, offset: int) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.idsite is None or self.idsite == idsite)
            and (self.date is None or self.date == day)
            and (self.offset is None or self.offset == offset)
        )


@dataclass
class SimConfig:
    """Everything the simulator serves; JSON-friendly through from_dict/to_dict."""

    token: str
    sites: list[SimSite]
    basic_auth: tuple[str, str] | None = None
    post_only_token: bool = True
    latency_s: float = 0.0
    seed: int = 1
    denied_sites: list[int] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    unstable_ties: bool = False  # Live reshuffles same-second visits on every request
    # A server with a fixed number of workers (0: one per request, the default): requests
    # beyond them queue, and each Live request holds its worker for page_cost_s +
    # visit_cost_s * visits in the page, so benchmarks see what extra concurrency buys.
    # latency_s, by contrast, is slept outside any worker (unbounded parallelism).
    workers: int = 0
    page_cost_s: float = 0.0
    visit_cost_s: float = 0.0
    # PHP's limits: a Live page of more visits than this (0: no limit) fails with HTTP 500
    # and Matomo's error page, "Allowed memory size ... exhausted" (memory) or "Maximum
    # execution time ... exceeded" (time), as a real Matomo does on too big a page.
    page_limit_visits: int = 0
    page_limit_kind: str = "memory"
    #: Which Matomo's answers to give (see MATOMO_VERSIONS and the module docstring).
    matomo_version: str = MATOMO_VERSION

    def __post_init__(self) -> None:
        ids = [s.idsite for s in self.sites]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate idsite in {ids}")
        if self.matomo_version not in MATOMO_VERSIONS:
            raise ValueError(
                f"matomo_version {self.matomo_version!r}: expected one of {MATOMO_VERSIONS}"
            )
        if self.workers < 0 or self.page_cost_s < 0 or self.visit_cost_s < 0:
            raise ValueError("workers, page_cost_s and visit_cost_s must be >= 0")
        for s in self.sites:
            s.validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        _reject_unknown_keys(d, cls.__dataclass_fields__, "config")
        ba = d.get("basic_auth")
        return cls(
            token=str(d["token"]),
            sites=[SimSite.from_dict(s) for s in d.get("sites", [])],
            basic_auth=None if ba is None else (str(ba[0]), str(ba[1])),
            post_only_token=bool(d.get("post_only_token", True)),
            latency_s=float(d.get("latency_s", 0.0)),
            seed=int(d.get("seed", 1)),
            denied_sites=[int(x) for x in d.get("denied_sites", [])],
            faults=[Fault.from_dict(f) for f in d.get("faults", [])],
            unstable_ties=bool(d.get("unstable_ties", False)),
            workers=int(d.get("workers", 0)),
            page_cost_s=float(d.get("page_cost_s", 0.0)),
            visit_cost_s=float(d.get("visit_cost_s", 0.0)),
            page_limit_visits=int(d.get("page_limit_visits", 0)),
            page_limit_kind=str(d.get("page_limit_kind", "memory")),
            matomo_version=str(d.get("matomo_version", MATOMO_VERSION)),
        )

    def live_cost_s(self, visits: int) -> float:
        """Worker time one Live request costs: the fixed page cost plus a cost per visit."""
        return self.page_cost_s + self.visit_cost_s * visits

    @classmethod
    def from_json(cls, path: str | Path) -> SimConfig:
        return cls.from_dict(orjson.loads(Path(path).read_bytes()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["basic_auth"] = None if self.basic_auth is None else list(self.basic_auth)
        return d


def _reject_unknown_keys(d: dict[str, Any], fields: dict[str, Any], what: str) -> None:
    """A typo in a hand-written config ("time" for "times") must not be silently ignored."""
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {sorted(unknown)}; expected {sorted(fields)}")


def _check_count(n: int) -> None:
    if not 0 <= n <= MAX_VISITS_PER_DAY:
        raise ValueError(f"visits per day must be in 0..{MAX_VISITS_PER_DAY}, got {n}")


def _as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(day)


# --------------------------------------------------------------------------------------
# Time helpers: Matomo cuts days in the site's timezone, pretty-prints in site-local time.
# --------------------------------------------------------------------------------------
_UTC_OFFSET_RE = re.compile(r"^UTC([+-])(\d{1,2}(?:\.\d+)?)$")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DATE_CACHE: dict[int, tuple[str, str, str]] = {}
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _tzinfo(name: str) -> tzinfo:
    """IANA names plus Matomo's manual offsets ("UTC", "UTC+5.5", "UTC-3")."""
    if name == "UTC":
        return UTC
    m = _UTC_OFFSET_RE.match(name)
    if m:
        hours = float(m.group(2)) * (1 if m.group(1) == "+" else -1)
        return timezone(timedelta(hours=hours))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown timezone {name!r}") from e


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
        tz=_tzinfo(site.timezone),
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
    """Visit i (asc order) of a day: a pure function of (seed, idsite, day, i, n)."""
    h = p.digest(i)
    h2 = hashlib.blake2b(h, digest_size=64).digest()
    ctx = p.ctx
    site = ctx.site
    last = p.last_ts(i, h)
    id_visit = p.id_base | i
    page_id0 = id_visit * 8

    # Entry kinds; the first entry is always a page view.
    k = _ENTRY_COUNTS[h[4]]
    kinds = ["action"]
    for j in range(1, k):
        kinds.append(_ENTRY_KINDS[h2[j]])

    # Gaps between entries, then timestamps ending exactly at `last`.
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
    first = last - sum(gaps)
    stamps = [first] * k
    for j in range(1, k):
        stamps[j] = stamps[j - 1] + gaps[j]

    # Goal 1 ("Thank-you page") converts on the page view just before it.
    forced_thank_you = [False] * k
    goal_ids = [0] * k
    had_goal1 = False
    for j in range(1, k):
        if kinds[j] == "goal":
            if kinds[j - 1] == "action" and not had_goal1:
                goal_ids[j] = 1
                forced_thank_you[j - 1] = True
                had_goal1 = True
            else:
                goal_ids[j] = 2

    rtype_fields, (g_rtype, g_rname, g_rkw) = _REFERRERS[h[5]]
    entries: list[JSON] = []
    pv_pos = 0
    cur_url = ""
    cur_idpv = ""
    cur_page_id = 0
    n_actions = n_searches = n_events = n_goals = n_interactions = 0
    for j in range(k):
        t = stamps[j]
        lt = t + p.offset(t)
        pretty = f"{_dates(lt // 86400)[2]} {_hms(lt)}"
        kind = kinds[j]
        page_id = page_id0 + j
        e: JSON
        if kind == "action":
            pv_pos += 1
            n_actions += 1
            n_interactions += 1
            if forced_thank_you[j]:
                url, title, pid, dim2 = ctx.thank_you
                if h2[6 + j] & 1:
                    url = f"{url}?order={id_visit % 100000}"
            else:
                url, title, pid, dim2 = ctx.pages[h2[6 + j] % len(ctx.pages)]
            cur_url, cur_page_id = url, page_id
            cur_idpv = h2[24 + 3 * j : 27 + 3 * j].hex()
            e = _page_view(url, title, pid, cur_idpv, pretty, page_id, pv_pos, lt, dim2)
        elif kind == "event":
            n_actions += 1
            n_events += 1
            cat, act, name, value, ev_subtitle = _EVENTS[h2[42 + j] % len(_EVENTS)]
            e = {
                "type": "event",
                "url": cur_url,
                "pageIdAction": ctx.event_ids[h2[42 + j] % len(_EVENTS)],
                "idpageview": "",
                "serverTimePretty": pretty,
                "pageId": page_id,
                "eventCategory": cat,
                "eventAction": act,
                "pageviewPosition": pv_pos,
                "timestamp": lt,
                "icon": "plugins/Morpheus/images/event.png",
                "iconSVG": "plugins/Morpheus/images/event.svg",
                "title": "Event",
                "subtitle": ev_subtitle,
                "eventName": name,
                "eventValue": value,
                "dimension2": None,
            }
        elif kind == "search":
            pv_pos += 1
            n_actions += 1
            n_searches += 1
            n_interactions += 1
            kw, count, search_subtitle = _SEARCHES[h2[54 + j] % len(_SEARCHES)]
            e = {
                "type": "search",
                "url": None,
                "pageIdAction": None,
                "idpageview": "",
                "serverTimePretty": pretty,
                "pageId": page_id,
                "siteSearchKeyword": kw,
                "siteSearchCategory": "",
                "siteSearchCount": count,
                "pageviewPosition": pv_pos,
                "icon": "plugins/Morpheus/images/search.png",
                "iconSVG": "plugins/Morpheus/images/search.svg",
                "title": "Site Search",
                "subtitle": search_subtitle,
                "timestamp": lt,
                "dimension2": None,
            }
        elif kind in ("outlink", "download"):
            n_actions += 1
            if kind == "outlink":
                url, pid = ctx.outlinks[h2[54 + j] % len(ctx.outlinks)]
                icon, title = "link", "Outlink"
            else:
                url, pid = ctx.downloads[h2[54 + j] % len(ctx.downloads)]
                icon, title = "download", "Download"
            e = {
                "type": kind,
                "url": url,
                "pageTitle": None,
                "pageIdAction": pid,
                "idpageview": "",
                "serverTimePretty": pretty,
                "pageId": page_id,
                "pageviewPosition": pv_pos,
                "icon": f"plugins/Morpheus/images/{icon}.png",
                "iconSVG": f"plugins/Morpheus/images/{icon}.svg",
                "title": title,
                "subtitle": url,
                "timestamp": lt,
                "dimension2": None,
            }
        else:  # goal
            n_goals += 1
            gid = goal_ids[j]
            gname = _GOALS[gid]
            rb = h2[48 + j]
            revs = _REVENUES[gid]
            revenue = revs[rb % len(revs)]
            if gid == 1:
                idpv: str | None = cur_idpv
                goal_page: int | None = cur_page_id
            else:
                idpv = None
                goal_page = None
            subtitle = ctx.goal_subtitles[(gid, revenue)]
            e = {"type": "goal"}
            # About 1 in 4 goal entries lack goalName in the wild; consumers must fill it.
            if rb >= 64:
                e["goalName"] = gname
            e.update(
                {
                    "goalId": gid,
                    "idpageview": idpv,
                    "revenue": revenue,
                    "goalPageId": goal_page,
                    "serverTimePretty": pretty,
                    "url": cur_url,
                    "referrerType": g_rtype,
                    "referrerName": g_rname,
                    "referrerKeyword": g_rkw,
                    "icon": _GOAL_ICON,
                    "iconSVG": _GOAL_SVG,
                    "title": "Goal conversion",
                    "subtitle": subtitle,
                    "timestamp": lt,
                    "dimension2": None,
                }
            )
        entries.append(e)

    # timeSpent: until the next page view, else until the visit's last action.
    next_pv = last
    for j in range(k - 1, -1, -1):
        if kinds[j] == "action":
            spent = next_pv - stamps[j]
            entries[j]["timeSpent"] = spent
            entries[j]["timeSpentPretty"] = _pretty_duration(spent)
            next_pv = stamps[j]

    span = last - first
    duration = span + (h[46] % 3) if span else 0
    dev_fields, resolutions = _DEVICES[h[6]]
    lang_code, lang_name, geo = _LANGUAGES[h[7]]

    # Visitor identity: ~35% returning visitors from a per-site pool, with stable ids.
    returning = h[10] < 90
    if returning:
        v = int.from_bytes(h[11:14], "little") % 5000
        vh = hashlib.blake2b(
            b"visitor" + seed.to_bytes(8, "little", signed=True) + site.idsite.to_bytes(4, "little")
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

    ipb = h[24]
    if ipb < 25:
        visit_ip = f"2001:db8::{h[25]:x}{h[26]:02x}"
    else:
        net = ("192.0.2", "198.51.100", "203.0.113")[ipb % 3]
        visit_ip = f"{net}.{h[25]}"

    first_local = first + p.offset(first)
    last_local = last + p.offset(last)
    utc_iso = _dates(last // 86400)[0]
    utc_hms = _hms(last)
    converted = 1 if n_goals else 0
    return {
        "idSite": site.idsite,
        "idVisit": id_visit,
        "visitIp": visit_ip,
        "visitorId": visitor_id,
        "fingerprint": h[16:24].hex(),
        "actionDetails": entries,
        "goalConversions": n_goals,
        "siteCurrency": site.currency,
        "siteCurrencySymbol": ctx.symbol,
        "serverDate": utc_iso,
        "visitServerHour": str(last % 86400 // 3600),
        "lastActionTimestamp": last,
        "lastActionDateTime": f"{utc_iso} {utc_hms}",
        "siteName": ctx.name,
        "serverTimestamp": last,
        "firstActionTimestamp": first,
        "serverTimePretty": _hms(last_local),
        "serverDatePretty": _dates(last_local // 86400)[1],
        "serverDatePrettyFirstAction": _dates(first_local // 86400)[1],
        "serverTimePrettyFirstAction": _hms(first_local),
        "userId": user_id,
        "visitorType": "returning" if returning else "new",
        "visitorTypeIcon": "plugins/Live/images/returningVisitor.png" if returning else None,
        "visitConverted": converted,
        "visitConvertedIcon": _GOAL_SVG if converted else None,
        "visitCount": visit_count,
        "visitEcommerceStatus": "none",
        "visitEcommerceStatusIcon": None,
        "daysSinceFirstVisit": days_first,
        "secondsSinceFirstVisit": sec_first,
        "daysSinceLastEcommerceOrder": 0,
        "secondsSinceLastEcommerceOrder": None,
        "visitDuration": duration,
        "visitDurationPretty": _pretty_duration(duration),
        "searches": n_searches,
        "actions": n_actions,
        "interactions": n_interactions,
        **rtype_fields,
        "languageCode": lang_code,
        "language": lang_name,
        **dev_fields,
        "events": n_events,
        **geo,
        "visitLocalTime": _hms(first_local),
        "visitLocalHour": str(first_local % 86400 // 3600),
        "daysSinceLastVisit": days_last,
        "secondsSinceLastVisit": sec_last,
        "resolution": resolutions[h[8] % len(resolutions)],
        "plugins": "",
        "pluginsIcons": None,
        "dimension1": _PLANS[h[9]],
    }


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


@dataclass
class _DayState:
    """A day with hidden or grown visits, materialised: visible visits by (last ts, i)."""

    plan: _DayPlan
    grown: dict[int, int]  # visit index -> new last action timestamp
    ts: list[int]
    idx: list[int]
    summary: JSON | None = None


# --------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------
@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterator[bytes] | None = None
    action: Literal["send", "truncate", "disconnect"] = "send"
    visits: int = 0  # visits in a Live page: its worker cost may depend on them


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int


def _fault_reply(fault: Fault) -> _Reply:
    """What an injected fault answers instead of the API (delay and truncate excepted)."""
    if fault.kind == "status":
        return _html_reply(fault.status, "Simulated failure")
    if fault.kind == "rate_limit":
        return _html_reply(429, "Too Many Requests", [("Retry-After", str(fault.retry_after))])
    if fault.kind == "envelope":
        return _error(fault.message)
    return _Reply(status=0, action="disconnect")


def _json_reply(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status=status, body=php_json(obj))


def _error(message: str, status: int = 200) -> _Reply:
    return _json_reply({"result": "error", "message": message}, status)


def _error_page(message: str, base: str, status: int) -> _Reply:
    """Matomo's own HTML error page (what 5.0.2 answers API.getMatomoVersion with a bad token)."""
    body = _ERROR_PAGE.replace("{base}", base).replace("{message}", html.escape(message))
    return _Reply(status=status, body=body.encode(), content_type="text/html; charset=utf-8")


def _html_reply(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    body = (
        f"<html><head><title>{status} {reason}</title></head>"
        f"<body><h1>{reason}</h1></body></html>\n"
    )
    return _Reply(
        status=status,
        body=body.encode(),
        content_type="text/html; charset=iso-8859-1",
        headers=headers or [],
    )


#: What PHP writes when a request goes past its limits, inside Matomo's error page.
_PHP_LIMITS = {
    "memory": "Allowed memory size of 2147483648 bytes exhausted (tried to allocate 20480 bytes)",
    "time": "Maximum execution time of 30 seconds exceeded",
}


def _php_limit_reply(kind: str) -> _Reply:
    """HTTP 500 and Matomo's HTML error page holding PHP's fatal error."""
    message = _PHP_LIMITS.get(kind, _PHP_LIMITS["memory"])
    body = (
        '<!DOCTYPE html>\n<html>\n<head>\n\t<meta charset="utf-8">\n'
        '\t<title>Matomo &rsaquo; Error</title>\n</head>\n<body id="simple">\n'
        '<div class="box">\n\t<div class="header">\n\t\t<h1>An error occurred</h1>\n'
        f'\t</div>\n\t<div class="content"><h2>Fatal error: {message} in '
        "/var/www/html/core/DataTable.php on line 1273</h2></div>\n</div>\n</body>\n</html>\n"
    )
    return _Reply(status=500, body=body.encode(), content_type="text/html; charset=utf-8")


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except (TypeError, ValueError):
        return default


class _Load:
    """The server's load: API requests in flight, the worker pool serving them, and stats.

    A request is in flight from its arrival at the API to its answer; it then waits for one
    of ``workers`` (0: never waits) and holds it while handled. Benchmarks read the stats
    (GET /__stats) to prove a client never had more requests in flight than it is allowed,
    and to see how busy the workers were.
    """

    _COUNTERS = ("requests", "live_requests", "live_visits", "waited")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._slots = threading.Semaphore(workers) if workers > 0 else None
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared by MatomoSimulator.hold()
        self._open.set()
        self._now = {"in_flight": 0, "live_in_flight": 0, "queued": 0, "busy": 0}
        self._max: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._live_busy_s = 0.0
        self._first = self._last = 0.0  # first arrival, last answer (monotonic), 0: none
        self._live_area = 0.0  # Live requests in flight x seconds: their mean over the span
        self._live_mark = 0.0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; maxima restart from what is in flight right now."""
        with self._lock:
            self._max = dict(self._now)
            self._count = dict.fromkeys(self._COUNTERS, 0)
            self._live_busy_s = 0.0
            self._first = self._last = 0.0
            self._live_area = 0.0
            self._live_mark = time.monotonic()

    def _live(self, delta: int) -> None:
        """Moves the Live requests in flight (under the lock), keeping their time integral."""
        now = time.monotonic()
        self._live_area += self._now["live_in_flight"] * (now - self._live_mark)
        self._live_mark = now
        self._add("live_in_flight", delta)

    def _add(self, name: str, delta: int) -> None:
        """Moves a current count (under the lock) and keeps its maximum."""
        now = self._now[name] + delta
        self._now[name] = now
        if now > self._max[name]:
            self._max[name] = now

    @contextlib.contextmanager
    def serve(self, live: bool) -> Iterator[None]:
        """One request's life on the server: in flight, queued for a worker, then served."""
        with self._lock:
            if not self._first:
                self._first = time.monotonic()
            self._count["requests"] += 1
            self._count["live_requests"] += live
            self._add("in_flight", 1)
            if live:
                self._live(1)
        try:
            if self._slots is not None and not self._slots.acquire(blocking=False):
                with self._lock:
                    self._count["waited"] += 1
                    self._add("queued", 1)
                self._slots.acquire()
                with self._lock:
                    self._add("queued", -1)
            try:
                with self._lock:
                    self._add("busy", 1)
                started = time.monotonic()
                self._open.wait()
                try:
                    yield
                finally:
                    with self._lock:
                        self._add("busy", -1)
                        if live:
                            self._live_busy_s += time.monotonic() - started
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            with self._lock:
                self._last = time.monotonic()
                self._add("in_flight", -1)
                if live:
                    self._live(-1)

    def count_visits(self, visits: int) -> None:
        with self._lock:
            self._count["live_visits"] += visits

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"workers": self.workers, **self._count}
            out.update({f"max_{k}": v for k, v in self._max.items()})
            out.update({k: v for k, v in self._now.items()})
            out["live_busy_s"] = round(self._live_busy_s, 6)
            span = max(0.0, self._last - self._first)
            out["span_s"] = round(span, 6)
            out["mean_live_in_flight"] = round(self._live_area / span, 3) if span else 0.0
        if reset:
            self.reset()
        return out


class MatomoSimulator:
    """A Matomo 5.0.2 index.php on a background thread; see the module docstring."""

    def __init__(self, config: SimConfig) -> None:
        self.config = copy.deepcopy(config)
        self._lock = threading.Lock()
        self._sites: dict[int, SimSite] = {s.idsite: s for s in self.config.sites}
        self._ctx: dict[int, _SiteCtx] = {i: _site_ctx(s) for i, s in self._sites.items()}
        self._plans: dict[tuple[int, date, int], _DayPlan] = {}
        self._summaries: dict[tuple[int, date, int], JSON] = {}
        self._faults: list[_ActiveFault] = [
            _ActiveFault(f, f.times) for f in self.config.faults if f.times != 0
        ]
        self.requests: list[dict[str, Any]] = []
        # Late (hidden) visit counts not yet released, grown visits, and the materialised
        # order of such days; _version bumps on every change so stale builds are not cached.
        self._late: dict[tuple[int, date], int] = {
            (s.idsite, date.fromisoformat(d)): c
            for s in self.config.sites
            for d, c in s.late.items()
            if c > 0
        }
        self._grown: dict[tuple[int, date], dict[int, int]] = {}
        self._states: dict[tuple[int, date], _DayState] = {}
        self._version = 0
        self._live_requests = 0  # seeds the tie shuffles of unstable_ties
        self._load = _Load(self.config.workers)
        self._server: _Server | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._scheme = "http"
        #: TLS handshakes that failed, one reason each (e.g. "TLSV1_ALERT_UNKNOWN_CA"): a
        #: client refusing the certificate never reaches `requests`.
        self.tls_refusals: list[str] = []

    # ---- lifecycle ---------------------------------------------------------------------
    def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None
    ) -> MatomoSimulator:
        """Serve on a daemon thread; port 0 picks a free port (see ``url``). `tls`: the
        (certificate, key) PEM files to serve HTTPS with."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = _Server((host, port), self, tls_context(*tls) if tls else None)
        self._scheme = "https" if tls else "http"
        self._address = (str(self._server.server_address[0]), int(self._server.server_address[1]))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="matomo-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections so clients see a dead server."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MatomoSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (still known after stop(), so tests can hit a dead server)."""
        if self._address is None:
            raise RuntimeError("simulator not started")
        return self._address[1]

    @property
    def url(self) -> str:
        if self._address is None:
            raise RuntimeError("simulator not started")
        host = self._address[0]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"{self._scheme}://{host}:{self.port}/index.php"

    # ---- runtime control ---------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            if fault.times != 0:
                self._faults.append(_ActiveFault(fault, fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Load seen by the API since the start or the last reset (also GET /__stats, with
        ?reset=1 to reset): counts of requests (all methods), Live requests and visits, and
        of requests that waited for a worker; ``max_in_flight`` / ``max_live_in_flight``
        (arrived, not yet answered), ``max_queued`` (waiting for a worker), ``max_busy``
        (workers busy); the same names without max_ are the current values; ``live_busy_s``
        is the worker time Live requests took (latency and page costs included), ``span_s``
        the time from the first request's arrival to the last answer."""
        return self._load.stats(reset)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Requests that got a worker wait inside it until the block ends: tests make
        queueing observable by counts instead of timing."""
        self._load._open.clear()
        try:
            yield
        finally:
            self._load._open.set()

    def set_visits(self, idsite: int, day: date | str, n: int) -> None:
        """Change a day's visit count; its visits are regenerated for the new n (grown
        visits of that day are forgotten; a late count still hides min(late, n) visits)."""
        _check_count(n)
        d = day if isinstance(day, date) else date.fromisoformat(day)
        with self._lock:
            self._sites[idsite].visits[d.isoformat()] = n
            self._plans = {key: p for key, p in self._plans.items() if key[:2] != (idsite, d)}
            self._grown.pop((idsite, d), None)
            self._states.pop((idsite, d), None)
            self._version += 1

    def release_late(self, idsite: int | None = None, day: date | str | None = None) -> None:
        """Make the hidden late visits of matching days (None: any) visible, in their place."""
        d = None if day is None else _as_date(day)
        with self._lock:
            for key in [k for k in self._late if idsite in (None, k[0]) and d in (None, k[1])]:
                del self._late[key]
                self._states.pop(key, None)
            self._version += 1

    def hidden_visit_ids(self, idsite: int, day: date | str) -> set[int]:
        """idVisit of the day's visits still hidden as late."""
        d = _as_date(day)
        p = self._plan(idsite, d)
        with self._lock:
            late = self._late.get((idsite, d), 0)
        return {p.id_base | i for i in _hidden_indices(p.n, late)}

    def grow_visits(self, idsite: int, day: date | str, count: int) -> list[int]:
        """Give ``count`` visible, not yet grown visits of the day (spread evenly over it) one
        more page view 1-8 minutes after their last action, still inside the site-local day;
        visits whose new action would not fit are skipped. Returns their idVisit; their place
        in the order and minTimestamp filtering follow the new last action time."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        d = _as_date(day)
        p = self._plan(idsite, d)
        key = (idsite, d)
        with self._lock:
            hidden = _hidden_indices(p.n, self._late.get(key, 0))
            grown = self._grown.get(key, {})
            candidates: list[tuple[int, int]] = []  # (index, new last action time)
            for i in range(p.n):
                if i not in hidden and i not in grown:
                    t = p.last_ts(i) + _grow_delay(p, i)
                    if t < p.end:
                        candidates.append((i, t))
            if count > len(candidates):
                raise ValueError(
                    f"only {len(candidates)} visits of site {idsite} on {d} can still grow, "
                    f"asked for {count}"
                )
            m = len(candidates)
            picks = [candidates[((2 * j + 1) * m) // (2 * count)] for j in range(count)]
            if picks:
                self._grown[key] = {**grown, **dict(picks)}
                self._states.pop(key, None)
                self._version += 1
        return [p.id_base | i for i, _ in picks]

    # ---- visit access ------------------------------------------------------------------
    def visit_count(self, idsite: int, day: date | str) -> int:
        """Visits of the day Live serves now (hidden late visits excluded)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        state = self._day_state(idsite, d, p)
        return p.n if state is None else len(state.idx)

    def visit(self, idsite: int, day: date | str, i: int) -> JSON:
        """Visit i (0-based index; ascending last action time unless grown) of a day, as
        currently served (grown visits with their extra page view; hidden ones included)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        if not 0 <= i < p.n:
            raise IndexError(i)
        state = self._day_state(idsite, d, p)
        grown = None if state is None else state.grown
        visit: JSON = orjson.loads(php_json(_render(p, (i,), self.config.seed, grown)[0]))
        return visit

    def expected_visits(self, idsite: int, day: date | str) -> list[JSON]:
        """All visible visits of the day in ascending order, exactly as Live serves them
        (ties in their stable order)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        seed = self.config.seed
        state = self._day_state(idsite, d, p)
        if state is not None:
            rendered = _render(p, state.idx, seed, state.grown)
            return list(orjson.loads(php_json(rendered)))
        # Through JSON, so callers get plain str/int exactly as a client decodes them.
        visits: list[JSON] = orjson.loads(php_json([_make_visit(p, i, seed) for i in range(p.n)]))
        return visits

    def _day_state(self, idsite: int, day: date, plan: _DayPlan) -> _DayState | None:
        """The materialised order of a day with hidden or grown visits; None for the others
        (two dict lookups: the fast path pays nothing more)."""
        key = (idsite, day)
        if key not in self._late and key not in self._grown:
            return None
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.plan is plan:
                return state
            version = self._version
            late = self._late.get(key, 0)
            grown = dict(self._grown.get(key, {}))
        hidden = _hidden_indices(plan.n, late)
        if not hidden and not grown:
            return None
        pairs = sorted(
            (grown[i] if i in grown else plan.last_ts(i), i)
            for i in range(plan.n)
            if i not in hidden
        )
        state = _DayState(plan, grown, [t for t, _ in pairs], [i for _, i in pairs])
        with self._lock:
            if self._version == version:
                self._states[key] = state
        return state

    def _plan(self, idsite: int, day: date) -> _DayPlan:
        site = self._sites[idsite]
        days = (day - _EPOCH_2000).days
        n = site.count_for(day) if 0 <= days < _MAX_DAYS else 0
        key = (idsite, day, n)
        plan = self._plans.get(key)
        if plan is None:
            plan = _make_plan(self._ctx[idsite], day, n, self.config.seed)
            with self._lock:
                if len(self._plans) > 4096:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    # ---- HTTP-independent request processing -------------------------------------------
    def _take_fault(self, params: dict[str, str]) -> Fault | None:
        method = params.get("method")
        idsite: int | None
        try:
            idsite = int(params["idSite"])
        except (KeyError, ValueError):
            idsite = None
        day = params.get("date")
        offset = _int_param(params, "filter_offset", 0)
        with self._lock:
            for af in self._faults:
                if af.remaining != 0 and af.fault.matches(method, idsite, day, offset):
                    if af.remaining > 0:
                        af.remaining -= 1
                    return af.fault
        return None

    def _handle(
        self,
        params: dict[str, str],
        token_in_query: bool,
        authorization: str | None,
        host: str | None = None,
    ) -> _Reply:
        """`host`: the request's Host header (Matomo's HTML error page links to it)."""
        with self._load.serve(params.get("method") == "Live.getLastVisitsDetails"):
            return self._handle_served(params, token_in_query, authorization, host)

    def _handle_served(
        self,
        params: dict[str, str],
        token_in_query: bool,
        authorization: str | None,
        host: str | None = None,
    ) -> _Reply:
        cfg = self.config
        if cfg.basic_auth is not None and not _basic_ok(authorization, cfg.basic_auth):
            return _Reply(
                status=401,
                body=_HTML_401,
                content_type="text/html; charset=iso-8859-1",
                headers=[("WWW-Authenticate", 'Basic realm="Matomo"')],
            )
        fault = self._take_fault(params)
        if fault is not None:
            if fault.kind == "delay":
                time.sleep(fault.delay_s)
            elif fault.kind != "truncate":
                return _fault_reply(fault)
        reply = self._api(params, token_in_query, host)
        if fault is not None and fault.kind == "truncate":
            if reply.stream is not None:
                reply.body = b"".join(reply.stream)
                reply.stream = None
            reply.action = "truncate"
        return reply

    def _api(self, params: dict[str, str], token_in_query: bool, host: str | None = None) -> _Reply:
        cfg = self.config
        if params.get("module", "").lower() != "api" or params.get("format", "").lower() != "json":
            return _error(MSG_ONLY_API_JSON)
        token = params.get("token_auth")
        if not token or token != cfg.token or (cfg.post_only_token and token_in_query):
            return self._token_refused(params, bool(token), host)
        method = params.get("method")
        if not method:
            return _error(MSG_MISSING_PARAM.format("method"))
        if "." not in method:
            return _error(MSG_BAD_METHOD_NAME)
        module, _, name = method.partition(".")
        handler = self._methods().get(method)
        if handler is None:
            return _error(MSG_UNKNOWN_METHOD.format(name, module))
        return handler(params)

    @property
    def _matomo_4(self) -> bool:
        return self.config.matomo_version.startswith("4.")

    def _token_refused(self, params: dict[str, str], given: bool, host: str | None) -> _Reply:
        """A missing or unknown token, as each version answers it (see the module docstring;
        the captured answers are in tests/fixtures/matomo-*/*_token*)."""
        idsite = params.get("idSite")
        if self._matomo_4:  # the anonymous user: no view access anywhere, and HTTP 200
            return _error(MSG_NO_VIEW.format(idsite) if idsite else MSG_NO_VIEW_ANY)
        if not given:
            return _error(MSG_NO_VIEW.format(idsite or 1), 401)
        if params.get("method") == "API.getMatomoVersion":
            base = f"{self._scheme}://{host or '127.0.0.1'}"
            return _error_page(MSG_BAD_TOKEN_PAGE, base, 401)
        return _error(MSG_BAD_TOKEN, 401)

    def _methods(self) -> dict[str, Callable[[dict[str, str]], _Reply]]:
        return {
            "API.getMatomoVersion": lambda _p: _json_reply({"value": self.config.matomo_version}),
            "SitesManager.getSiteFromId": self._get_site,
            "SitesManager.getSitesIdWithAtLeastViewAccess": lambda _p: _json_reply(
                sorted(i for i in self._sites if i not in self.config.denied_sites)
            ),
            "SitesManager.getSitesWithAtLeastViewAccess": self._sites_with_view_access,
            "API.getBulkRequest": self._bulk,
            "CustomDimensions.getConfiguredCustomDimensions": self._custom_dimensions,
            "Goals.getGoals": self._goals,
            "VisitsSummary.get": self._visits_summary,
            "Live.getLastVisitsDetails": self._live,
        }

    def _site_param(
        self, params: dict[str, str], unknown_is_empty: bool = False
    ) -> tuple[SimSite | None, _Reply | None]:
        """Resolve idSite like Matomo: missing, denied (401) or unknown (envelope or [])."""
        raw = params.get("idSite")
        if raw is None or raw == "":
            return None, _error(MSG_MISSING_PARAM.format("idSite"))
        try:
            idsite = int(raw)
        except ValueError:
            return None, _error(MSG_UNKNOWN_SITE.format(raw))
        if idsite in self.config.denied_sites:  # 4.15.1 says it with HTTP 200
            return None, _error(MSG_NO_VIEW.format(idsite), 200 if self._matomo_4 else 401)
        site = self._sites.get(idsite)
        if site is None:
            if unknown_is_empty:
                return None, _json_reply([])
            return None, _error(MSG_UNKNOWN_SITE.format(raw))
        return site, None

    def _get_site(self, params: dict[str, str]) -> _Reply:
        site, err = self._site_param(params)
        if site is None:
            assert err is not None
            return err
        return _json_reply(self._site_dict(site))

    def _sites_with_view_access(self, _params: dict[str, str]) -> _Reply:
        """SitesManager.getSitesWithAtLeastViewAccess: every site the token can view, each as
        getSiteFromId gives it."""
        return _json_reply(
            [self._site_dict(s) for i, s in sorted(self._sites.items())
             if i not in self.config.denied_sites]
        )  # fmt: skip

    def _bulk(self, params: dict[str, str]) -> _Reply:
        """API.getBulkRequest: `urls[0]`, `urls[1]`... each a url-encoded query string of one
        API call, answered as one JSON list in the same order, errors inline. A fault set on
        a sub-request's method hits it there: an error envelope inline, any other kind the
        whole request (a server failing mid-request fails all of it)."""
        answers: list[Any] = []
        truncate = False
        index = 0
        while f"urls[{index}]" in params:
            sub = dict(parse_qsl(params[f"urls[{index}]"], keep_blank_values=True))
            sub.update(module="API", format="json", token_auth=params.get("token_auth", ""))
            index += 1
            method = sub.get("method", "")
            fault = self._take_fault(sub)
            if fault is not None:
                if fault.kind == "envelope":
                    answers.append({"result": "error", "message": fault.message})
                    continue
                if fault.kind == "delay":
                    time.sleep(fault.delay_s)
                elif fault.kind == "truncate":
                    truncate = True
                else:
                    return _fault_reply(fault)
            handler = self._methods().get(method) if method != "API.getBulkRequest" else None
            if handler is None:
                module, _, name = method.partition(".")
                answers.append({"result": "error",
                                "message": MSG_UNKNOWN_METHOD.format(name, module)})  # fmt: skip
                continue
            reply = handler(sub)
            body = reply.body if reply.stream is None else b"".join(reply.stream)
            answers.append(orjson.loads(body))
        reply = _json_reply(answers)
        if truncate:
            reply.body = reply.body[: len(reply.body) // 2]
        return reply

    def _site_dict(self, site: SimSite) -> JSON:
        currency_name = _CURRENCIES.get(site.currency, (site.currency, site.currency))[1]
        created = site.ts_created
        if created is None:
            created = f"{min(site.visits)} 00:00:00" if site.visits else "2024-01-01 00:00:00"
        return {
            "idsite": site.idsite,
            "name": site.name,
            "main_url": site.base_url(),
            "ts_created": created,
            "ecommerce": 0,
            "sitesearch": 1,
            "sitesearch_keyword_parameters": "",
            "sitesearch_category_parameters": "",
            "timezone": site.timezone,
            "currency": site.currency,
            "exclude_unknown_urls": 0,
            "excluded_ips": "",
            "excluded_parameters": "",
            "excluded_user_agents": "",
            "excluded_referrers": "",
            "group": "",
            "type": "website",
            "keep_url_fragment": 0,
            "creator_login": "anonymous",
            "timezone_name": _TZ_NAMES.get(site.timezone, site.timezone),
            "currency_name": currency_name,
        }

    def _custom_dimensions(self, params: dict[str, str]) -> _Reply:
        site, err = self._site_param(params, unknown_is_empty=True)
        if site is None:
            assert err is not None
            return err
        sid = str(site.idsite)
        dims = [("2", "Page Type", "action"), ("1", "Plan", "visit")]
        return _json_reply(
            [
                {
                    "idcustomdimension": dim_id,
                    "idsite": sid,
                    "name": name,
                    "index": "1",
                    "scope": scope,
                    "active": True,
                    "extractions": [],
                    "case_sensitive": True,
                }
                for dim_id, name, scope in dims
            ]
        )

    def _goals(self, params: dict[str, str]) -> _Reply:
        site, err = self._site_param(params, unknown_is_empty=True)
        if site is None:
            assert err is not None
            return err
        sid = site.idsite
        return _json_reply(
            [
                {
                    "idsite": sid,
                    "idgoal": 1,
                    "name": _GOALS[1],
                    "description": "URL contains thank-you",
                    "match_attribute": "url",
                    "pattern": "thank-you",
                    "pattern_type": "contains",
                    "case_sensitive": 0,
                    "allow_multiple": 0,
                    "revenue": 10,
                    "deleted": 0,
                    "event_value_as_revenue": 0,
                },
                {
                    "idsite": sid,
                    "idgoal": 2,
                    "name": _GOALS[2],
                    "description": "triggered manually with idgoal",
                    "match_attribute": "manually",
                    "allow_multiple": 1,
                    "revenue": 0,
                    "deleted": 0,
                    "event_value_as_revenue": 0,
                },
            ]
        )

    def _day_param(self, site: SimSite, params: dict[str, str], method: str) -> date | _Reply:
        period = params.get("period", "")
        if period != "day":
            return _error(MSG_ONLY_DAY.format(method, period))
        raw = params.get("date", "")
        if raw in ("today", "yesterday"):
            today = datetime.now(_tzinfo(site.timezone)).date()
            return today if raw == "today" else today - timedelta(days=1)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return _error(MSG_BAD_DATE)
        try:
            return date.fromisoformat(raw)
        except ValueError:
            return _error(MSG_BAD_DATE)

    def _visits_summary(self, params: dict[str, str]) -> _Reply:
        site, err = self._site_param(params)
        if site is None:
            assert err is not None
            return err
        day = self._day_param(site, params, "VisitsSummary.get")
        if isinstance(day, _Reply):
            return day
        plan = self._plan(site.idsite, day)
        state = self._day_state(site.idsite, day, plan)
        n = plan.n if state is None else len(state.idx)
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
            if state.summary is None:  # a benign race: both threads compute the same dict
                state.summary = _aggregate(plan, state.idx, state.grown, self.config.seed)
            return _json_reply(state.summary)
        return _json_reply(self._summary(site.idsite, day, n))

    def _summary(self, idsite: int, day: date, n: int) -> JSON:
        """Aggregates of a day without hidden or grown visits, cached."""
        key = (idsite, day, n)
        cached = self._summaries.get(key)
        if cached is not None:
            return cached
        summary = _aggregate(self._plan(idsite, day), range(n), None, self.config.seed)
        with self._lock:
            if len(self._summaries) > 4096:
                self._summaries.clear()
            self._summaries[key] = summary
        return summary

    def _live(self, params: dict[str, str]) -> _Reply:
        if self.config.latency_s > 0:
            time.sleep(self.config.latency_s)
        reply = self._live_page(params)
        if 0 < self.config.page_limit_visits < reply.visits:
            return _php_limit_reply(self.config.page_limit_kind)
        self._load.count_visits(reply.visits)
        cost = self.config.live_cost_s(reply.visits)
        if cost > 0:
            time.sleep(cost)  # inside the request's worker (see _Load)
        return reply

    def _live_page(self, params: dict[str, str]) -> _Reply:
        site, err = self._site_param(params)
        if site is None:
            assert err is not None
            return err
        if site.live_disabled:
            return _error(MSG_LIVE_DISABLED)
        day = self._day_param(site, params, "Live.getLastVisitsDetails")
        if isinstance(day, _Reply):
            return day
        plan = self._plan(site.idsite, day)
        limit = _int_param(params, "filter_limit", 100)
        offset = max(0, _int_param(params, "filter_offset", 0))
        asc = params.get("filter_sort_order", "desc").lower() == "asc"
        rng = self._tie_rng() if self.config.unstable_ties else None
        state = self._day_state(site.idsite, day, plan)
        if state is not None:
            return self._live_materialised(state, params, limit, offset, asc, rng)
        lo = 0
        raw_min = params.get("minTimestamp")
        if raw_min and plan.n:
            try:
                lo = plan.first_index_after(int(raw_min))
            except ValueError:
                lo = 0
        total = plan.n - lo
        stop = total if limit < 0 else min(total, offset + limit)
        if offset >= stop:
            return _Reply(status=200, body=b"[]")
        indices: Sequence[int]
        if asc:
            indices = range(lo + offset, lo + stop)
        else:
            indices = range(plan.n - 1 - offset, plan.n - 1 - stop, -1)
        if rng is not None and (plan.width == 0 or plan.tie_group > 1):  # else no equal seconds
            a, b = (lo + offset, lo + stop) if asc else (plan.n - stop, plan.n - offset)
            indices = _shuffle_ties(plan.last_ts, plan.first_index_after, a, b, asc, rng)
        return _page_reply(plan, indices, self.config.seed, None)

    def _live_materialised(
        self,
        state: _DayState,
        params: dict[str, str],
        limit: int,
        offset: int,
        asc: bool,
        rng: random.Random | None,
    ) -> _Reply:
        """Live for a day with hidden or grown visits: the same paging over state's order."""
        ts, idx = state.ts, state.idx
        n = len(ts)
        lo = 0
        raw_min = params.get("minTimestamp")
        if raw_min and n:
            try:
                lo = bisect_right(ts, int(raw_min))
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
        return _page_reply(state.plan, [idx[q] for q in positions], self.config.seed, state.grown)

    def _tie_rng(self) -> random.Random:
        """A fresh shuffle source per Live request: deterministic for a request sequence."""
        with self._lock:
            self._live_requests += 1
            k = self._live_requests
        seed = self.config.seed.to_bytes(8, "little", signed=True)
        return random.Random(b"ties" + seed + k.to_bytes(8, "little"))

    def _tls_refused(self, reason: str) -> None:
        with self._lock:
            self.tls_refusals.append(reason)

    def _log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if len(self.requests) > REQUEST_LOG_LIMIT:
                del self.requests[: REQUEST_LOG_LIMIT // 10]


def _page_reply(
    plan: _DayPlan, indices: Sequence[int], seed: int, grown: dict[int, int] | None
) -> _Reply:
    if len(indices) <= _STREAM_THRESHOLD:
        reply = _json_reply(_render(plan, indices, seed, grown))
    else:
        reply = _Reply(status=200, stream=_live_chunks(plan, indices, seed, grown))
    reply.visits = len(indices)
    return reply


def _live_chunks(
    plan: _DayPlan, indices: Sequence[int], seed: int, grown: dict[int, int] | None = None
) -> Iterator[bytes]:
    """A huge page as JSON pieces so memory stays bounded by one batch."""
    yield b"["
    for b0 in range(0, len(indices), _STREAM_BATCH):
        batch = _render(plan, indices[b0 : b0 + _STREAM_BATCH], seed, grown)
        body = php_json(batch)[1:-1]
        yield body if b0 == 0 else b"," + body
    yield b"]"


def _basic_ok(header: str | None, creds: tuple[str, str]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, _, pwd = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, pwd) == creds


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------
def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) serving this certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True
    tls_handshake_timeout = 30.0

    def __init__(
        self, address: tuple[str, int], sim: MatomoSimulator, tls: ssl.SSLContext | None = None
    ) -> None:
        self.sim = sim
        self.tls = tls
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake happens here, on the connection's own thread (a slow or
        refusing client never holds up the accept loop)."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.tls_handshake_timeout)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.sim._tls_refused(getattr(exc, "reason", None) or type(exc).__name__)
            return  # the raw socket is closed by shutdown_request
        try:
            super().finish_request(wrapped, client_address)
        finally:
            self.shutdown_request(wrapped)  # wrap_socket detached the raw socket

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: clients dropping connections mid-answer are expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so client connection pools get reused
    server_version = "Apache"
    sys_version = ""
    timeout = 300
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the CLI and tests own the output."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, verb: str) -> None:
        sim = self.server.sim
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body = self._read_body()
        form: dict[str, str] = {}
        ctype = self.headers.get("Content-Type", "application/x-www-form-urlencoded").lower()
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params = {**query, **form}
        in_query, in_body = "token_auth" in query, "token_auth" in form
        entry: dict[str, Any] = {
            "time": time.time(),
            "verb": verb,
            "path": split.path,
            "method": params.get("method"),
            "params": {k: v for k, v in params.items() if k != "token_auth"},
            "token_in": "both" if in_query and in_body else
                        "query" if in_query else "body" if in_body else None,
            "client_port": self.client_address[1],
            "status": None,
        }  # fmt: skip
        if split.path == STATS_PATH:  # outside the API: not logged, counted nor queued
            reply = _json_reply(sim.stats(reset=query.get("reset") == "1"))
        else:
            sim._log(entry)
            try:
                reply = sim._handle(
                    params, in_query, self.headers.get("Authorization"), self.headers.get("Host")
                )
            except Exception as e:  # answer like Matomo's error envelope instead of hanging
                reply = _error(f"Simulator internal error: {type(e).__name__}: {e}", 500)
        if reply.action == "disconnect":
            self.close_connection = True
            self._hard_close()
            return
        entry["status"] = reply.status
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for k, v in reply.headers:
            self.send_header(k, v)
        if reply.stream is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in reply.stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.action == "truncate":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.close_connection = True
            self._hard_close()
            return
        self.end_headers()
        self.wfile.write(reply.body)

    def _hard_close(self) -> None:
        """Drop the TCP connection now, without any (further) response bytes."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


def run_simulator(
    config: SimConfig, host: str = "127.0.0.1", port: int = 8080, tls: tuple[str, str] | None = None
) -> None:
    """Serve in the foreground until KeyboardInterrupt (used by the CLI); `tls`: (certificate,
    key) PEM files to serve HTTPS with."""
    sim = MatomoSimulator(config)
    sim._scheme = "https" if tls else "http"
    server = _Server((host, port), sim, tls_context(*tls) if tls else None)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        return
    finally:
        server.server_close()
        server.close_connections()
