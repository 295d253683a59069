"""Matomo 5.0.2 (or 4.15.1) HTTP API simulator: `MatomoSimulator`, one simulated Matomo.

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

PrivacyManager (``modules/privacy_manager.py``): ``deleteDataSubjects`` erases visits,
``anonymizeSomeRawData`` masks IPs, removes locations and replaces user ids (at once, where
Matomo schedules it), and the purge of old raw data (``setDeleteLogsSettings`` +
``executeDataPurge``, or ``MatomoSimulator.purge_raw_data_older_than``) empties old days while
VisitsSummary keeps their counts; ``delete_visits`` and ``anonymize_raw_data`` do the same from
Python.

Served over plain HTTP, or over HTTPS with a certificate given to ``start(tls=(cert, key))``
(``simulate --tls-cert/--tls-key``): a corporate gateway's TLS, made testable. Handshakes that
fail (a client that does not trust the certificate) are listed in ``tls_refusals``.

Load, for benchmarks (``load.py``): ``SimConfig.workers`` gives the server a fixed number of workers
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

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from matomo_kafka.simulator import api
from matomo_kafka.simulator.config import (
    _EPOCH_2000,
    _MAX_DAYS,
    JSON,
    REQUEST_LOG_LIMIT,
    Fault,
    SimConfig,
    SimSite,
    _as_date,
    _check_count,
    _check_now,
)
from matomo_kafka.simulator.days import DayState, day_state, visible, visible_in
from matomo_kafka.simulator.load import _Load
from matomo_kafka.simulator.modules.params import int_param
from matomo_kafka.simulator.modules.privacy_manager import PrivacyManager, render_visits
from matomo_kafka.simulator.server import _Reply, _Server, tls_context
from matomo_kafka.simulator.visits.grown import _grow_delay
from matomo_kafka.simulator.visits.hazards import _hidden_indices
from matomo_kafka.simulator.visits.php_json import php_json
from matomo_kafka.simulator.visits.plan import _DayPlan, _make_plan, _site_ctx, _SiteCtx
from matomo_kafka.simulator.visits.visit import _make_visit


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int


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
        self._states: dict[tuple[int, date], DayState] = {}
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
        #: Erased, anonymised and purged visits, and the PrivacyManager API
        #: (modules/privacy_manager.py).
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

    # ---- PrivacyManager (see modules/privacy_manager.py) -------------------------------
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

    # ---- visit access ------------------------------------------------------------------
    def visit_count(self, idsite: int, day: date | str) -> int:
        """Visits of the day Live serves now (hidden late visits, and with a clock the visits
        not ended by it, excluded)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        state = day_state(self, idsite, d, p)
        return visible(self, p) if state is None else visible_in(self, state)

    def visit(self, idsite: int, day: date | str, i: int) -> JSON:
        """Visit i (0-based index; ascending last action time unless grown) of a day, as
        currently served (grown visits with their extra page view; hidden ones included)."""
        d = day if isinstance(day, date) else date.fromisoformat(day)
        p = self._plan(idsite, d)
        if not 0 <= i < p.n:
            raise IndexError(i)
        state = day_state(self, idsite, d, p)
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
        state = day_state(self, idsite, d, p)
        if state is not None:
            rendered = render_visits(
                p, state.idx[: visible_in(self, state)], seed, state.grown, state.anonymised
            )
            return list(orjson.loads(php_json(rendered)))
        # Through JSON, so callers get plain str/int exactly as a client decodes them.
        shown = range(visible(self, p))
        visits: list[JSON] = orjson.loads(php_json([_make_visit(p, i, seed) for i in shown]))
        return visits

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
        offset = int_param(params, "filter_offset", 0)
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
            return api.answer(self, params, token_in_query, authorization, host)

    @property
    def _matomo_4(self) -> bool:
        return self.config.matomo_version.startswith("4.")

    def tls_refused(self, reason: str) -> None:
        with self._lock:
            self.tls_refusals.append(reason)

    def log_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if len(self.requests) > REQUEST_LOG_LIMIT:
                del self.requests[: REQUEST_LOG_LIMIT // 10]


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
