"""What the simulator serves: its sites (SimSite), injected faults (Fault), its configuration
(SimConfig), and the messages real Matomo answers with."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import orjson

from matomo_kafka.source.days import site_timezone

MATOMO_VERSION = "5.0.2"
#: The Matomo versions whose refusals the simulator reproduces (tests/fixtures/matomo-*).
MATOMO_VERSIONS = ("5.0.2", "4.15.1")

#: corrupt_encoding: the true answer, labelled `Content-Encoding: gzip` but not compressed
#: (what a gateway or proxy glitch gives: the client cannot decode the body).
FaultKind = Literal[
    "status", "rate_limit", "delay", "truncate", "envelope", "disconnect", "corrupt_encoding"
]
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
    VisitsSummary) until ``MatomoSimulator.release_late``. ``actions_per_visit``: every visit
    has that many entries in actionDetails (single-page apps, bots: about 400 bytes of JSON
    each; Matomo shows at most 500); 0: 1 to 6, as most sites. Past 8 entries, a visit's
    pageId values run into those of the next visit's (ids stay below 2**53).
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
    actions_per_visit: int = 0

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
            actions_per_visit=int(d.get("actions_per_visit", 0)),
        )
        site.validate()
        return site

    def validate(self) -> None:
        """Fail early on values the id scheme or the timezone code cannot represent."""
        if not 1 <= self.idsite <= _MAX_SITE:
            raise ValueError(f"idsite must be in 1..{_MAX_SITE}, got {self.idsite}")
        site_timezone(self.timezone)
        _check_count(self.default_visits)
        for day, n in self.visits.items():
            date.fromisoformat(day)
            _check_count(n)
        if self.tie_group < 1:
            raise ValueError(f"tie_group must be >= 1, got {self.tie_group}")
        if not 0 <= self.actions_per_visit <= 5000:
            raise ValueError(f"actions_per_visit must be in 0..5000, got {self.actions_per_visit}")
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
    #: Which Matomo's answers to give (see MATOMO_VERSIONS and matomo.py's docstring).
    matomo_version: str = MATOMO_VERSION
    #: The simulator's clock (Unix seconds; None: no clock, every visit of every day is
    #: served). With a clock, Live and VisitsSummary serve only visits whose last action is at
    #: or before it, today's included, and `date=today` is its day in the site's timezone;
    #: MatomoSimulator.set_now moves it (tests of `follow`).
    now: float | None = None
    #: Seconds Matomo's own clock is ahead of the simulated time (negative: behind), as the
    #: `Date` header of every answer shows it (that time is the clock's, or the system's
    #: without one): tests of `follow` against a Matomo whose clock is off.
    date_skew_s: float = 0.0

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
        _check_now(self.now)
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
            now=None if d.get("now") is None else float(d["now"]),
            date_skew_s=float(d.get("date_skew_s", 0.0)),
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


def _check_now(now: float | None) -> None:
    """A clock the visit ids can represent: from 2000-01-01 on, finite."""
    if now is not None and not 946_684_800 <= now < 946_684_800 + _MAX_DAYS * 86_400:
        raise ValueError(f"now must be a Unix time from 2000-01-01 on, got {now}")


def _as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(day)
