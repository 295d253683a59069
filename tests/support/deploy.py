"""What the deploy/ examples' tests share: the manifests, and commands run with their output
kept for the secrets scan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from support.cli import CLI_OUTPUTS
from support.kafka import REPO

DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    CLI_OUTPUTS.append(result.stdout + result.stderr)
    return result


def manifests(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if doc]


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return only
