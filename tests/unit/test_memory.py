"""The malloc arena cap (ops/memory.py), in a child process: it changes the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = "from matomo_kafka.ops.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def child(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_the_cap_is_set_on_glibc_unless_the_user_set_malloc_arena_max() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert child(env) == "True"
    assert child({**env, "MALLOC_ARENA_MAX": "4"}) == "False"
