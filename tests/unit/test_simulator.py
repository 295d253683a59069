"""The Matomo simulator's configuration without serving it: versions, costs, faults, hazards and
sites round-trip through their dicts and JSON, and bad values are refused; a site added while
it runs is answered for (its requests handled in-process)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig, SimSite
from support.simulator import DAY, TOKEN, hazard_config, main_config, peer_config


def test_matomo_version_is_checked_and_kept() -> None:
    with pytest.raises(ValueError, match=r"matomo_version '4\.0'"):
        peer_config(matomo_version="4.0")
    cfg = peer_config(matomo_version="4.15.1")
    assert SimConfig.from_dict(orjson.loads(orjson.dumps(cfg.to_dict()))) == cfg
    assert SimConfig.from_dict({"token": TOKEN, "sites": []}).matomo_version == "5.0.2"


def test_live_cost_and_load_config() -> None:
    cfg = peer_config(workers=3, page_cost_s=0.02, visit_cost_s=0.0002)
    assert cfg.live_cost_s(0) == 0.02
    assert cfg.live_cost_s(1000) == pytest.approx(0.22)
    again = SimConfig.from_dict(orjson.loads(orjson.dumps(cfg.to_dict())))
    assert (again.workers, again.page_cost_s, again.visit_cost_s) == (3, 0.02, 0.0002)
    with pytest.raises(ValueError):
        peer_config(workers=-1)
    with pytest.raises(ValueError):
        peer_config(visit_cost_s=-0.1)


def test_config_round_trip(tmp_path: Path) -> None:
    cfg = main_config(basic_auth=("u", "p"), faults=[Fault(kind="delay", delay_s=0.5, times=-1)])
    d = cfg.to_dict()
    assert d["basic_auth"] == ["u", "p"] and d["faults"][0]["kind"] == "delay"
    path = tmp_path / "sim.json"
    path.write_bytes(orjson.dumps(d))
    again = SimConfig.from_json(path)
    assert again == cfg and again.to_dict() == d
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "explode"})
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "status", "time": 3})  # typo for "times"
    with pytest.raises(ValueError):
        SimConfig.from_dict(
            {"token": "t", "sites": [{"idsite": 1, "name": "x", "timezone": "Mars/Base"}]}
        )
    with pytest.raises(ValueError):
        SimConfig(token="t", sites=[SimSite(1, "a"), SimSite(1, "b")])


def test_hazard_config_keys_round_trip() -> None:
    cfg = hazard_config(unstable_ties=True)
    d = cfg.to_dict()
    assert d["unstable_ties"] is True
    assert d["sites"][0]["tie_group"] == 10 and d["sites"][1]["late"][DAY] == 15
    again = SimConfig.from_dict(orjson.loads(orjson.dumps(d)))
    assert again == cfg and SimConfig.from_dict({"token": "t", "sites": []}).unstable_ties is False
    site = {"idsite": 1, "name": "x", "visits": {DAY: 5}}
    assert SimSite.from_dict(site).tie_group == 1 and SimSite.from_dict(site).late == {}
    assert SimSite.from_dict({**site, "late": {DAY: 5}}).late == {DAY: 5}
    assert SimSite.from_dict({**site, "default_visits": 3, "late": {"2024-03-11": 3}})
    for bad in ({"tie_group": 0}, {"late": {DAY: 6}}, {"late": {DAY: -1}},
                {"late": {"2024-03-11": 1}}, {"late": {"nope": 1}}):  # fmt: skip
        with pytest.raises(ValueError):
            SimSite.from_dict({**site, **bad})


def test_a_site_added_while_serving_is_listed_and_served() -> None:
    """MatomoSimulator.add_site, as a Matomo administrator creating a website: listed and
    served from the next request on; an id already taken is refused."""
    sim = MatomoSimulator(SimConfig(token=TOKEN, sites=[SimSite(1, "One", default_visits=3)]))

    def api(method: str, **params: str) -> object:
        reply = sim.handle({"module": "API", "format": "json", "token_auth": TOKEN,
                            "method": method, **params}, False, None)  # fmt: skip
        assert reply.status == 200
        return orjson.loads(reply.body)

    assert api("SitesManager.getSitesIdWithAtLeastViewAccess") == [1]
    sim.add_site(SimSite(7, "Seven", "Europe/Paris", default_visits=5))
    assert api("SitesManager.getSitesIdWithAtLeastViewAccess") == [1, 7]
    listed = api("SitesManager.getSitesWithAtLeastViewAccess")
    assert isinstance(listed, list) and listed[1]["timezone"] == "Europe/Paris"
    visits = api("Live.getLastVisitsDetails", idSite="7", period="day", date=DAY)
    assert isinstance(visits, list) and len(visits) == 5
    with pytest.raises(ValueError, match="site 7 already exists"):
        sim.add_site(SimSite(7, "Again"))
    with pytest.raises(ValueError, match="Mars/Base"):
        sim.add_site(SimSite(8, "Bad", "Mars/Base"))


def test_actions_per_visit_makes_heavy_visits_and_round_trips() -> None:
    """Single-page apps and bots: every visit has that many entries, timed to end at its last
    action, the visit's counts agreeing; sites without it keep their 1 to 6 entries."""
    heavy = SimSite(idsite=1, name="spa", visits={DAY: 5}, actions_per_visit=101)
    light = SimSite(idsite=2, name="light", visits={DAY: 5})
    sim = MatomoSimulator(SimConfig(token=TOKEN, sites=[heavy, light]))
    for visit in sim.expected_visits(1, DAY):
        entries = visit["actionDetails"]
        assert len(entries) == 101
        assert entries[-1]["timestamp"] - entries[0]["timestamp"] < 86_400
        assert visit["actions"] == sum(1 for e in entries if e["type"] != "goal")
        assert len(orjson.dumps(visit)) > 30_000
    assert all(1 <= len(v["actionDetails"]) <= 6 for v in sim.expected_visits(2, DAY))
    again = SimSite.from_dict(
        orjson.loads(orjson.dumps(SimConfig(TOKEN, [heavy]).to_dict()))["sites"][0]
    )
    assert again.actions_per_visit == 101
    with pytest.raises(ValueError, match="actions_per_visit"):
        SimSite(idsite=3, name="x", actions_per_visit=-1).validate()
