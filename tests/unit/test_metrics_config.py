"""Metrics keys (issue #5): a bad METRICS_TEXTFILE, METRICS_PUSHGATEWAY (a password in it never
shown) or MATOMO_STRICT_SITES is one config line, exit 2, before any network."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import run_cli
from support.parm import write_parm


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"METRICS_TEXTFILE": "/tmp/metrics.txt"}, "METRICS_TEXTFILE: must end in .prom"),
        ({"METRICS_TEXTFILE": "/no/such/dir/m.prom"}, "METRICS_TEXTFILE: names a file"),
        ({"METRICS_PUSHGATEWAY": "pushgateway:9091"}, "METRICS_PUSHGATEWAY: must be an http"),
        ({"METRICS_PUSHGATEWAY": "http://u:sps-secret-77@pg:9091"}, "must not embed"),
        ({"MATOMO_STRICT_SITES": "maybe"}, "MATOMO_STRICT_SITES"),
    ],
)
def test_bad_metrics_keys(tmp_path: Path, overrides: dict[str, str], expected: str) -> None:
    values = {"MATOMO_API_URL": "http://127.0.0.1:9/index.php", **overrides}
    from support.parm import base_values

    directory = write_parm(tmp_path / "parm", **base_values(tmp_path, "x", "t", **values))
    result = run_cli("run", "--parm-dir", str(directory))
    assert result.code == 2, result.output
    assert expected in result.stderr
    assert "sps-secret-77" not in result.output
    assert not (tmp_path / "data").exists()
