"""The API's front door, HTTP aside: basic auth, injected faults, the token, then the method
table (the one place that says which function answers which Matomo method, one module per
Matomo module under `modules/`), and API.getBulkRequest built on it."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from matomo_kafka.simulator.config import (
    _HTML_401,
    MSG_BAD_METHOD_NAME,
    MSG_MISSING_PARAM,
    MSG_ONLY_API_JSON,
    MSG_UNKNOWN_METHOD,
)
from matomo_kafka.simulator.errors import fault_reply, token_refused
from matomo_kafka.simulator.modules import (
    custom_dimensions,
    goals,
    live,
    sites_manager,
    visits_summary,
)
from matomo_kafka.simulator.server import _error, _json_reply, _Reply

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator

#: An API method's answer to its parameters.
Handler = Callable[[dict[str, str]], _Reply]


def answer(
    sim: MatomoSimulator, params: dict[str, str], in_query: bool, auth: str | None, host: str | None
) -> _Reply:
    """One API request, HTTP aside: basic auth, an injected fault, then the method."""
    token_in_query, authorization = in_query, auth
    cfg = sim.config
    if cfg.basic_auth is not None and not _basic_ok(authorization, cfg.basic_auth):
        return _Reply(
            status=401,
            body=_HTML_401,
            content_type="text/html; charset=iso-8859-1",
            headers=[("WWW-Authenticate", 'Basic realm="Matomo"')],
        )
    fault = sim._take_fault(params)
    if fault is not None:
        if fault.kind == "delay":
            time.sleep(fault.delay_s)
        elif fault.kind not in ("truncate", "corrupt_encoding"):
            return fault_reply(fault)
    reply = _call(sim, params, token_in_query, host)
    if fault is not None and fault.kind in ("truncate", "corrupt_encoding"):
        if reply.stream is not None:
            reply.body = b"".join(reply.stream)
            reply.stream = None
        if fault.kind == "truncate":
            reply.action = "truncate"
        else:
            reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    return reply


def _call(
    sim: MatomoSimulator, params: dict[str, str], token_in_query: bool, host: str | None = None
) -> _Reply:
    """The token, then the method: what index.php?module=API does."""
    cfg = sim.config
    if params.get("module", "").lower() != "api" or params.get("format", "").lower() != "json":
        return _error(MSG_ONLY_API_JSON)
    token = params.get("token_auth")
    if not token or token != cfg.token or (cfg.post_only_token and token_in_query):
        return token_refused(sim, params, bool(token), host)
    method = params.get("method")
    if not method:
        return _error(MSG_MISSING_PARAM.format("method"))
    if "." not in method:
        return _error(MSG_BAD_METHOD_NAME)
    module, _, name = method.partition(".")
    handler = methods(sim).get(method)
    if handler is None:
        return _error(MSG_UNKNOWN_METHOD.format(name, module))
    return handler(params)


def methods(sim: MatomoSimulator) -> dict[str, Handler]:
    """Every API method the simulator answers, and the function that answers it."""
    return {
        "API.getMatomoVersion": lambda _p: _json_reply({"value": sim.config.matomo_version}),
        "API.getBulkRequest": partial(get_bulk_request, sim),
        "SitesManager.getSiteFromId": partial(sites_manager.get_site_from_id, sim),
        "SitesManager.getSitesIdWithAtLeastViewAccess": partial(
            sites_manager.get_sites_id_with_at_least_view_access, sim
        ),
        "SitesManager.getSitesWithAtLeastViewAccess": partial(
            sites_manager.get_sites_with_at_least_view_access, sim
        ),
        "CustomDimensions.getConfiguredCustomDimensions": partial(
            custom_dimensions.get_configured_custom_dimensions, sim
        ),
        "Goals.getGoals": partial(goals.get_goals, sim),
        "VisitsSummary.get": partial(visits_summary.get, sim),
        "Live.getLastVisitsDetails": partial(live.get_last_visits_details, sim),
        **sim.privacy.methods(),
    }


def get_bulk_request(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
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
        fault = sim._take_fault(sub)
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
                return fault_reply(fault)
        handler = methods(sim).get(method) if method != "API.getBulkRequest" else None
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


def _basic_ok(header: str | None, creds: tuple[str, str]) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, _, pwd = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, pwd) == creds
