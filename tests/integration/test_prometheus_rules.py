"""The alert rules of deploy/prometheus/ (issue 24), checked by promtool from Debian's
`prometheus` package (scripts/prometheus-tools.sh installs it; without it these tests fail):
they load, every alert fires on the series of its unit tests and stays silent on others, the
PrometheusRule holds the same rules, and each alert says what to do, with a runbook entry.
tests/integration/test_prometheus_real.py evaluates them on a real Prometheus."""

from __future__ import annotations

import re
import subprocess

import yaml

from support.prometheus import (
    PROMETHEUS_RULE,
    REPO,
    RULE_TESTS,
    RULES,
    alert_rules,
    binary,
    value_sides,
)

OPERATIONS = REPO / "docs" / "operations.md"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tests = sorted(RULE_TESTS.glob("*.yml"))
    assert tests
    result = _promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a case where it fires (labels and annotations checked) and one where it
    stays silent."""
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in group.get("alert_rule_test", []):
                alerts = case.get("exp_alerts") or []
                (fired if alerts else silent).add(case["alertname"])
                for alert in alerts:
                    assert alert.get("exp_annotations"), f"{case['alertname']}: annotations"
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_the_prometheusrule_holds_the_same_rules() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))


def test_each_alert_says_what_to_do() -> None:
    """A severity, a summary, a description ending on its runbook entry, which exists."""
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(encoding="utf-8"), re.M)
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        anchor = f"alert-{name.lower()}"
        assert notes["runbook_url"] == f"docs/operations.md#{anchor}", name
        assert notes["description"].endswith(f"Runbook: {notes['runbook_url']}"), name
        assert anchor in anchors, f"docs/operations.md has no section for {name}"
        assert value_sides(rule["expr"]), name
