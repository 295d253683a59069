"""The CLI's errors that need the simulator over HTTP: a checkpoint it cannot read is reported by
`status`, next to the site's timezone Matomo gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.simulator]


def test_unreadable_checkpoint_is_reported(tmp_path: Path, sim_factory: Any) -> None:
    from support.runs import two_sites

    simulator = sim_factory(two_sites(10))
    values = base_values(tmp_path, simulator.url, "t", MATOMO_ID_SITE="1")
    parm = write_parm(tmp_path / "parm", **values)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "filterdate1.txt").write_text("garbage\n")
    status = run_cli("status", "--parm-dir", str(parm))
    assert status.code == 1 and "unreadable" in status.stdout
