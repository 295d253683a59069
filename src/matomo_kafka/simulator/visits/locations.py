"""Where a visitor is and speaks: language and location (as a provider without a city
database locates them), with their weights; `_GEO_UNKNOWN` is also what an anonymised
location becomes."""

from __future__ import annotations

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.catalogue import _weighted
from matomo_kafka.simulator.visits.devices import _DEV


def _geo(continent: str, ccode: str, country: str, code: str) -> JSON:
    return {
        "continent": continent,
        "continentCode": ccode,
        "country": country,
        "countryCode": code,
        "countryFlag": f"{_DEV}flags/{code}.png",
        "region": None,
        "regionCode": None,
        "city": None,
        "location": country,
        "latitude": None,
        "longitude": None,
    }


_GEO_UNKNOWN = _geo("Unknown", "unk", "Unknown", "xx")
_LANGUAGES = _weighted(
    [
        (("en", "English", _geo("North America", "amn", "United States", "us")), 30),
        (("en", "English", _GEO_UNKNOWN), 10),
        (("fr", "French", _geo("Europe", "eur", "France", "fr")), 25),
        (("de", "German", _geo("Europe", "eur", "Germany", "de")), 10),
        (("es", "Spanish", _geo("Europe", "eur", "Spain", "es")), 8),
        (("it", "Italian", _GEO_UNKNOWN), 6),
        (("nl", "Dutch", _geo("Europe", "eur", "Netherlands", "nl")), 5),
        (("pt", "Portuguese", _geo("South America", "ams", "Brazil", "br")), 4),
        (("ja", "Japanese", _geo("Asia", "asi", "Japan", "jp")), 2),
    ]
)
