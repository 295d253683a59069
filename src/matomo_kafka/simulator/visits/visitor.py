"""Who visits: new or returning (from a per-site pool, with stable ids), the user id, the
visit counts, and the visit's IP address."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from matomo_kafka.simulator.visits.catalogue import _FIRST_NAMES
from matomo_kafka.simulator.visits.php_json import _p


@dataclass(frozen=True)
class _Visitor:
    returning: bool
    visitor_id: str
    user_id: str | None
    visit_count: int
    days_first: int
    days_last: int
    sec_first: int
    sec_last: int


def _visitor(h: bytes, seed: int, idsite: int) -> _Visitor:
    """Who visits: ~35% returning visitors from a per-site pool, with stable ids."""
    returning = h[10] < 90
    if returning:
        v = int.from_bytes(h[11:14], "little") % 5000
        vh = hashlib.blake2b(
            b"visitor" + seed.to_bytes(8, "little", signed=True) + idsite.to_bytes(4, "little")
            + v.to_bytes(4, "little"),
            digest_size=8,
        ).digest()  # fmt: skip
        visitor_id = vh.hex()
        has_user = vh[0] < 100
        style = vh[1] % 3
        who = _FIRST_NAMES[vh[2] % len(_FIRST_NAMES)]
        visit_count = 2 + h[38] % 25
        days_first = 1 + (h[39] | h[40] << 8) % 400
        days_last = min(days_first, h[41] % 30 + 1)
        sec_first = days_first * 86400 + h[42] * 97
        sec_last = days_last * 86400 + h[43] * 89
    else:
        v = int.from_bytes(h[28:31], "little")
        visitor_id = h[28:36].hex()
        has_user = h[14] < 40
        style = h[15] % 3
        who = _FIRST_NAMES[h[13] % len(_FIRST_NAMES)]
        visit_count, days_first, days_last, sec_first, sec_last = 1, 0, 0, 0, 0
    user_id: str | None = None
    if has_user:
        user_id = _p((f"user-{v}", f"{who}.{v % 1000}@example.com", who)[style])
    return _Visitor(returning, visitor_id, user_id, visit_count, days_first, days_last,
                    sec_first, sec_last)  # fmt: skip


def _visit_ip(h: bytes) -> str:
    """Documentation addresses only (RFC 3849, RFC 5737): 1 in 10 IPv6."""
    ipb = h[24]
    if ipb < 25:
        return f"2001:db8::{h[25]:x}{h[26]:02x}"
    net = ("192.0.2", "198.51.100", "203.0.113")[ipb % 3]
    return f"{net}.{h[25]}"
