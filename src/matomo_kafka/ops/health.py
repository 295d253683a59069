"""The service's health endpoint (`follow`, MATOMO_HEALTH_PORT): what a Kubernetes probe or a
monitoring check asks, on a small HTTP server of the standard library, in a thread.

- `/livez`: 200 while the process serves (its one loop has nothing else to report: a failed
  cycle is retried, and a failure no retry can fix ends the process).
- `/readyz`: 200 once the first cycle completed and while the last one succeeded (every site
  brought up to the horizon); 503 with the reason otherwise (first cycle still under way: a
  long catch-up, a site failing, Kafka unreachable...), and 503 once a cycle under way has
  shown no progress for `stale_after` seconds (stuck: see follow.stale_after).
- `/metrics`: the Prometheus metrics of the service (ops/follow_metrics.py).

It listens on MATOMO_HEALTH_BIND (this host only by default) and can never starve the
service it reports on: at most MAX_CONNECTIONS connections are served at once (more are
closed as soon as accepted), and each one is closed after CONNECTION_DEADLINE seconds
whatever it sends, so idle or half-sent requests hold neither threads nor file descriptors
the cycles need. Its errors go through the (redacting) log, never as a traceback on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from matomo_kafka.errors import ConfigError

log = logging.getLogger(__name__)

#: Connections served at once; more are closed when accepted (a probe is one at a time).
MAX_CONNECTIONS = 16
#: Seconds a connection may take, request and answer: a probe's take milliseconds.
CONNECTION_DEADLINE = 5.0


class Health:
    """Whether the service is ready, updated as cycles start, progress and end (thread-safe).

    `stale_after` (None: never): seconds a cycle under way may go without any progress (a
    site started or finished, a page delivered) before the service says it is stuck; between
    cycles the service waits on purpose (the interval, a back-off) and is never stale."""

    def __init__(
        self, stale_after: float | None = None, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._completed = False
        self._problem: str | None = "the first cycle has not completed yet"
        self.stale_after = stale_after
        self._now = now
        self._running = False
        self._last_sign = now()  # the cycle's start or its latest progress

    def cycle_started(self) -> None:
        with self._lock:
            self._running, self._last_sign = True, self._now()

    def progressed(self) -> None:
        """The cycle under way moved on (called once a page: cheap)."""
        with self._lock:
            self._last_sign = self._now()

    def cycle_done(self, problem: str | None) -> None:
        """A cycle ended; `problem` says why the service is not ready (None: it is)."""
        with self._lock:
            self._completed = True
            self._problem = problem
            self._running = False

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            quiet = self._now() - self._last_sign
            if self._running and self.stale_after is not None and quiet > self.stale_after:
                return False, (
                    f"stale: the cycle under way has made no progress for {quiet:.0f}s (more "
                    f"than {self.stale_after:.0f}s)"
                )
            if self._problem is None and self._completed:
                return True, "ready"
            return False, self._problem or "not ready"


class HealthServer:
    """Serves /livez, /readyz and /metrics on `host`:`port` until `close`."""

    def __init__(
        self,
        health: Health,
        registry: CollectorRegistry,
        port: int,
        host: str = "127.0.0.1",
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = CONNECTION_DEADLINE,
    ) -> None:
        handler = _handler(health, registry, deadline)
        try:
            self._server = _BoundedServer((host, port), handler, max_connections, deadline)
        except OSError as exc:
            where = f"port {port} (MATOMO_HEALTH_BIND {host})"
            raise ConfigError([f"MATOMO_HEALTH_PORT: cannot listen on {where}: {exc}"]) from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="health", daemon=True,
        )  # fmt: skip

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health: http://%s:%d/livez, /readyz and /metrics", _url_host(self.host),
                 self.port)  # fmt: skip
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections, a deadline for each, and its errors
    logged (the standard one prints each traceback on stderr)."""

    daemon_threads = True
    request_queue_size = 64  # a burst of probes and scrapes waits in the kernel, not here

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
        deadline: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadline = deadline
        self._open: dict[Any, float] = {}  # connection -> when it is closed at the latest
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed at once, no thread
            return
        with self._open_lock:
            self._open[request] = time.monotonic() + self._deadline
        super().process_request(request, client_address)

    def close_request(self, request: Any) -> None:
        """Every connection ends here (its thread's end, or a failure to start one)."""
        with self._open_lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()
        super().close_request(request)

    def service_actions(self) -> None:
        """Between two accepts (every poll interval): connections past their deadline are
        shut down, which ends the read or write their thread is blocked in."""
        super().service_actions()
        now = time.monotonic()
        with self._open_lock:  # held: none of them is closed (and its fd reused) meanwhile
            for request, end in self._open.items():
                if end <= now:
                    with contextlib.suppress(OSError):
                        request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away, or was cut at its deadline
            log.debug("health: connection from %s ended: %s", client_address, exc)
        else:
            log.warning("health: a request from %s failed", client_address, exc_info=True)


def _handler(
    health: Health, registry: CollectorRegistry, deadline: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = deadline  # each read and write; the server cuts the whole at its deadline

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/livez":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = health.ready()
                self._reply(200 if ready else 503, f"{reason}\n".encode())
            elif path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found: /livez, /readyz, /metrics\n")

        def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would fill the log

    return Handler
