"""What Matomo means when it says no: its JSON error envelope, its HTML error page, the words
of a refused token or a site the token cannot view, and PHP's limits in an HTTP 500 page. The
client (client.py) decides from these what is retried and what stops the run."""

from __future__ import annotations

import html
import re

from matomo_kafka.errors import MatomoError, SiteAccessError, TokenRefusedError

#: What Matomo's PHP says (in its HTTP 500 page) when a request asks more than it allows.
SERVER_LIMITS = (
    (b"Allowed memory size", "ran out of memory (PHP memory_limit)"),
    (b"Maximum execution time", "hit its time limit (PHP max_execution_time)"),
)

#: Matomo's own words for a token it does not accept: 5.x's (JSON, or its HTML error page for
#: API.getMatomoVersion), and 4.x's for a caller without view access to any site (4.x takes
#: a token it does not know for the anonymous user, and answers HTTP 200).
TOKEN_REFUSED = re.compile(
    r"Unable to authenticate with the provided token"
    r"|requires '?view'? access for at least one website"
)
#: A valid token without view access to one site (5.x: HTTP 401; 4.x: HTTP 200).
_SITE_NOT_VIEWABLE = re.compile(r"requires '?view'? access for the website id = (\d+)")
_ERROR_PAGE_TITLE = re.compile(rb"<title>\s*(?:Matomo|Piwik)\b[^<]*</title>", re.IGNORECASE)
_ERROR_PAGE_MESSAGE = re.compile(rb'<div class="content">\s*<h2>(.*?)</h2>', re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def matomo_error_page(content: bytes) -> str | None:
    """The message of Matomo's own HTML error page (its title, then the message in the
    page's content box), or None when the body is not that page: a gateway's HTML, even one
    titled after Matomo (a login page), must not be taken for Matomo's refusal."""
    if not _ERROR_PAGE_TITLE.search(content[:4096]):
        return None
    found = _ERROR_PAGE_MESSAGE.search(content)
    if found is None:
        return None
    text = html.unescape(_TAG.sub("", found.group(1).decode("utf-8", "replace")))
    return " ".join(text.split())[:300] or None


def token_refused(where: str, message: str) -> TokenRefusedError:
    return TokenRefusedError(
        f"{where}: token refused by Matomo: MATOMO_API_TOKEN is invalid, expired, or without "
        f"view access to any site (Matomo: {message})"
    )


def error_from_envelope(where: str, status: int, message: str) -> MatomoError:
    """Matomo's JSON error envelope ({"result": "error", "message": ...}) as the typed error
    its message stands for: a refused token, a site the token cannot view, or another no."""
    message = " ".join(message.split())[:300]
    not_viewable = _SITE_NOT_VIEWABLE.search(message)
    if not_viewable is not None:
        idsite = not_viewable.group(1)
        return SiteAccessError(
            f"{where}: MATOMO_API_TOKEN cannot view site {idsite}: give the token view "
            f"access to it in Matomo, or remove site {idsite} from MATOMO_ID_SITE"
        )
    if TOKEN_REFUSED.search(message):
        return token_refused(where, message)
    if "website id" in message or "Visits log is deactivated" in message:
        return SiteAccessError(f"{where}: {message}")
    if status in (401, 403):  # Matomo's envelope: its refusal, not the gateway's
        return token_refused(where, message)
    return MatomoError(f"{where}: Matomo error: {message}")
