"""Every exception httpx can raise on the client's request path comes out as one of our
errors, with its retry decision (source/client.py `MatomoClient._request_failed`): a run
never ends on a raw httpx exception, and only what may heal is retried."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from matomo_kafka.errors import MatomoError, ServerLimitError, TransientMatomoError
from matomo_kafka.source.client import MatomoClient, RetryPolicy
from support.parm import TOKEN

RETRY = RetryPolicy(max_retries=2, backoff=0.001, max_wait=0.001)
URL = "https://gw.example/index.php"

Raise = Callable[[httpx.Request], Exception]


@pytest.mark.parametrize(
    ("make", "expected", "attempts"),
    [
        (lambda r: httpx.DecodingError("Error -3 while decompressing data", request=r),
         MatomoError, 3),
        (lambda r: httpx.ReadTimeout("timed out", request=r), MatomoError, 3),
        (lambda r: httpx.PoolTimeout("no connection", request=r), MatomoError, 3),
        (lambda r: httpx.ReadError("reset by peer", request=r), MatomoError, 3),
        (lambda r: httpx.RemoteProtocolError("peer closed", request=r), MatomoError, 3),
        (lambda r: httpx.ProxyError("proxy down", request=r), MatomoError, 3),
        (lambda r: httpx.UnsupportedProtocol("ftp", request=r), MatomoError, 1),
        (lambda r: httpx.LocalProtocolError("bad header", request=r), MatomoError, 1),
        (lambda r: httpx.TooManyRedirects("too many", request=r), MatomoError, 1),
        (lambda r: httpx.RequestError("something else", request=r), MatomoError, 1),
        (lambda r: httpx.InvalidURL("Invalid port"), MatomoError, 1),
    ],
    ids=["decoding", "read-timeout", "pool-timeout", "read-error", "remote-protocol", "proxy",
         "unsupported-protocol", "local-protocol", "redirects", "other-request-error",
         "invalid-url"],
)  # fmt: skip
def test_httpx_failures_are_typed_and_retried_only_when_they_may_heal(
    make: Raise, expected: type[Exception], attempts: int
) -> None:
    seen: list[httpx.Request] = []

    def fail(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise make(request)

    client = MatomoClient(URL, TOKEN, retry=RETRY, transport=httpx.MockTransport(fail))
    with client, pytest.raises(expected) as raised:
        client.version()
    assert len(seen) == attempts
    assert client.retries_done == attempts - 1
    assert not isinstance(raised.value, TransientMatomoError), "retries end in a MatomoError"
    assert TOKEN not in str(raised.value)


def test_a_body_that_cannot_be_decoded_once_is_retried_and_read() -> None:
    """A body whose Content-Encoding is a lie (a proxy's glitch), once: the next attempt
    reads the page, as after a truncated answer."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:  # decoded as the body is read, as from a server
            corrupt = httpx.ByteStream(b'{"value": "5.0.2"}')
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=corrupt)
        return httpx.Response(200, content=b'{"value": "5.0.2"}')

    client = MatomoClient(URL, TOKEN, retry=RETRY, transport=httpx.MockTransport(answer))
    with client:
        assert client.version() == "5.0.2"
    assert client.retries_done == 1


def test_a_timeout_is_a_server_limit_and_a_sign_of_strain() -> None:
    """The mapping keeps what a timeout meant before: a page may be split, the pace slows."""
    strains: list[str] = []

    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = MatomoClient(URL, TOKEN, retry=RetryPolicy(0, 0.001, 0.001),
                          transport=httpx.MockTransport(fail))  # fmt: skip
    client.on_strain = strains.append
    with client, pytest.raises(MatomoError, match="timed out"):
        client.call_raw_list("Live.getLastVisitsDetails", idSite=1)
    assert len(strains) == 1
    assert issubclass(ServerLimitError, TransientMatomoError)
