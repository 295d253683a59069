"""Where a visit comes from: the referrer fields of the visit (direct entry, search engines,
campaigns, websites, social networks, with their weights) and the copy its goals carry."""

from __future__ import annotations

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.catalogue import _weighted
from matomo_kafka.simulator.visits.php_json import _p


def _referrer(
    rtype: str, type_name: str, name: str, keyword: str, url: str | None,
    se_url: str | None = None, se_icon: str | None = None,
    social_url: str | None = None, social_icon: str | None = None,
) -> tuple[JSON, tuple[str, str | None, str | None]]:  # fmt: skip
    visit_fields: JSON = {
        "referrerType": rtype,
        "referrerTypeName": type_name,
        "referrerName": name,
        "referrerKeyword": keyword,
        "referrerKeywordPosition": None,
        "referrerUrl": url,
        "referrerSearchEngineUrl": se_url,
        "referrerSearchEngineIcon": se_icon,
        "referrerSocialNetworkUrl": social_url,
        "referrerSocialNetworkIcon": social_icon,
    }
    name, keyword = _p(name), _p(keyword)
    visit_fields["referrerName"], visit_fields["referrerKeyword"] = name, keyword
    goal_fields = (rtype, name or None, keyword or None)
    return visit_fields, goal_fields


_SE_ICONS = "plugins/Morpheus/icons/dist/searchEngines/"
_REFERRERS = _weighted(
    [
        (_referrer("direct", "Direct Entry", "", "", None), 40),
        (
            _referrer(
                "search", "Search Engines", "Google", "Keyword not defined",
                "https://www.google.com/", "http://google.com", _SE_ICONS + "google.com.png",
            ),
            25,
        ),
        (
            _referrer(
                "search", "Search Engines", "Google", "peer",
                "https://www.google.com/search?q=peer", "http://google.com",
                _SE_ICONS + "google.com.png",
            ),
            5,
        ),
        (
            _referrer(
                "search", "Search Engines", "DuckDuckGo", "Keyword not defined",
                "https://duckduckgo.com/", "http://duckduckgo.com",
                _SE_ICONS + "duckduckgo.com.png",
            ),
            5,
        ),
        (
            _referrer(
                "search", "Search Engines", "Qwant", "café paris", "https://www.qwant.com/",
                "http://qwant.com", _SE_ICONS + "qwant.com.png",
            ),
            4,
        ),
        (
            _referrer(
                "campaign", "Campaigns", "spring", "news.example.com",
                "https://news.example.com/article",
            ),
            8,
        ),
        (_referrer("website", "Websites", "news.example.com", "", "https://news.example.com/"), 8),
        (
            _referrer(
                "social", "Social Networks", "LinkedIn", "", "https://www.linkedin.com/",
                social_url="https://linkedin.com",
                social_icon="plugins/Morpheus/icons/dist/socials/linkedin.com.png",
            ),
            5,
        ),
    ]
)  # fmt: skip
