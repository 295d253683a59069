"""The simulator over HTTP or HTTPS: a threading server, its request handler (basic auth,
GET and POST, streaming, dropped connections); `matomo.run_simulator` serves it for the CLI."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

from matomo_kafka.simulator.config import STATS_PATH
from matomo_kafka.simulator.visits.php_json import php_json


class Served(Protocol):
    """What the HTTP server asks of the simulator (matomo.MatomoSimulator)."""

    def handle(
        self,
        params: dict[str, str],
        token_in_query: bool,
        authorization: str | None,
        host: str | None = None,
    ) -> _Reply: ...

    def stats(self, reset: bool = False) -> dict[str, Any]: ...

    def log_request(self, entry: dict[str, Any]) -> None: ...

    def http_time(self) -> float: ...

    def tls_refused(self, reason: str) -> None: ...


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------
def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) serving this certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True
    tls_handshake_timeout = 30.0

    def __init__(
        self, address: tuple[str, int], sim: Served, tls: ssl.SSLContext | None = None
    ) -> None:
        self.sim = sim
        self.tls = tls
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake happens here, on the connection's own thread (a slow or
        refusing client never holds up the accept loop)."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.tls_handshake_timeout)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.sim.tls_refused(getattr(exc, "reason", None) or type(exc).__name__)
            return  # the raw socket is closed by shutdown_request
        try:
            super().finish_request(wrapped, client_address)
        finally:
            self.shutdown_request(wrapped)  # wrap_socket detached the raw socket

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: clients dropping connections mid-answer are expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so client connection pools get reused
    server_version = "Apache"
    sys_version = ""
    timeout = 300
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: the simulator's clock, as a real Matomo sends its own."""
        return super().date_time_string(self.server.sim.http_time() if timestamp is None
                                        else timestamp)  # fmt: skip

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the CLI and tests own the output."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, verb: str) -> None:
        sim = self.server.sim
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body = self._read_body()
        form: dict[str, str] = {}
        ctype = self.headers.get("Content-Type", "application/x-www-form-urlencoded").lower()
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params = {**query, **form}
        in_query, in_body = "token_auth" in query, "token_auth" in form
        entry: dict[str, Any] = {
            "time": time.time(),
            "verb": verb,
            "path": split.path,
            "method": params.get("method"),
            "params": {k: v for k, v in params.items() if k != "token_auth"},
            "token_in": "both" if in_query and in_body else
                        "query" if in_query else "body" if in_body else None,
            "client_port": self.client_address[1],
            "status": None,
        }  # fmt: skip
        if split.path == STATS_PATH:  # outside the API: not logged, counted nor queued
            reply = _json_reply(sim.stats(reset=query.get("reset") == "1"))
        else:
            sim.log_request(entry)
            try:
                reply = sim.handle(
                    params, in_query, self.headers.get("Authorization"), self.headers.get("Host")
                )
            except Exception as e:  # answer like Matomo's error envelope instead of hanging
                reply = _error(f"Simulator internal error: {type(e).__name__}: {e}", 500)
        if reply.action == "disconnect":
            self.close_connection = True
            self._hard_close()
            return
        entry["status"] = reply.status
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for k, v in reply.headers:
            self.send_header(k, v)
        if reply.stream is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in reply.stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.action == "truncate":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.close_connection = True
            self._hard_close()
            return
        self.end_headers()
        self.wfile.write(reply.body)

    def _hard_close(self) -> None:
        """Drop the TCP connection now, without any (further) response bytes."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------
@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterator[bytes] | None = None
    action: Literal["send", "truncate", "disconnect"] = "send"
    visits: int = 0  # visits in a Live page: its worker cost may depend on them


def _json_reply(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status=status, body=php_json(obj))


def _error(message: str, status: int = 200) -> _Reply:
    return _json_reply({"result": "error", "message": message}, status)
