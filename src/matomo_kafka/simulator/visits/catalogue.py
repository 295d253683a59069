"""What visits pick from, shaped like the samples: pages, events, site searches, links, goals
and their revenues, currencies, timezone names, plans, first names; and `_weighted`, the
table that makes one random byte a weighted choice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from matomo_kafka.simulator.visits.php_json import _p

T = TypeVar("T")


_CURRENCIES: dict[str, tuple[str, str]] = {
    "USD": ("$", "US Dollar"),
    "EUR": ("€", "Euro"),
    "GBP": ("£", "British Pound Sterling"),
    "JPY": ("¥", "Japanese Yen"),
    "CHF": ("CHF", "Swiss Franc"),
    "CAD": ("$", "Canadian Dollar"),
}
_TZ_NAMES: dict[str, str] = {
    "UTC": "UTC",
    "Europe/Paris": "France",
    "Europe/Berlin": "Germany - Berlin",
    "Europe/London": "United Kingdom",
    "Europe/Madrid": "Spain - Madrid",
    "Europe/Rome": "Italy",
    "America/New_York": "United States - New York",
    "America/Los_Angeles": "United States - Los Angeles",
    "Asia/Tokyo": "Japan",
}


def _weighted(items: Sequence[tuple[T, int]]) -> tuple[T, ...]:
    """A 256-entry table so one random byte picks an item with the given weights."""
    flat: list[T] = []
    for item, w in items:
        flat.extend([item] * w)
    return tuple(flat[(j * len(flat)) // 256] for j in range(256))


_ICON_ACTION_SVG = "plugins/Morpheus/images/action.svg"
_GOAL_ICON = "plugins/Morpheus/images/goal.png"
_GOAL_SVG = "plugins/Morpheus/images/goal.svg"
_GOALS: dict[int, str] = {1: "Thank-you page", 2: "Newsletter signup"}

# (path, title, dimension2). Non-ASCII titles exercise unicode end to end.
_PAGES_RAW: tuple[tuple[str, str, str], ...] = (
    ("/", "Home", "home"),
    ("/products", "Products", "listing"),
    ("/products/espresso-pro-x", "Espresso Pro X", "product"),
    ("/products/moulin-a-cafe", "Moulin à café — édition limitée", "product"),
    ("/pricing", "Pricing", "pricing"),
    ("/blog/hello", "Hello blog", "article"),
    ("/blog/cafe-creme", "Café crème : nos secrets", "article"),
    ("/fr/evenements", "Événements à Paris", "listing"),
    ("/fr/nouveautes", "Nouveautés 🚀", "article"),
    ("/fr/a-propos", "À propos", "about"),
    ("/docs/getting-started", "Getting started", "docs"),
    ("/docs/faq", "FAQ – questions fréquentes", "docs"),
    ("/contact", "Contact", "contact"),
    ("/account", "Account", "account"),
    ("/checkout/cart", "Cart", "checkout"),
    ("/?mtm_source=newsletter&mtm_campaign=spring", "Home", "home"),
)
_PAGES = tuple((path, _p(title), dim2) for path, title, dim2 in _PAGES_RAW)
_THANK_YOU = ("/checkout/thank-you", "Thank you", "confirmation")
_EVENTS_RAW: tuple[tuple[str, str, str, int], ...] = (
    ("Video", "Play", "intro.mp4", 12),
    ("Video", "Pause", "intro.mp4", 37),
    ("Form", "Submit", "contact-form", 1),
    ("Scroll", "Depth", "75%", 75),
    ("Téléchargement", "Clic", "brochure.pdf", 1),
)
# (category, action, name, value, subtitle); Matomo's own quote mismatch kept as served.
_EVENTS = tuple(
    (_p(c), _p(a), _p(n), v, _p(f'Category: "{c}\', Action: "{a}"')) for c, a, n, v in _EVENTS_RAW
)
_SEARCHES_RAW: tuple[tuple[str, int], ...] = (
    ("pricing", 3),
    ("crème brûlée", 0),
    ("tarifs", 5),
    ("api", 12),
    ("café ☕", 1),
)
_SEARCHES = tuple(
    (_p(kw), count, _p(f"{kw} - Search Results Count: {count}")) for kw, count in _SEARCHES_RAW
)
_OUTLINKS = (
    "https://external.example.net/",
    "https://github.com/matomo-org/matomo",
    "https://fr.wikipedia.org/wiki/Caf%C3%A9",
)
_DOWNLOADS = ("/files/brochure.pdf", "/files/tarifs-2024.pdf")

_ENTRY_COUNTS = _weighted([(1, 40), (2, 25), (3, 15), (4, 10), (5, 6), (6, 4)])
_ENTRY_KINDS = _weighted(
    [("action", 55), ("event", 13), ("search", 8), ("outlink", 7), ("download", 5), ("goal", 12)]
)

_PLANS = _weighted([("free", 45), ("pro", 25), ("enterprise", 8), (None, 22)])
_FIRST_NAMES = (
    "alice", "bob", "chloé", "dave", "élodie", "françois", "marie", "paul", "jürgen", "søren",
)  # fmt: skip
_REVENUES = {1: (10, 10, 10, 25, 49), 2: (5, 0, 0, 0)}
