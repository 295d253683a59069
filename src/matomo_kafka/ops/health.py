"""The service's health endpoint (`follow`, MATOMO_HEALTH_PORT): what a Kubernetes probe or a
monitoring check asks, on a small HTTP server of the standard library, in a thread.

- `/livez`: 200 while the process serves (its one loop has nothing else to report: a failed
  cycle is retried, and a failure no retry can fix ends the process).
- `/readyz`: 200 once the first cycle completed and while the last one succeeded (every site
  brought up to the horizon); 503 with the reason otherwise (first cycle still under way: a
  long catch-up, a site failing, Kafka unreachable...), and 503 once a cycle under way has
  shown no progress for `stale_after` seconds (stuck: see follow.stale_after).
- `/metrics`: the Prometheus metrics of the service (ops/follow_metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from matomo_kafka.errors import ConfigError

log = logging.getLogger(__name__)


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
    """Serves /livez, /readyz and /metrics on `port` (all interfaces) until `close`."""

    def __init__(
        self, health: Health, registry: CollectorRegistry, port: int, host: str = "0.0.0.0"
    ) -> None:
        handler = _handler(health, registry)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                [f"MATOMO_HEALTH_PORT: cannot listen on port {port}: {exc}"]
            ) from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="health", daemon=True,
        )  # fmt: skip

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health: http://0.0.0.0:%d/livez, /readyz and /metrics", self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(health: Health, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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
