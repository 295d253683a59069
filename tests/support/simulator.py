"""Simulator configurations of the simulator's own tests (tests/unit/test_simulator.py checks
them without a server, tests/integration/test_simulator.py serves them over HTTP)."""

from __future__ import annotations

from typing import Any

from matomo_kafka.simulator import SimConfig, SimSite

TOKEN = "0123456789abcdef0123456789abcdef"
DAY = "2024-03-10"


def peer_config(**kw: Any) -> SimConfig:
    """The two sites of the captured Matomo (5 visits on 2024-03-10 like the samples)."""
    return SimConfig(
        token=TOKEN,
        sites=[
            SimSite(
                1, "Peer Site UTC", "UTC", default_visits=3,
                visits={"2024-03-05": 0, "2024-03-10": 5},
                main_url="https://utc.example.org", ts_created="2024-03-01 00:00:00",
            ),
            SimSite(
                2, "Peer Site Paris", "Europe/Paris", default_visits=2, currency="EUR",
                main_url="https://paris.example.org", ts_created="2024-03-01 00:00:00",
            ),
        ],
        **kw,
    )  # fmt: skip


def main_config(**kw: Any) -> SimConfig:
    return SimConfig(
        token=TOKEN,
        sites=[
            SimSite(1, "Peer Site UTC", "UTC", default_visits=20,
                    visits={"2024-03-05": 0, "2024-03-10": 257}),
            SimSite(2, "Peer Site Paris", "Europe/Paris", default_visits=40, currency="EUR",
                    visits={"2024-03-10": 300, "2024-03-31": 150, "2024-10-27": 150}),
            SimSite(3, "Big Shop", "UTC", visits={"2024-03-10": 1_000_000}),
            SimSite(4, "No Live", "UTC", default_visits=5, live_disabled=True),
            SimSite(5, "Hidden", "UTC", default_visits=5),
            SimSite(6, "New York", "America/New_York", default_visits=60),
        ],
        denied_sites=[5],
        **kw,
    )  # fmt: skip


def hazard_config(**kw: Any) -> SimConfig:
    """Site 1: 300 UTC visits in ties of 10; site 2: 200 Paris visits, 15 of them late;
    site 3: a 1,000,000-visit day (natural ties); site 4: a DST day cut in Paris time."""
    return SimConfig(
        token=TOKEN,
        sites=[
            SimSite(1, "Ties", "UTC", visits={DAY: 300}, tie_group=10),
            SimSite(2, "Late", "Europe/Paris", default_visits=7, visits={DAY: 200},
                    late={DAY: 15, "2024-03-11": 3}),
            SimSite(3, "Big Shop", "UTC", visits={DAY: 1_000_000}),
            SimSite(4, "Short day", "Europe/Paris", visits={"2024-03-31": 2000}),
        ],
        **kw,
    )  # fmt: skip
