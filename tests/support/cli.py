"""`matomo-kafka` run as a child process, as users run it, with only parm/ counting."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from matomo_kafka.config.keys import ALL_KEYS

#: Every CLI output of the current test: tests/conftest.py scans it for the known secrets
#: (support/secrets.py) after each test, then empties it.
CLI_OUTPUTS: list[str] = []


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any config key (KAFKA_PRODUCER_* included) nor
    MATOMO_SHARD / MATOMO_SUMMARY_FILE, so only parm/ counts."""
    drop = {*ALL_KEYS, "MATOMO_SHARD", "MATOMO_SUMMARY_FILE"}
    env = {key: value for key, value in os.environ.items()
           if key not in drop and not key.startswith("KAFKA_PRODUCER_")}  # fmt: skip
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "matomo_kafka.cli", *args]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> CliResult:
    result = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )
    CLI_OUTPUTS.append(result.stdout + result.stderr)
    return CliResult(result.returncode, result.stdout, result.stderr)
