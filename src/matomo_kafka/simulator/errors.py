"""How Matomo fails, as the client sees it: a refused token (each version its own way),
Matomo's HTML error page, PHP's fatal errors past its limits, and the answers of injected
faults. Error envelopes themselves are `server._error`."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import (
    _ERROR_PAGE,
    MSG_BAD_TOKEN,
    MSG_BAD_TOKEN_PAGE,
    MSG_NO_VIEW,
    MSG_NO_VIEW_ANY,
    Fault,
)
from matomo_kafka.simulator.server import _error, _Reply

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def token_refused(
    sim: MatomoSimulator, params: dict[str, str], given: bool, host: str | None
) -> _Reply:
    """A missing or unknown token, as each version answers it (see matomo.py's docstring;
    the captured answers are in tests/fixtures/matomo-*/*_token*)."""
    idsite = params.get("idSite")
    if sim._matomo_4:  # the anonymous user: no view access anywhere, and HTTP 200
        return _error(MSG_NO_VIEW.format(idsite) if idsite else MSG_NO_VIEW_ANY)
    if not given:
        return _error(MSG_NO_VIEW.format(idsite or 1), 401)
    if params.get("method") == "API.getMatomoVersion":
        base = f"{sim._scheme}://{host or '127.0.0.1'}"
        return _error_page(MSG_BAD_TOKEN_PAGE, base, 401)
    return _error(MSG_BAD_TOKEN, 401)


def fault_reply(fault: Fault) -> _Reply:
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


def php_limit_reply(kind: str) -> _Reply:
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
