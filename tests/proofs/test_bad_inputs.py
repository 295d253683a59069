"""Bad inputs through the real command (issue #3): configuration values, checkpoint files
(garbage, negative, huge, in the future, unicode, empty, a directory, unreadable...) and Matomo
answers of the wrong shape (a tiny HTTP server on 127.0.0.1 answers what the simulator cannot):
each gives one clear error line (`config:` lines for configuration), a non-zero exit, and leaves
the checkpoint files byte-identical (or absent) with nothing sent. Odd but valid inputs (unicode
keys, huge numbers, ids as text...) go through unchanged. The cases are BAD_INPUTS of
tests/support/reliability.py (a case given `bug=`, a known open bug, runs as a strict xfail; none
is open now).
Every output and message is scanned for secrets and raw pseudonymised values as the cases go.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from support import reliability as rel
from support.cli import CLI_OUTPUTS


@pytest.fixture(scope="module")
def inputs(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rel.InputContext]:
    collector = rel.Collector()
    context = rel.InputContext.open(kafka_bootstrap, tmp_path_factory.mktemp("inputs"), collector)
    try:
        yield context
    finally:
        context.close()
        CLI_OUTPUTS.extend(collector.outputs)


def _param(case: rel.BadInput) -> Any:
    marks = []
    if case.bug:
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.bug))
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.kafka
@pytest.mark.simulator
@pytest.mark.slow
@pytest.mark.parametrize("case", [_param(case) for case in rel.BAD_INPUTS])
def test_bad_input(inputs: rel.InputContext, case: rel.BadInput) -> None:
    outcome = rel.run_bad_input(case, inputs)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    scan = inputs.collector.scan()
    if scan.problems:  # pytest.fail, so that a leak never passes as an expected failure
        pytest.fail("secrets scan: " + "; ".join(scan.problems[:5]))
    assert not outcome.problems, outcome.describe()


def test_the_catalogue_covers_what_issue_3_asks() -> None:
    """At least 30 distinct cases here alone (tests/unit/test_cli_errors.py and test_config.py
    have more), over every kind of input."""
    names = [case.name for case in rel.BAD_INPUTS]
    assert len(names) == len(set(names)) >= 30
    kinds = Counter(case.category for case in rel.BAD_INPUTS)
    assert {"config", "value", "checkpoint", "matomo", "valid"} <= set(kinds), kinds
    for wanted in ("day-garbage", "offset-negative", "offset-beyond-64-bits", "day-in-the-future",
                   "day-fullwidth-digits", "day-empty", "day-is-a-directory",
                   "day-unreadable-permissions", "live-dict-not-list",
                   "live-visit-without-idvisit", "live-page-longer-than-limit", "live-html-200",
                   "live-idvisit-beyond-64-bits", "live-unicode-keys",
                   "dimension-named-like-a-field"):  # fmt: skip
        assert wanted in names, wanted
