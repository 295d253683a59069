"""The real Matomo answers under tests/fixtures/ (see tests/fixtures/README.md), by name.

A missing fixture fails the test that asked for it, naming the file: a test never passes on
nothing because a sample was not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MATOMO_5 = FIXTURES / "matomo-5.0.2"
MATOMO_4 = FIXTURES / "matomo-4.15.1"


def sample_path(name: str, version: Path = MATOMO_5) -> Path:
    """The fixture file `name` (with its extension); fails the test if it is missing."""
    path = version / name
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing (see tests/fixtures/README.md)")
    return path


def sample_bytes(name: str, version: Path = MATOMO_5) -> bytes:
    """The body Matomo answered for `name` (`name.json`, or `name.html`)."""
    path = version / f"{name}.json"
    if not path.is_file() and (version / f"{name}.html").is_file():
        path = version / f"{name}.html"
    return sample_path(path.name, version).read_bytes()


def sample_json(name: str, version: Path = MATOMO_5) -> Any:
    return orjson.loads(sample_bytes(name, version))


def sample_status(name: str, version: Path = MATOMO_5) -> int:
    """The HTTP status Matomo answered `name` with."""
    return int(sample_path(f"{name}.status", version).read_text())


def sample_files(pattern: str, version: Path = MATOMO_5, at_least: int = 1) -> list[Path]:
    """The fixtures matching a glob; fails the test when fewer than `at_least` match."""
    files = sorted(version.glob(pattern))
    if len(files) < at_least:
        pytest.fail(f"{version}/{pattern}: {len(files)} fixture(s), expected {at_least} or more")
    return files
