"""Helpers of the tests of deploy/prometheus/ and deploy/grafana/ (issue 24): where the files
are, Debian's Prometheus binaries (scripts/prometheus-tools.sh installs them; a test fails,
never skips, without them), and the alert rules read back as data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "matomo-kafka.rules.yml"
PROMETHEUS_RULE = REPO / "deploy" / "prometheus" / "prometheusrule.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests"
DASHBOARD = REPO / "deploy" / "grafana" / "matomo-kafka.json"


def binary(name: str) -> str:
    """The path of one of Debian's Prometheus binaries; fails (never skips) without it."""
    path = shutil.which(name)
    assert path is not None, (
        f"{name} not found: `bash scripts/prometheus-tools.sh install` (scripts/test.sh runs it) "
        "installs Debian's prometheus, prometheus-node-exporter and prometheus-pushgateway"
    )
    return path


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file, in order."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def split_top_level(expr: str, words: tuple[str, ...]) -> list[str]:
    """`expr` cut at each of `words` (binary operators) found outside parentheses, brackets,
    braces and strings; the pieces stripped."""
    pieces: list[str] = []
    depth, start, index, quote = 0, 0, 0, ""
    while index < len(expr):
        char = expr[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for word in words:
                end = index + len(word)
                alpha = word[0].isalpha()
                if expr.startswith(word, index) and (
                    not alpha
                    or ((index == 0 or not expr[index - 1].isalnum())
                        and (end >= len(expr) or not expr[end].isalnum()))
                ):  # fmt: skip
                    pieces.append(expr[start:index].strip())
                    start = index = end
                    break
            else:
                index += 1
            continue
        index += 1
    pieces.append(expr[start:].strip())
    return pieces


def value_sides(expr: str) -> list[str]:
    """The value side of each `value > threshold` an alert's expression is made of (joined
    by `or`): what must return series once the commands' metrics are scraped."""
    sides = []
    for part in split_top_level(expr, ("or",)):
        compared = split_top_level(part, (">=", "<=", "==", "!=", ">", "<"))
        assert len(compared) == 2, f"not `value > threshold`: {part}"
        sides.append(compared[0])
    return sides
