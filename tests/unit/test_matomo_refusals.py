"""Issue 14, without a server: which error and which line the Matomo client gives for bodies the
simulator does not serve, and Matomo's HTML error page read back to its message."""

from __future__ import annotations

import httpx
import pytest

from matomo_kafka.errors import (
    GatewayAuthError,
    SiteAccessError,
    TokenRefusedError,
)
from matomo_kafka.source.client import MatomoClient, RetryPolicy
from matomo_kafka.source.error_answers import matomo_error_page
from support.parm import TOKEN
from support.samples import MATOMO_4, sample_bytes

#: Retries a transient failure would get: a refusal must get none of them.
RETRY = RetryPolicy(max_retries=5, backoff=0.01, max_wait=0.05)
#: What each version says, as the line quotes it (5.0.2: from its HTML error page).
MATOMO_SAYS = {
    "5.0.2": "Unable to authenticate with the provided token. It is either invalid or expired.)",
    "4.15.1": "You can't access this resource as it requires view access for at least one "
    "website.)",
}
MATOMO_PAGE = sample_bytes("version_bad_token")


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (401, {}, b"", GatewayAuthError),
        (401, {"Content-Type": "application/json"}, b'{"message":"Unauthorized"}',
         GatewayAuthError),
        (403, {}, b"<html><head><title>Matomo - sign in</title></head><body><h2>Sign in"
         b"</h2></body></html>", GatewayAuthError),
        (401, {"WWW-Authenticate": 'Bearer realm="sso"'}, MATOMO_PAGE, GatewayAuthError),
        (401, {}, MATOMO_PAGE, TokenRefusedError),
        (200, {}, MATOMO_PAGE, TokenRefusedError),
        (403, {}, b'{"result":"error","message":"You must be logged in."}', TokenRefusedError),
        (200, {}, sample_bytes("live_bad_token", MATOMO_4), SiteAccessError),
    ],
    ids=["bare-401", "json-not-matomo", "gateway-page-titled-matomo", "challenge-wins",
         "matomo-page", "matomo-page-200", "matomo-envelope-403", "4x-site-envelope"],
)  # fmt: skip
def test_bodies_the_simulator_does_not_serve(
    status: int, headers: dict[str, str], body: bytes, expected: type[Exception]
) -> None:
    """Shapes a gateway or Matomo may send that the simulator has no reason to: the client's
    own path (post, classify) over an in-process transport, one request each."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, content=body)

    client = MatomoClient("https://gw.example/index.php", TOKEN, retry=RETRY,
                          transport=httpx.MockTransport(answer))  # fmt: skip
    with client, pytest.raises(expected):
        client.version()
    assert len(seen) == 1 and client.retries_done == 0


def test_matomo_error_page_message() -> None:
    assert matomo_error_page(MATOMO_PAGE) == MATOMO_SAYS["5.0.2"].removesuffix(")")
    assert matomo_error_page(b"<html><title>401 Unauthorized</title><h2>x</h2></html>") is None
    assert matomo_error_page(b'<title>Matomo</title><div class="content"><h2> </h2>') is None
