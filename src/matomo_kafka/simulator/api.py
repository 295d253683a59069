"""Matomo 5.0.2 (or 4.15.1) HTTP API simulator.

Tests and benchmarks need a Matomo that speaks the real HTTP API (same JSON shapes, types,
error messages and status codes as the captured Matomo 5.0.2 samples) without a PHP/MariaDB
stack. Visits are generated lazily and deterministically: visit i of a (site, day) is a pure
function of (seed, idsite, day, i, n), so a page of a 1,000,000-visit day costs only that
page and two simulators with the same config serve the same bytes. Faults (5xx, 429,
delays, truncated bodies, bodies whose Content-Encoding is a lie, dropped connections, error
envelopes) exercise client retries.

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

A moving clock, off by default: ``SimConfig.now`` / ``MatomoSimulator.set_now`` make Live and
VisitsSummary serve only the visits whose last action is at or before the clock, today's
included, so visits appear as time passes (a grown visit keeps its old last action until the
clock reaches its new one); ``date=today`` is the clock's day in the site's timezone. Real
Matomo also shows a visit in progress with the actions it has so far: a visit is shown here
only once complete, which is what a reader that waits for visits to end relies on anyway.

Sites can be created while it serves (``MatomoSimulator.add_site``), as in a real Matomo whose
administrators add websites: listed by SitesManager from the next request on.

PrivacyManager (``privacy.py``): ``deleteDataSubjects`` erases visits, ``anonymizeSomeRawData``
masks IPs, removes locations and replaces user ids (at once, where Matomo schedules it), and
the purge of old raw data (``setDeleteLogsSettings`` + ``executeDataPurge``, or
``MatomoSimulator.purge_raw_data_older_than``) empties old days while VisitsSummary keeps their
counts; ``delete_visits`` and ``anonymize_raw_data`` do the same from Python.

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
import html
import random
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson

from matomo_kafka.simulator.config import (
    _EPOCH_2000,
    _ERROR_PAGE,
    _HTML_401,
    _MAX_DAYS,
    _STREAM_BATCH,
    _STREAM_THRESHOLD,
    _SUMMARY_SAMPLE,
    JSON,
    MSG_BAD_DATE,
    MSG_BAD_METHOD_NAME,
    MSG_BAD_TOKEN,
    MSG_BAD_TOKEN_PAGE,
    MSG_LIVE_DISABLED,
    MSG_MISSING_PARAM,
    MSG_NO_VIEW,
    MSG_NO_VIEW_ANY,
    MSG_ONLY_API_JSON,
    MSG_ONLY_DAY,
    MSG_UNKNOWN_METHOD,
    MSG_UNKNOWN_SITE,
    REQUEST_LOG_LIMIT,
    Fault,
    SimConfig,
    SimSite,
    _as_date,
    _check_count,
    _check_now,
)
from matomo_kafka.simulator.privacy import (
    Anonymisation,
    PrivacyManager,
    render_visits,
    split_purged,
)
from matomo_kafka.simulator.server import _error, _json_reply, _Reply, _Server, tls_context
from matomo_kafka.simulator.visits.catalogue import _CURRENCIES, _GOALS, _TZ_NAMES
from matomo_kafka.simulator.visits.grown import _grow_delay, _render
from matomo_kafka.simulator.visits.hazards import _hidden_indices, _shuffle_ties
from matomo_kafka.simulator.visits.php_json import php_json
from matomo_kafka.simulator.visits.plan import _DayPlan, _make_plan, _site_ctx, _SiteCtx
from matomo_kafka.simulator.visits.visit import _make_visit
from matomo_kafka.source.days import site_timezone


@dataclass
class _DayState:
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
        self._now = self.config.now  # the clock (None: none), see set_now
        self._live_requests = 0  # seeds the tie shuffles of unstable_ties
        self._load = _Load(self.config.workers)
        self._server: _Server | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._scheme = "http"
        #: TLS handshakes that failed, one reason each (e.g. "TLSV1_ALERT_UNKNOWN_CA"): a
        #: client refusing the certificate never reaches `requests`.
        self.tls_refusals: list[str] = []
        #: Erased, anonymised and purged visits, and the PrivacyManager API (privacy.py).
        self.privacy = PrivacyManager(self)

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

    def add_site(self, site: SimSite) -> None:
        """Creates a site while the simulator serves, as a Matomo administrator would: from
        the next request on, SitesManager lists it and every method serves it (``follow`` with
        MATOMO_ID_SITE=all must pick it up). Its id must be new (ValueError otherwise)."""
        site.validate()
        site = copy.deepcopy(site)
        ctx = _site_ctx(site)
        with self._lock:
            if site.idsite in self._sites:
                raise ValueError(f"site {site.idsite} already exists")
            # New dicts, not changes in place: requests in flight iterate the old ones. The
            # context first, so a request that finds the site finds its context too.
            self._ctx = {**self._ctx, site.idsite: ctx}
            self._sites = {**self._sites, site.idsite: site}
            self.config.sites.append(site)
            for day, count in site.late.items():
                if count > 0:
                    self._late[(site.idsite, date.fromisoformat(day))] = count
            self._version += 1

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

    # ---- PrivacyManager (see privacy.py) ----------------------------------------------------
    def delete_visits(self, visits: list[tuple[int, int]]) -> dict[str, int]:
        """Erases visits given as (idsite, idVisit), as PrivacyManager.deleteDataSubjects."""
        return self.privacy.delete_visits(visits)

    def anonymize_raw_data(
        self,
        idsites: list[int] | None,
        start: date | str,
        end: date | str | None = None,
        ip: bool = False,
        location: bool = False,
        user_id: bool = False,
    ) -> int:
        """Anonymises at once, as PrivacyManager.anonymizeSomeRawData once Matomo's task ran."""
        first = _as_date(start)
        return self.privacy.anonymize_raw_data(
            idsites, first, first if end is None else _as_date(end), ip, location, user_id
        )

    def purge_raw_data_older_than(self, days: int) -> int:
        """Deletes the raw data of days older than `days`, as Matomo's "delete old raw data"."""
        return self.privacy.purge_raw_data_older_than(days)

    # ---- the clock -----------------------------------------------------------------------
    @property
    def now(self) -> float | None:
        """The simulator's clock (Unix seconds), or None when it has none."""
        return self._now

    def set_now(self, now: float | datetime | None) -> None:
        """Moves the clock (None: no clock, every visit served). Visits whose last action is
        after it are not served yet; the clock may go back as well as forward."""
        value = now.timestamp() if isinstance(now, datetime) else now
        _check_now(value)
        with self._lock:
            self._now = value
            self._states.clear()  # grown visits show their new action from its time on
            self._version += 1

    def http_time(self) -> float:
        """The time of the `Date` header: the clock (the system's without one) plus
        `date_skew_s`, Matomo's own clock being off."""
        now = self._now
        return (time.time() if now is None else now) + self.config.date_skew_s

    def advance(self, seconds: float) -> float:
        """Moves the clock forward by `seconds`; returns the new time."""
        if self._now is None:
            raise RuntimeError("the simulator has no clock: set_now first")
        self.set_now(self._now + seconds)
        assert self._now is not None
        return self._now

    def _visible(self, plan: _DayPlan) -> int:
        """How many of the day's visits (lazy order) have their last action by the clock."""
        now = self._now
        if now is None or plan.n == 0 or now >= plan.end:
            return plan.n
        return plan.first_index_after(int(now // 1))

    def _visible_in(self, state: _DayState) -> int:
        """How many visits of a materialised day have their last action by the clock."""
        now = self._now
        return len(state.ts) if now is None else bisect_right(state.ts, int(now // 1))

    # ---- visit access ------------------------------------------------------------------
    def visit_count(self, idsite: int, day: date | str) -> int:
        """Visits of the day Live serves now (hidden late visits, and with a clock the visits
        not ended by it, excluded)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        state = self._day_state(idsite, d, p)
        return self._visible(p) if state is None else self._visible_in(state)

    def visit(self, idsite: int, day: date | str, i: int) -> JSON:
        """Visit i (0-based index; ascending last action time unless grown) of a day, as
        currently served (grown visits with their extra page view; hidden ones included)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        if not 0 <= i < p.n:
            raise IndexError(i)
        state = self._day_state(idsite, d, p)
        grown = None if state is None else state.grown
        anonymised = None if state is None else state.anonymised
        rendered = render_visits(p, (i,), self.config.seed, grown, anonymised)[0]
        visit: JSON = orjson.loads(php_json(rendered))
        return visit

    def expected_visits(self, idsite: int, day: date | str) -> list[JSON]:
        """All visible visits of the day in ascending order, exactly as Live serves them
        (ties in their stable order; with a clock, those ended by it)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        seed = self.config.seed
        state = self._day_state(idsite, d, p)
        if state is not None:
            rendered = render_visits(
                p, state.idx[: self._visible_in(state)], seed, state.grown, state.anonymised
            )
            return list(orjson.loads(php_json(rendered)))
        # Through JSON, so callers get plain str/int exactly as a client decodes them.
        shown = range(self._visible(p))
        visits: list[JSON] = orjson.loads(php_json([_make_visit(p, i, seed) for i in shown]))
        return visits

    def _day_state(self, idsite: int, day: date, plan: _DayPlan) -> _DayState | None:
        """The materialised order of a day with hidden or grown visits; None for the others
        (two dict lookups: the fast path pays nothing more)."""
        key = (idsite, day)
        privacy = self.privacy
        if key not in self._late and key not in self._grown and not privacy.touches(key, plan):
            return None
        with self._lock:
            state = self._states.get(key)
            if state is not None and state.plan is plan:
                return state
            version = self._version
            late = self._late.get(key, 0)
            grown = dict(self._grown.get(key, {}))
            now = self._now
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
            (grown[i] if i in grown else plan.last_ts(i), i)
            for i in range(plan.n)
            if i not in hidden
        )
        shown, archived = split_purged(pairs, cut)
        state = _DayState(
            plan,
            grown,
            [t for t, _ in shown],
            [i for _, i in shown],
            anonymised=anonymised,
            archived=None if cut is None else archived,
        )
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

    def handle(
        self,
        params: dict[str, str],
        token_in_query: bool,
        authorization: str | None,
        host: str | None = None,
    ) -> _Reply:
        """`host`: the request's Host header (Matomo's HTML error page links to it)."""
        with self._load.serve(params.get("method") == "Live.getLastVisitsDetails"):
            return self._answer(params, token_in_query, authorization, host)

    def _answer(
        self, params: dict[str, str], in_query: bool, auth: str | None, host: str | None
    ) -> _Reply:
        token_in_query, authorization = in_query, auth
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
            elif fault.kind not in ("truncate", "corrupt_encoding"):
                return _fault_reply(fault)
        reply = self._api(params, token_in_query, host)
        if fault is not None and fault.kind in ("truncate", "corrupt_encoding"):
            if reply.stream is not None:
                reply.body = b"".join(reply.stream)
                reply.stream = None
            if fault.kind == "truncate":
                reply.action = "truncate"
            else:
                reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
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
            **self.privacy.methods(),
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
        truncate = corrupt = False
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
                elif fault.kind == "corrupt_encoding":
                    corrupt = True
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
        if corrupt:
            reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
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
            tz = site_timezone(site.timezone)
            now = self._now
            today = (datetime.now(tz) if now is None else datetime.fromtimestamp(now, tz)).date()
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
        n = self._visible(plan) if state is None else self._visible_in(state)
        if state is not None and state.archived:  # purged: the archived reports stay
            return _json_reply(_aggregate(plan, state.archived, state.grown, self.config.seed))
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
                return _json_reply(_aggregate(plan, state.idx[:n], state.grown, self.config.seed))
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
        n = self._visible(plan)  # with a clock, the visits ended by it: a prefix of the day
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
        n = self._visible_in(state)  # with a clock, the visits ended by it
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
        return _page_reply(state.plan, indices, self.config.seed, state.grown, state.anonymised)

    def _tie_rng(self) -> random.Random:
        """A fresh shuffle source per Live request: deterministic for a request sequence."""
        with self._lock:
            self._live_requests += 1
            k = self._live_requests
        seed = self.config.seed.to_bytes(8, "little", signed=True)
        return random.Random(b"ties" + seed + k.to_bytes(8, "little"))

    def tls_refused(self, reason: str) -> None:
        with self._lock:
            self.tls_refusals.append(reason)

    def log_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if len(self.requests) > REQUEST_LOG_LIMIT:
                del self.requests[: REQUEST_LOG_LIMIT // 10]


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


def _basic_ok(header: str | None, creds: tuple[str, str]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, _, pwd = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, pwd) == creds


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
