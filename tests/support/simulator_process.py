"""The simulator in its own process (`matomo-kafka simulate`): for benchmarks, whose client must
not share a GIL with the server, and tests of the command itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator_process(
    config: dict[str, Any], config_path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Writes `config` (SimConfig's JSON) to `config_path`, starts the simulator on a free port
    and returns the process and its API URL once it accepts connections. Its output goes to
    `config_path` with `.log`; a simulator that exits or does not listen within 10 s is an
    error naming that file, not a URL that refuses every request later."""
    config_path.write_text(json.dumps(config))
    log_path = config_path.with_suffix(".log")
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "matomo_kafka.cli", "simulate", "--port", str(port),
             "--config", str(config_path)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}/index.php"
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the simulator did not start on port {port}: see {log_path}")
