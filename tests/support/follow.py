"""Helpers of the `follow` tests (tests/*/test_follow*.py): one moving clock for the simulator and
the tool, a `matomo-kafka follow` subprocess, its health endpoint.

The clock: the simulator's own (set_now) and the tool's (MATOMO_TEST_NOW=@file, read at every
use) move together, only when the test moves them, so every check is exact: after a cycle at
clock T, the topic holds exactly the visits whose last action is at or before
T - MATOMO_VISIT_LENGTH - MATOMO_SETTLE_MINUTES.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from matomo_kafka.config.keys import ALL_KEYS
from matomo_kafka.simulator import MatomoSimulator
from support.cli import CLI_OUTPUTS

#: MATOMO_VISIT_LENGTH and MATOMO_SETTLE_MINUTES of the tests: Matomo's defaults.
VISIT_LENGTH = 1800
SETTLE_MINUTES = 10
MARGIN = VISIT_LENGTH + 60 * SETTLE_MINUTES


def utc(text: str) -> float:
    """Unix time of a naive ISO time read in UTC ("2024-03-05 10:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class MovingClock:
    """The simulator's clock and the tool's (a file), moved together."""

    def __init__(self, path: Path, simulators: Iterable[MatomoSimulator], start: float) -> None:
        self.path = path
        self.simulators = list(simulators)
        self.now = start
        self.set(start)

    @property
    def env_value(self) -> str:
        return f"@{self.path}"

    def set(self, now: float) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".clock.")
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{now}\n")
        os.replace(tmp, self.path)
        for simulator in self.simulators:
            simulator.set_now(now)
        self.now = now

    def advance(self, seconds: float) -> float:
        self.set(self.now + seconds)
        return self.now

    @property
    def horizon(self) -> int:
        """The last second whose visits follow may send at this clock."""
        return int(self.now // 1) - MARGIN


def follow_env(clock: MovingClock, **extra: str) -> dict[str, str]:
    """The test process's environment without any config key, with the moving clock."""
    env = {key: value for key, value in os.environ.items()
           if key not in ALL_KEYS and not key.startswith("KAFKA_PRODUCER_")
           and key not in ("MATOMO_SHARD", "MATOMO_SUMMARY_FILE")}  # fmt: skip
    env["MATOMO_TEST_NOW"] = clock.env_value
    env.update(extra)
    return env


def follow_values(port: int, **overrides: str) -> dict[str, str]:
    """The follow keys of the tests: a short interval, Matomo's default visit length."""
    return {
        "MATOMO_FOLLOW_INTERVAL": "1",
        "MATOMO_VISIT_LENGTH": str(VISIT_LENGTH),
        "MATOMO_SETTLE_MINUTES": str(SETTLE_MINUTES),
        "MATOMO_HEALTH_PORT": str(port),
        **overrides,
    }


class FollowProcess:
    """`matomo-kafka follow` as a subprocess, its output in a file."""

    def __init__(self, parm: Path, env: dict[str, str], log: Path, port: int) -> None:
        self.parm, self.env, self.log, self.port = parm, env, log, port
        self.process: subprocess.Popen[bytes] | None = None
        self.collected = False

    def start(self, *args: str, open_files: int | None = None) -> FollowProcess:
        """`open_files`: its RLIMIT_NOFILE (`ulimit -n`), when a test lowers it."""

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "matomo_kafka.cli", "follow", "--parm-dir",
                 str(self.parm), *args],
                env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                preexec_fn=limit if open_files is not None else None,
            )  # fmt: skip
        return self

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float = 60) -> int:
        """Its exit code; its output joins the session's, scanned for secrets at the end."""
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        if not self.collected:
            self.collected = True
            CLI_OUTPUTS.append(self.output)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of the health endpoint; (0, reason) while it does not answer."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return 0, str(exc)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None: not there yet)."""
        status, body = self.get("/metrics")
        if status != 200:
            return None
        want = ",".join(f'{key}="{value}"' for key, value in labels.items())
        pattern = re.escape(name + (f"{{{want}}}" if want else "")) + r" (\S+)"
        match = re.search(r"^" + pattern + r"$", body, re.MULTILINE)
        return float(match.group(1)) if match else None

    def wait_cycle(self, sites: Iterable[int], horizon: int, timeout: float = 60) -> None:
        """Until a cycle brought every site up to `horizon` (its gauge on /metrics)."""

        def done() -> bool:
            for idsite in sites:
                value = self.metric(
                    "matomo_kafka_follow_horizon_timestamp_seconds", site=str(idsite)
                )
                if value is None or value < horizon:
                    return False
            return True

        wait_until(done, timeout, lambda: f"no cycle up to {horizon}:\n{self.output[-3000:]}")
        assert self.alive(), self.output[-3000:]


def wait_until(
    predicate: Callable[[], bool], timeout: float, why: Callable[[], str] | str = "timeout"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(why() if callable(why) else why)
        time.sleep(0.05)


def site_zone(timezone: str) -> Any:
    return UTC if timezone == "UTC" else ZoneInfo(timezone)


def expected_up_to(
    simulator: MatomoSimulator, sites: dict[int, str], first: date, horizon: int
) -> dict[str, dict[str, Any]]:
    """Key -> visit of every visit of `sites` (id -> timezone) from `first` whose last action
    is at or before `horizon`, as the simulator serves it now."""
    want: dict[str, dict[str, Any]] = {}
    for idsite, zone in sites.items():
        last = datetime.fromtimestamp(horizon, site_zone(zone)).date()
        day = first
        while day <= last:
            for visit in simulator.expected_visits(idsite, day):
                if visit["lastActionTimestamp"] <= horizon:
                    want[f"{idsite}:{int(visit['idVisit'])}"] = visit
            day += timedelta(days=1)
    return want


def horizon_day(horizon: int, zone: str) -> date:
    return datetime.fromtimestamp(horizon, site_zone(zone)).date()
