"""`follow` against Matomo's clock. The horizon (what has settled) comes from the local clock,
but a visit's times come from Matomo's: when this host's clock runs ahead of Matomo's by more
than the settle margin, `now - margin` would already include visits Matomo may still extend.

Matomo's clock is read from the `Date` header of its answers (MatomoClient.matomo_now), at the
end of each cycle (and before the first), beside the local clock at that instant: the skew
then applies to the next horizon, whatever either clock did in between. The
skew (local minus Matomo's, positive when this host is ahead) is exported as a metric; beyond
SKEW_WARN_S it is said once, with both times, until the clocks agree again. When this host is
ahead by more than MATOMO_SETTLE_MINUTES, the horizon is Matomo's clock minus the margin
instead (so no unsettled visit is sent), and that is said too. A host behind Matomo only sends
later than it could: said, never corrected.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

#: Clocks further apart than this are said to disagree (NTP keeps them within a second).
SKEW_WARN_S = 60.0


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


class SkewWatch:
    """The skew between both clocks, measured after each of Matomo's answers that `follow`
    checks (observe), what is said about it, and the horizon it leads to (settled_until)."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self.skew: float | None = None  # seconds, local minus Matomo's; None: not known yet
        self._disagree = False
        self._clamped = False

    @property
    def clamped(self) -> bool:
        """This host is ahead of Matomo by more than the settle margin."""
        return self.skew is not None and self.skew > self.settle_seconds

    def observe(self, local: datetime, matomo: datetime, margin: timedelta) -> None:
        """Both clocks at one instant (Matomo's from its latest `Date` header): the skew, and
        a warning when they start to disagree (once, until they agree again)."""
        skew = self.skew = (local - matomo).total_seconds()
        clamped, disagree = self.clamped, abs(skew) > SKEW_WARN_S
        if clamped and not self._clamped:
            log.warning(
                "follow: this host's clock (%s) is %.0fs ahead of Matomo's (%s, its Date header), "
                "more than MATOMO_SETTLE_MINUTES: today is read only up to Matomo's clock minus "
                "MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES (%s), so that no unsettled visit is "
                "sent; synchronise the clocks (NTP)", _utc(local), skew, _utc(matomo),
                _utc(matomo - margin),
            )  # fmt: skip
        elif disagree and not self._disagree and not clamped:
            log.warning(
                "follow: this host's clock (%s) and Matomo's (%s, its Date header) differ by "
                "%.0fs (this host %s): synchronise them (NTP)", _utc(local), _utc(matomo),
                abs(skew), "ahead" if skew > 0 else "behind",
            )  # fmt: skip
        elif self._disagree and not disagree:
            log.info("follow: this host's clock and Matomo's agree again (%.0fs apart)", skew)
        if self._clamped and not clamped:
            log.info("follow: today is read up to this host's clock minus the margins again")
        self._clamped, self._disagree = clamped, disagree or clamped

    def settled_until(self, local: datetime, margin: timedelta) -> datetime:
        """The horizon: `local - margin`, moved back by the skew while this host is ahead of
        Matomo by more than the settle margin (Matomo's clock minus the margin)."""
        if self.skew is not None and self.clamped:
            return local - timedelta(seconds=self.skew) - margin
        return local - margin
