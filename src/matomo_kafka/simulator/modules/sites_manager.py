"""SitesManager: the sites the token can view, and each site's settings as Matomo gives them
(sites added while the simulator serves included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import JSON, SimSite
from matomo_kafka.simulator.modules.params import site_param
from matomo_kafka.simulator.server import _json_reply, _Reply
from matomo_kafka.simulator.visits.catalogue import _CURRENCIES, _TZ_NAMES

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def get_sites_id_with_at_least_view_access(sim: MatomoSimulator, _params: dict[str, str]) -> _Reply:
    """SitesManager.getSitesIdWithAtLeastViewAccess: the ids of the sites the token can view."""
    return _json_reply(sorted(i for i in sim._sites if i not in sim.config.denied_sites))


def get_site_from_id(sim: MatomoSimulator, params: dict[str, str]) -> _Reply:
    """SitesManager.getSiteFromId: one site's settings, or Matomo's refusal."""
    site, err = site_param(sim, params)
    if site is None:
        assert err is not None
        return err
    return _json_reply(site_dict(site))


def get_sites_with_at_least_view_access(sim: MatomoSimulator, _params: dict[str, str]) -> _Reply:
    """SitesManager.getSitesWithAtLeastViewAccess: every site the token can view, each as
    getSiteFromId gives it."""
    return _json_reply(
        [site_dict(s) for i, s in sorted(sim._sites.items())
         if i not in sim.config.denied_sites]
    )  # fmt: skip


def site_dict(site: SimSite) -> JSON:
    """A site as getSiteFromId gives it."""
    currency_name = _CURRENCIES.get(site.currency, (site.currency, site.currency))[1]
    created = site.ts_created
    if created is None:
        created = f"{min(site.visits)} 00:00:00" if site.visits else "2024-01-01 00:00:00"
    return {
        "idsite": site.idsite,
        "name": site.name,
        "main_url": site.base_url(),
        "ts_created": created,
        "ecommerce": 0,
        "sitesearch": 1,
        "sitesearch_keyword_parameters": "",
        "sitesearch_category_parameters": "",
        "timezone": site.timezone,
        "currency": site.currency,
        "exclude_unknown_urls": 0,
        "excluded_ips": "",
        "excluded_parameters": "",
        "excluded_user_agents": "",
        "excluded_referrers": "",
        "group": "",
        "type": "website",
        "keep_url_fragment": 0,
        "creator_login": "anonymous",
        "timezone_name": _TZ_NAMES.get(site.timezone, site.timezone),
        "currency_name": currency_name,
    }
