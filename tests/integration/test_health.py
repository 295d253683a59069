"""The health endpoint's server (issue 27), in this process over real HTTP on 127.0.0.1: a cap on
connections and a deadline for each, so idle clients cannot hold it, and its errors in the
redacting log, never as a traceback on stderr. The same under a running `follow` with a
lowered `ulimit -n`: tests/integration/test_follow.py."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from matomo_kafka.ops.health import Health, HealthServer
from matomo_kafka.ops.redaction import RedactingFilter, Redactor

pytestmark = [pytest.mark.simulator]

SECRET = "health-secret-4f9a2c71"


def livez(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as response:
            return int(response.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


class FailingCollector(Collector):
    """A metric that fails when scraped, its error carrying a secret."""

    def collect(self) -> Iterable[Metric]:
        raise RuntimeError(f"cannot collect with {SECRET}")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the health server logs, through the redacting filter as the CLI sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(Redactor([SECRET])))
    logger = logging.getLogger("matomo_kafka.ops.health")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_idle_connections_beyond_the_cap_neither_hold_it_nor_stay_open() -> None:
    """Ten idle, half-sent requests against a cap of 2 and a deadline of 1 s: every one is
    closed by the server, and /livez answers again."""
    server = HealthServer(Health(), CollectorRegistry(), 0, max_connections=2, deadline=1.0)
    server.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(10):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never ends
            idle.append(connection)
        for connection in idle:  # the server never answers these: ended, or a timeout
            with contextlib.suppress(ConnectionResetError):
                assert connection.recv(1024) == b""
        deadline = time.monotonic() + 30
        while livez(server.port) != 200:
            assert time.monotonic() < deadline, "/livez never answered again"
            time.sleep(0.1)
    finally:
        for connection in idle:
            connection.close()
        server.close()


def test_a_client_that_sends_slowly_is_cut_at_the_deadline() -> None:
    """One byte every 0.3 s never trips a read timeout of 1 s; the deadline cuts it anyway
    (well before the 60 bytes sent at most: 18 s)."""
    server = HealthServer(Health(), CollectorRegistry(), 0, max_connections=1, deadline=1.0)
    server.start()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        cut = False
        for byte in (b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 60)[:60]:
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            time.sleep(0.3)
        assert cut, "the slow client was never cut"
    finally:
        connection.close()
        server.close()


def test_errors_go_to_the_redacting_log_not_stderr(
    logged: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    registry = CollectorRegistry()
    registry.register(FailingCollector())
    server = HealthServer(Health(), registry, 0).start()
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert livez(server.port) == 200
    finally:
        server.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and SECRET not in err, err
    text = logged.getvalue()
    assert "health: a request from" in text and "RuntimeError" in text, text
    assert SECRET not in text and "Traceback" not in text, text


def test_it_listens_on_this_host_only_unless_told() -> None:
    server = HealthServer(Health(), CollectorRegistry(), 0).start()
    try:
        assert server.host == "127.0.0.1"
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.close()
