"""CustomDimensions: the two dimensions the simulated visits carry (dimension1, visit scope;
dimension2, action scope), as Matomo lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matomo_kafka.simulator.modules.params import site_param
from matomo_kafka.simulator.server import _json_reply, _Reply

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def get_configured_custom_dimensions(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """CustomDimensions.getConfiguredCustomDimensions: [] for a site Matomo does not know."""
    site, err = site_param(sim, params, unknown_is_empty=True)
    if site is None:
        assert err is not None
        return err
    sid = str(site.idsite)
    dims = [("2", "Page Type", "action"), ("1", "Plan", "visit")]
    return _json_reply(
        [
            {
                "idcustomdimension": dim_id,
                "idsite": sid,
                "name": name,
                "index": "1",
                "scope": scope,
                "active": True,
                "extractions": [],
                "case_sensitive": True,
            }
            for dim_id, name, scope in dims
        ]
    )
