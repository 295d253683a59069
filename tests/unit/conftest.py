"""tests/unit needs nothing: no broker, no server, no network. Each test runs with network
connections (IPv4/IPv6) and server sockets refused in this process, so a unit test that would
reach for either fails at once, naming it, instead of waiting on a broker that is not there.
(A CLI child process is not covered: unit tests give it nothing to reach.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

INET = (socket.AF_INET, socket.AF_INET6)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    connect, connect_ex, bind = socket.socket.connect, socket.socket.connect_ex, socket.socket.bind

    def refuse(what: str, address: Any) -> None:
        raise AssertionError(
            f"a unit test must not {what} {address!r}: move it to tests/integration"
        )

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in INET:
            refuse("connect to", address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in INET:
            refuse("connect to", address)
        return connect_ex(self, address)

    def guarded_bind(self: socket.socket, address: Any) -> None:
        if self.family in INET:
            refuse("listen on", address)
        bind(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket.socket, "bind", guarded_bind)
    yield
