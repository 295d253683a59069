"""How Matomo reads the parameters its modules share: idSite (missing, denied, unknown),
period and date (day only here, with today and yesterday by the simulator's clock), numbers."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from matomo_kafka.simulator.config import (
    MSG_BAD_DATE,
    MSG_MISSING_PARAM,
    MSG_NO_VIEW,
    MSG_ONLY_DAY,
    MSG_UNKNOWN_SITE,
    SimSite,
)
from matomo_kafka.simulator.server import _error, _json_reply, _Reply
from matomo_kafka.source.days import site_timezone

if TYPE_CHECKING:
    from matomo_kafka.simulator.matomo import MatomoSimulator


def int_param(params: dict[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except (TypeError, ValueError):
        return default


def site_param(
    sim: MatomoSimulator, params: dict[str, str], unknown_is_empty: bool = False
) -> tuple[SimSite | None, _Reply | None]:
    """Resolve idSite like Matomo: missing, denied (401) or unknown (envelope or [])."""
    raw = params.get("idSite")
    if raw is None or raw == "":
        return None, _error(MSG_MISSING_PARAM.format("idSite"))
    try:
        idsite = int(raw)
    except ValueError:
        return None, _error(MSG_UNKNOWN_SITE.format(raw))
    if idsite in sim.config.denied_sites:  # 4.15.1 says it with HTTP 200
        return None, _error(MSG_NO_VIEW.format(idsite), 200 if sim._matomo_4 else 401)
    site = sim._sites.get(idsite)
    if site is None:
        if unknown_is_empty:
            return None, _json_reply([])
        return None, _error(MSG_UNKNOWN_SITE.format(raw))
    return site, None


def day_param(
    sim: MatomoSimulator, site: SimSite, params: dict[str, str], method: str
) -> date | _Reply:
    period = params.get("period", "")
    if period != "day":
        return _error(MSG_ONLY_DAY.format(method, period))
    raw = params.get("date", "")
    if raw in ("today", "yesterday"):
        tz = site_timezone(site.timezone)
        now = sim._now
        today = (datetime.now(tz) if now is None else datetime.fromtimestamp(now, tz)).date()
        return today if raw == "today" else today - timedelta(days=1)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        return _error(MSG_BAD_DATE)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return _error(MSG_BAD_DATE)
