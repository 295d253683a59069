"""A COLONNE_ANNOMYSE entry that matches nothing is never silent (issue 27): `check` tries the
list on real answers of each site, `run` says it at the end (log and summary file), and the
raw values of the listed columns never reach the topic, copies included. Real commands,
the simulator over HTTP, the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite
from support.cli import clean_env, run_cli
from support.kafka import read_topic
from support.parm import TOKEN, base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

COLUMNS = "visitIp,userId,actionDetails.url,ipAddress"
UNMATCHED = "COLONNE_ANNOMYSE: ipAddress matched no field in the"


def test_an_entry_matching_nothing_is_reported_by_check_and_at_the_end_of_a_run(
    tmp_path: Path, topic: str
) -> None:
    site = SimSite(idsite=1, name="one", default_visits=4)
    sim = MatomoSimulator(SimConfig(token=TOKEN, sites=[site])).start()
    try:
        values = base_values(tmp_path, sim.url, topic, MATOMO_ID_SITE="1",
                             COLONNE_ANNOMYSE=COLUMNS)  # fmt: skip
        parm = write_parm(tmp_path / "parm", **values)
        env = clean_env(COLUMNS="250", MATOMO_TEST_NOW="2024-03-04T12:00:00Z")
        check = run_cli("check", "--parm-dir", str(parm), env=env)
        assert check.code == 0, check.output
        assert "ipAddress matched no field in the 4 visit(s)" in check.stdout, check.stdout
        assert "warn" in check.stdout

        summary = tmp_path / "summary.json"
        run = run_cli("run", "--run-date", "2024-03-03", "--parm-dir", str(parm),
                      "--summary-file", str(summary), env=env)  # fmt: skip
        assert run.code == 0, run.output
        assert run.stderr.count(UNMATCHED) == 1, run.stderr
        warnings = json.loads(summary.read_text())["warnings"]
        assert len(warnings) == 1 and warnings[0].startswith(UNMATCHED), warnings
        assert "visitIp" not in " ".join(warnings)

        records = read_topic(topic)
        assert records, "the run sent visits"
        for record in records:
            visit = json.loads(record.value)
            assert len(visit["visitIp"]) == 64
            for action in visit["actionDetails"]:
                if action.get("url") is not None:
                    assert len(action["url"]) == 64
                if action.get("type") in ("action", "download", "outlink") and action.get("url"):
                    # Matomo repeats the URL in the subtitle: the same pseudonym there.
                    assert action.get("subtitle") in (None, action["url"]), action
    finally:
        sim.stop()
