"""Goals: the two goals the simulated visits convert (a thank-you page, a manual newsletter
signup), as Matomo lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matomo_kafka.simulator.modules.params import site_param
from matomo_kafka.simulator.server import _json_reply, _Reply
from matomo_kafka.simulator.visits.catalogue import _GOALS

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def get_goals(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """Goals.getGoals: [] for a site Matomo does not know."""
    site, err = site_param(sim, params, unknown_is_empty=True)
    if site is None:
        assert err is not None
        return err
    sid = site.idsite
    return _json_reply(
        [
            {
                "idsite": sid,
                "idgoal": 1,
                "name": _GOALS[1],
                "description": "URL contains thank-you",
                "match_attribute": "url",
                "pattern": "thank-you",
                "pattern_type": "contains",
                "case_sensitive": 0,
                "allow_multiple": 0,
                "revenue": 10,
                "deleted": 0,
                "event_value_as_revenue": 0,
            },
            {
                "idsite": sid,
                "idgoal": 2,
                "name": _GOALS[2],
                "description": "triggered manually with idgoal",
                "match_attribute": "manually",
                "allow_multiple": 1,
                "revenue": 0,
                "deleted": 0,
                "event_value_as_revenue": 0,
            },
        ]
    )
