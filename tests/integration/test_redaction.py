"""Redaction through the real command against the simulator and the broker: a short salt (`s`) no
longer mangles `check` and `run` output (`Europe/Paris` into `Europe/Pari***`), is warned about once
and never printed; a long one is not warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite
from support.cli import clean_env, run_cli
from support.parm import base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

SHORT_SALT_WARNING = "SALAGE: shorter than 16 bytes"
TOKEN_8 = "tk8-Zq7x"  # exactly 8 characters: the shortest secret that is masked


def test_short_salt_keeps_check_and_run_output_intact(tmp_path: Path, topic: str) -> None:
    """salt `s`, token of 8 characters planted in a site's name: check shows the timezone and
    `all sites` whole and the site name with the token masked; run shows `sites` whole and
    no *** at all (nothing secret in it); each warns once about the short salt."""
    sites = [
        SimSite(idsite=1, name="plain", timezone="UTC", default_visits=3),
        SimSite(idsite=2, name=f"shop {TOKEN_8}", timezone="Europe/Paris", default_visits=3),
    ]
    simulator = MatomoSimulator(SimConfig(token=TOKEN_8, sites=sites)).start()
    try:
        values = base_values(tmp_path, simulator.url, topic, SALAGE="s", MATOMO_ID_SITE="all",
                             MATOMO_API_TOKEN=TOKEN_8)  # fmt: skip
        parm = write_parm(tmp_path / "parm", **values)
        env = clean_env(COLUMNS="200")
        check = run_cli("check", "--parm-dir", str(parm), env=env)
        assert check.code == 0, check.output
        assert "Europe/Paris" in check.stdout and "all sites" in check.stdout
        assert "'shop ***'" in check.stdout and TOKEN_8 not in check.output
        assert check.output.count(SHORT_SALT_WARNING) == 1, check.output

        run = run_cli("run", "--run-date", "2024-03-03", "--parm-dir", str(parm), env=env)
        assert run.code == 0, run.output
        assert "sites 1,2" in run.stderr
        assert "***" not in run.output and TOKEN_8 not in run.output
        assert run.output.count(SHORT_SALT_WARNING) == 1, run.output
    finally:
        simulator.stop()


def test_long_salt_is_not_warned_about_and_a_short_one_never_printed(
    tmp_path: Path, topic: str
) -> None:
    """The warning names the key, never the value: checked with a distinctive short salt."""
    simulator = MatomoSimulator(
        SimConfig(token=TOKEN_8, sites=[SimSite(idsite=1, name="one", default_visits=1)])
    ).start()
    try:
        for salt, warnings in (("16-bytes-salt-ok", 0), ("Qz7%kW", 1)):
            values = base_values(tmp_path, simulator.url, topic, SALAGE=salt,
                                 MATOMO_ID_SITE="1", MATOMO_API_TOKEN=TOKEN_8)  # fmt: skip
            parm = write_parm(tmp_path / f"parm-{warnings}", **values)
            check = run_cli("check", "--parm-dir", str(parm))
            assert check.code == 0, check.output
            assert check.output.count(SHORT_SALT_WARNING) == warnings, (salt, check.output)
            assert "Qz7%kW" not in check.output
    finally:
        simulator.stop()
