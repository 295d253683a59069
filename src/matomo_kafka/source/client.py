"""Matomo HTTP API client: one `call()` that posts, retries and types Matomo's errors.

It knows nothing of Kafka or checkpoints. token_auth travels in the POST body only (Matomo 5
tokens may be POST-only, and URLs end up in gateway logs). Transient failures (network,
timeouts, 5xx, 429, truncated or invalid JSON) are retried with bounded exponential backoff and
jitter; refusals (bad token, unknown site, a gateway certificate that does not verify) are not,
since retrying a bad login can get the caller's IP blocked and a certificate does not heal.
What Matomo's error answers mean is read in error_answers.py.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from matomo_kafka import __version__
from matomo_kafka.errors import (
    GatewayAuthError,
    MatomoError,
    MatomoResponseError,
    MatomoTLSError,
    PageTooHeavy,
    ServerLimitError,
    TransientMatomoError,
)
from matomo_kafka.refusals import matomo_tls_refusal
from matomo_kafka.source.error_answers import (
    SERVER_LIMITS,
    TOKEN_REFUSED,
    error_from_envelope,
    matomo_error_page,
    token_refused,
)
from matomo_kafka.source.responses import Visit, as_int, parse_visits

log = logging.getLogger(__name__)

T = TypeVar("T")


class _StopOnRepeatedLimit(stop_base):
    """A page that hit a server limit twice is not tried a third time at the same size."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        failed = outcome.exception() if outcome is not None else None
        return isinstance(failed, ServerLimitError) and retry_state.attempt_number >= 2


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: attempts = max_retries + 1, waits grow from `backoff` up to `max_wait`."""

    max_retries: int = 5
    backoff: float = 1.0
    max_wait: float = 60.0


#: A site's custom dimensions and goals as Matomo answers them, or why it refused them.
SiteMetadata = tuple[list[dict[str, Any]], list[dict[str, Any]]] | MatomoError


@dataclass(frozen=True)
class SiteInfo:
    """What a run needs to know of a site before reading its visits."""

    idsite: int
    name: str
    timezone: str


class RequestGate:
    """Caps Matomo requests in flight (all sites together) and, optionally, their start rate.

    Operators allow so many concurrent raw-data queries and so many Live calls a minute
    (Matomo Cloud: 200/min); the rate cap spaces request starts evenly, which is all a
    single process needs, so no rate-limiting dependency is pulled in for it.
    """

    def __init__(self, max_in_flight: int = 2, per_minute: float | None = None) -> None:
        self._slots = threading.BoundedSemaphore(max(1, max_in_flight))
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next_start = 0.0
        self._lock = threading.Lock()
        self.max_in_flight = max(1, max_in_flight)
        self.in_flight = 0  # requests holding a slot now (follow's metrics read it)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots:
            if self._interval:
                with self._lock:
                    now = time.monotonic()
                    start = max(now, self._next_start)
                    self._next_start = start + self._interval
                if start > now:
                    time.sleep(start - now)
            with self._lock:
                self.in_flight += 1
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1


class _WaitRetryAfterOrBackoff:
    """Honours a 429's Retry-After (bounded), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        # backoff x 2^n plus up to one backoff of jitter (wait_exponential_jitter's `initial`
        # is deprecated in tenacity 9 and its replacement is not in 8.x): capped below.
        self.backoff = wait_exponential(multiplier=policy.backoff) + wait_random(0, policy.backoff)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientMatomoError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.policy.max_wait)
        return min(float(self.backoff(state)), self.policy.max_wait)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware UTC instant; None when absent or invalid."""
    if not value:
        return None
    try:
        stamp = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _site_id(params: dict[str, Any]) -> str:
    return f" for site {params['idSite']}" if "idSite" in params else ""


class MatomoClient:
    """A thin, typed client of Matomo's Reporting API over one pooled HTTP connection."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        gateway_auth: tuple[str, str] | None = None,
        ca_bundle: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        gate: RequestGate | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url
        self._token = token
        self._ca_bundle = ca_bundle
        self._gateway_auth = gateway_auth is not None  # named by a gateway's refusal
        self.retry = retry or RetryPolicy()
        self.gate = gate or RequestGate()
        self.retries_done = 0
        #: Told of every sign of a struggling server (429, 5xx, timeouts, dropped
        #: connections): the page scheduler's pace (schedule.Pace.strained).
        self.on_strain: Callable[[str], None] | None = None
        self._stats_lock = threading.Lock()
        self._closed = False
        #: Matomo's clock: the `Date` header of its latest answer, and time.monotonic() then.
        self._matomo_clock: tuple[datetime, float] | None = None
        self._http = httpx.Client(
            auth=httpx.BasicAuth(*gateway_auth) if gateway_auth else None,
            # A context, not the path: httpx deprecated verify=<path>. Only that CA is trusted.
            verify=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"User-Agent": f"matomo-kafka/{__version__}"},
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def close(self) -> None:
        # Requests still in flight on other threads (the run failed or stopped) then fail
        # quietly: no retry, no warning, no strain after the run's last line.
        self._closed = True
        self._http.close()

    def __enter__(self) -> MatomoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the one entry point -------------------------------------------------------------

    def call(self, method: str, **params: Any) -> Any:
        """POSTs `module=API&method=...`, retrying transient failures; returns the parsed JSON."""
        return self._retrying(self._call_once, method, params)

    def call_raw_list(self, method: str, split: bool = False, **params: Any) -> bytes:
        """Like call() for a method answering a JSON list, but returns the body unparsed, so
        the (CPU-bound) parse can happen later, one page at a time. `split`: a request that
        hits a server limit twice raises PageTooHeavy (a smaller one may pass) instead of
        being retried as it is."""
        return self._retrying(self._call_once_raw_list, method, params, split)

    def _retrying(self, attempt: Callable[[str, dict[str, Any]], T], method: str,
                  params: dict[str, Any], split: bool = False) -> T:  # fmt: skip
        stop = stop_after_attempt(self.retry.max_retries + 1)
        retrying = Retrying(
            stop=stop | _StopOnRepeatedLimit() if split else stop,
            wait=_WaitRetryAfterOrBackoff(self.retry),
            retry=retry_if_exception(self._worth_retrying),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt, method, params)
        except ServerLimitError as exc:
            if split:
                raise PageTooHeavy(f"Matomo {method}{_site_id(params)}: {exc}") from None
            raise MatomoError(
                f"Matomo {method}{_site_id(params)} still failing after "
                f"{self.retry.max_retries + 1} attempts: {exc}"
            ) from None
        except TransientMatomoError as exc:
            raise MatomoError(
                f"Matomo {method}{_site_id(params)} still failing after "
                f"{self.retry.max_retries + 1} attempts: {exc}"
            ) from None

    def _worth_retrying(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientMatomoError) and not self._closed

    def _log_retry(self, state: RetryCallState) -> None:
        with self._stats_lock:
            self.retries_done += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Matomo: %s; retry %d/%d in %.1fs",
            exc,
            state.attempt_number,
            self.retry.max_retries,
            wait,
        )

    def _post(self, method: str, params: dict[str, Any]) -> tuple[str, int, bytes]:
        """One attempt: (where, status, body), transient HTTP failures raised as such."""
        data = {"module": "API", "method": method, "format": "json", **params}
        data["token_auth"] = self._token
        where = f"{method}{_site_id(params)}"
        try:
            with self.gate.slot():
                response = self._http.post(self.api_url, data=data)
                content = response.content
        except (httpx.HTTPError, httpx.InvalidURL, RuntimeError) as exc:
            raise self._request_failed(where, exc) from None
        stamp = _http_date(response.headers.get("Date"))
        if stamp is not None:
            self._matomo_clock = (stamp, time.monotonic())
        status = response.status_code
        if status in (401, 403) and "WWW-Authenticate" in response.headers:
            raise self._gateway_refused(where, status)  # a challenge: Matomo sends none
        if status == 429:
            raise self._strain(
                TransientMatomoError(
                    f"{where}: HTTP 429 rate limited", retry_after=_retry_after_seconds(response)
                )
            )
        if status >= 500:
            for mark, what in SERVER_LIMITS:
                if mark in content:
                    raise self._strain(ServerLimitError(f"{where}: HTTP {status}: Matomo {what}"))
            raise self._strain(
                TransientMatomoError(
                    f"{where}: HTTP {status}", retry_after=_retry_after_seconds(response)
                )
            )
        return where, status, content

    def _request_failed(self, where: str, exc: Exception) -> MatomoError:
        """httpx's whole hierarchy as our errors, each with its retry decision (only a
        TransientMatomoError is retried); any other exception is a bug and goes on as it is.

        - a timeout (connect, read, write, pool): ServerLimitError, retried (a smaller page
          may pass), and a sign of strain;
        - a dropped connection, a broken answer, a proxy's failure (the other TransportErrors):
          retried, and a sign of strain; a gateway certificate refused: MatomoTLSError, not
          retried (a certificate does not heal);
        - a body that cannot be decoded as its Content-Encoding says (DecodingError: a
          gateway's or proxy's glitch): retried, as a truncated answer is;
        - what the same request would meet again (a URL scheme httpx cannot speak, a request
          HTTP itself refuses to send, an invalid URL, redirects, which are never followed):
          MatomoError, not retried;
        - a request after close() (the run stopped meanwhile): MatomoError, not retried."""
        if self._closed:
            return MatomoError(f"{where}: the client was closed")
        if isinstance(exc, RuntimeError):
            raise exc  # not httpx's: a bug, never taken for Matomo's failure
        name = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return self._strain(ServerLimitError(f"{where}: timed out ({name})"))
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            return MatomoError(f"{where}: the request cannot be sent ({name}: {exc})")
        if isinstance(exc, httpx.TransportError):
            refusal = matomo_tls_refusal(exc, self._ca_bundle)
            if refusal is not None:
                return MatomoTLSError(f"{where}: {refusal}")
            return self._strain(TransientMatomoError(f"{where}: {name}: {exc}"))
        if isinstance(exc, httpx.DecodingError):
            return TransientMatomoError(
                f"{where}: the answer's body could not be decoded as its Content-Encoding says "
                f"({exc})"
            )
        return MatomoError(f"{where}: the request failed ({name}: {exc})")

    def matomo_now(self) -> datetime | None:
        """Matomo's clock now, from the `Date` header of its latest answer (None: none yet):
        `follow` checks its own against it."""
        seen = self._matomo_clock
        if seen is None:
            return None
        stamp, at = seen
        return stamp + timedelta(seconds=time.monotonic() - at)

    def _strain(self, error: TransientMatomoError) -> TransientMatomoError:
        """Tells the pace (if any) that Matomo struggles; returns the error to raise."""
        if self.on_strain is not None:
            self.on_strain(str(error))
        return error

    def _call_once_raw_list(self, method: str, params: dict[str, Any]) -> bytes:
        where, status, content = self._post(method, params)
        body = content.strip()
        if status == 200 and body.startswith(b"["):
            if not body.endswith(b"]"):
                raise TransientMatomoError(f"{where}: truncated JSON")
            return body
        self._check_body(where, status, content)  # raises the error it carries
        raise MatomoResponseError(f"{where}: expected a JSON list")

    def _call_once(self, method: str, params: dict[str, Any]) -> Any:
        where, status, content = self._post(method, params)
        return self._check_body(where, status, content)

    def _check_body(self, where: str, status: int, content: bytes) -> Any:
        """Parses a body and turns Matomo's ways of saying no into typed errors."""
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            page = matomo_error_page(content)
            if page is not None and (status in (401, 403) or TOKEN_REFUSED.search(page)):
                raise token_refused(where, page) from None
            if status in (401, 403):
                raise self._gateway_refused(where, status) from None
            if page is not None and status >= 400:
                raise MatomoError(f"{where}: HTTP {status}: Matomo error: {page}") from None
            if status >= 400:
                raise MatomoError(f"{where}: HTTP {status} (not a Matomo answer)") from None
            raise TransientMatomoError(f"{where}: truncated or invalid JSON") from None
        if isinstance(body, dict) and body.get("result") == "error":
            raise error_from_envelope(where, status, str(body.get("message", "")))
        if status in (401, 403):
            raise self._gateway_refused(where, status)  # JSON, but not Matomo's envelope
        if status >= 400:
            raise MatomoError(f"{where}: HTTP {status}")
        return body

    def _gateway_refused(self, where: str, status: int) -> GatewayAuthError:
        """A 401/403 that Matomo did not write: the gateway's, naming its credentials."""
        if self._gateway_auth:
            return GatewayAuthError(
                f"{where}: HTTP {status} from the gateway: check MATOMO_SPS_USER/MATOMO_SPS_MDP"
            )
        asks = "asks for credentials" if status == 401 else "refuses access"
        return GatewayAuthError(
            f"{where}: HTTP {status}: the gateway {asks} and MATOMO_SPS_USER/MATOMO_SPS_MDP "
            "are not set"
        )

    # -- typed helpers over call() ------------------------------------------------------

    def version(self) -> str:
        body = self.call("API.getMatomoVersion")
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise MatomoResponseError("API.getMatomoVersion: unexpected answer shape")
        return str(body["value"])

    def site(self, idsite: int) -> SiteInfo:
        body = self.call("SitesManager.getSiteFromId", idSite=idsite)
        if not isinstance(body, dict) or not isinstance(body.get("timezone"), str):
            raise MatomoResponseError(
                f"SitesManager.getSiteFromId for site {idsite}: answer has no timezone"
            )
        if str(body.get("idsite", idsite)) != str(idsite):
            raise MatomoResponseError(
                f"SitesManager.getSiteFromId for site {idsite}: answered for another site"
            )
        return SiteInfo(idsite=idsite, name=str(body.get("name", "")), timezone=body["timezone"])

    def sites_view_info(self) -> dict[int, SiteInfo]:
        """Every site the token can view, with its timezone, in one request
        (SitesManager.getSitesWithAtLeastViewAccess)."""
        where = "SitesManager.getSitesWithAtLeastViewAccess"
        body = self.call(where)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise MatomoResponseError(f"{where}: expected a JSON list of sites")
        sites: dict[int, SiteInfo] = {}
        for item in body:
            idsite = as_int(item.get("idsite"))
            if idsite is None or not isinstance(item.get("timezone"), str):
                raise MatomoResponseError(f"{where}: a site has no idsite or timezone")
            sites[idsite] = SiteInfo(idsite, str(item.get("name", "")), item["timezone"])
        return sites

    def bulk(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Several API calls in one request (API.getBulkRequest): their answers in order, an
        answer that is Matomo's error given as the MatomoError it stands for (not raised),
        so one site's refusal fails that site alone."""
        params = {
            f"urls[{index}]": urlencode({"method": method, **call_params})
            for index, (method, call_params) in enumerate(calls)
        }
        body = self.call("API.getBulkRequest", **params)
        if not isinstance(body, list) or len(body) != len(calls):
            raise MatomoResponseError(
                f"API.getBulkRequest: expected a JSON list of {len(calls)} answers"
            )
        answers: list[Any] = []
        for (method, call_params), answer in zip(calls, body, strict=True):
            if isinstance(answer, dict) and answer.get("result") == "error":
                where = f"{method}{_site_id(call_params)}"
                answer = error_from_envelope(where, 200, str(answer.get("message", "")))
            answers.append(answer)
        return answers

    def sites_metadata(self, idsites: list[int]) -> dict[int, SiteMetadata]:
        """The custom dimensions and goals of several sites in one bulk request."""
        calls: list[tuple[str, dict[str, Any]]] = []
        for idsite in idsites:
            calls.append(("CustomDimensions.getConfiguredCustomDimensions", {"idSite": idsite}))
            calls.append(("Goals.getGoals", {"idSite": idsite}))
        answers = self.bulk(calls)
        found: dict[int, SiteMetadata] = {}
        for index, idsite in enumerate(idsites):
            dimensions, goals = answers[2 * index], answers[2 * index + 1]
            for answer in (dimensions, goals):
                if isinstance(answer, MatomoError):
                    found[idsite] = answer
                    break
            else:
                try:
                    found[idsite] = (
                        _list_of_objects(dimensions, f"CustomDimensions for site {idsite}"),
                        _goal_list(goals, idsite),
                    )
                except MatomoResponseError as exc:
                    found[idsite] = exc
        return found

    def custom_dimensions(self, idsite: int) -> list[dict[str, Any]]:
        body = self.call("CustomDimensions.getConfiguredCustomDimensions", idSite=idsite)
        return _list_of_objects(body, f"CustomDimensions for site {idsite}")

    def goals(self, idsite: int) -> list[dict[str, Any]]:
        return _goal_list(self.call("Goals.getGoals", idSite=idsite), idsite)

    def visits_page(self, idsite: int, day: date, limit: int, offset: int) -> list[Visit]:
        """One page of the day's visits, oldest last action first."""
        raw = self.visits_page_raw(idsite, day, limit, offset)
        return parse_visits(raw, idsite, day, limit)

    def visits_page_raw(
        self,
        idsite: int,
        day: date,
        limit: int,
        offset: int,
        after: int | None = None,
        split: bool = False,
    ) -> bytes:
        """The page's JSON body, unparsed (see parse_visits). `after`: only visits whose last
        action is strictly after this Unix second (Matomo's minTimestamp). `split`: see
        call_raw_list."""
        params: dict[str, Any] = {
            "idSite": idsite,
            "period": "day",
            "date": day.isoformat(),
            "filter_limit": limit,
            "filter_offset": offset,
            "filter_sort_order": "asc",
        }
        if after is not None:
            params["minTimestamp"] = after
        return self.call_raw_list("Live.getLastVisitsDetails", split=split, **params)

    # -- operability (issue #5): MATOMO_ID_SITE=all, audit -----------------------------

    def sites_with_view_access(self) -> list[int]:
        """Every site id the token can view (SitesManager.getSitesIdWithAtLeastViewAccess)."""
        where = "SitesManager.getSitesIdWithAtLeastViewAccess"
        body = self.call(where)
        if not isinstance(body, list):
            raise MatomoResponseError(f"{where}: expected a JSON list of site ids")
        ids = [as_int(item) for item in body]
        if any(idsite is None or idsite <= 0 for idsite in ids):
            raise MatomoResponseError(f"{where}: an entry is not a site id")
        return sorted({idsite for idsite in ids if idsite is not None})

    def visits_summary_count(self, idsite: int, day: date) -> int:
        """VisitsSummary.get nb_visits of one day (Matomo's archived aggregate)."""
        where = f"VisitsSummary.get for site {idsite} on {day}"
        body = self.call("VisitsSummary.get", idSite=idsite, period="day", date=day.isoformat())
        if isinstance(body, list) and not body:
            return 0  # a day without any archive
        value = as_int(body.get("nb_visits")) if isinstance(body, dict) else None
        if value is None:
            raise MatomoResponseError(f"{where}: answer has no nb_visits")
        return value


def _goal_list(body: Any, idsite: int) -> list[dict[str, Any]]:
    if isinstance(body, dict):  # older Matomo versions key goals by id
        body = list(body.values())
    return _list_of_objects(body, f"Goals.getGoals for site {idsite}")


def _list_of_objects(body: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise MatomoResponseError(f"{where}: expected a JSON list of objects")
    return body
