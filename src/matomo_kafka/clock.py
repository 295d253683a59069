"""The time days and horizons are read against: the system's clock, or, for tests only, the
one MATOMO_TEST_NOW sets.

`run` and `follow` decide from "now" which days are closed and, for `follow`, up to which
second a day is read. End-to-end tests play hours and midnights against the simulator's own
clock in seconds, so the tool's clock must be set from outside the process, and move while
`follow` runs: MATOMO_TEST_NOW holds a Unix time or an ISO 8601 instant (fixed), or
`@/path/file` (the file holding one, read again at every call: the test moves it). It is never
set in production: when it is, the commands say so in their log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from matomo_kafka.errors import ConfigError

#: Returns the current instant (aware, UTC).
Clock = Callable[[], datetime]

#: The environment variable of the test clock (never a parm key).
TEST_NOW = "MATOMO_TEST_NOW"


def system_clock() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str, where: str) -> datetime:
    """A Unix time (seconds, decimals allowed) or an ISO 8601 instant with its offset."""
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        problem = (
            f"{where}: expected a Unix time or an ISO 8601 instant with its offset "
            "(e.g. 2024-03-05T12:00:00+00:00)"
        )
        raise ConfigError([problem])
    return moment.astimezone(UTC)


class FileClock:
    """A clock read from a file at every call: a test moves it by rewriting the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self()  # a missing or invalid file is a configuration error at once

    def __call__(self) -> datetime:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{TEST_NOW}: cannot read {self.path}: {exc}"]) from None
        return parse_instant(text, f"{TEST_NOW} file {self.path}")


def clock_from_environment(environ: Mapping[str, str] | None = None) -> tuple[Clock, str | None]:
    """The clock to use, and what MATOMO_TEST_NOW made of it (None: the system's clock)."""
    value = (os.environ if environ is None else environ).get(TEST_NOW, "").strip()
    if not value:
        return system_clock, None
    if value.startswith("@"):
        path = Path(value[1:])
        return FileClock(path), f"read from {path} at every use"
    fixed = parse_instant(value, TEST_NOW)
    return (lambda: fixed), f"fixed at {fixed.isoformat()}"
