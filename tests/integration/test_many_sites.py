"""Hundreds of sites in one run (issue #16), in both delivery modes: every visit of every site
arrives once, every checkpoint moves to the next day, and Matomo is asked for the metadata of
all the sites in a few bulk requests (one SitesManager call, one API.getBulkRequest per 50
sites), not three requests a site."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from matomo_kafka.model import Cursor
from matomo_kafka.simulator import MatomoSimulator, SimSite
from support.cli import run_cli
from support.kafka import read_records
from support.parm import base_values, write_parm
from support.runs import cursor

pytestmark = [pytest.mark.kafka, pytest.mark.simulator, pytest.mark.slow]

SITES = 200
DAYS = [date(2024, 3, 1), date(2024, 3, 2)]
RUN_DATE = "2024-03-03"


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_two_hundred_sites_deliver_every_visit_once(
    delivery: str, tmp_path: Path, topic: str, sim_factory: Callable[..., MatomoSimulator]
) -> None:
    sites = [
        SimSite(idsite=idsite, name=f"site {idsite}", timezone="UTC", default_visits=0,
                visits={"2024-03-01": 1 + idsite % 4, "2024-03-02": idsite % 3})
        for idsite in range(1, SITES + 1)
    ]  # fmt: skip
    simulator = sim_factory(sites)
    values = base_values(tmp_path, simulator.url, topic, DELIVERY=delivery,
                         MATOMO_ID_SITE=",".join(str(s.idsite) for s in sites),
                         MATOMO_MAX_CONCURRENCY="4")  # fmt: skip
    parm = write_parm(tmp_path / "parm", **values)
    result = run_cli("run", "--parm-dir", str(parm), "--run-date", RUN_DATE, "-q")
    assert result.code == 0, result.output

    expected = {
        f"{site.idsite}:{int(visit['idVisit'])}"
        for site in sites
        for day in DAYS
        for visit in simulator.expected_visits(site.idsite, day)
    }
    counts = Counter(key for key, _ in read_records(topic))
    assert set(counts) == expected and max(counts.values()) == 1
    assert all(cursor(tmp_path, s.idsite) == Cursor(date(2024, 3, 3), 0) for s in sites)
    methods = Counter(str(request["method"]) for request in simulator.requests)
    assert methods["SitesManager.getSitesWithAtLeastViewAccess"] == 1
    assert methods["API.getBulkRequest"] == SITES // 50
    assert methods["SitesManager.getSiteFromId"] == 0
    assert methods["CustomDimensions.getConfiguredCustomDimensions"] == 0
