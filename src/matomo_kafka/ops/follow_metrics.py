"""Prometheus metrics of `follow`, a service: scraped at /metrics on MATOMO_HEALTH_PORT
(ops/health.py), and written to METRICS_TEXTFILE after each cycle when it is set (one file per
shard, as for `run`). Unlike a run's gauges, they describe the service's whole life: counters
of visits and cycles, the last cycle's duration, and per site how far behind it is.

The lag of a site is now minus the last action time of the newest visit delivered: at least
MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES by design, plus up to an interval, plus the time
since the site's last visit (a quiet site's lag grows). It is computed when scraped, so a
service that stopped cycling shows a growing lag, not a frozen one.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

from matomo_kafka.clock import Clock
from matomo_kafka.model import RunReport

log = logging.getLogger(__name__)

#: Cycle durations worth telling apart: a quiet cycle takes well under a second.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class FollowMetrics:
    """The service's metrics in their own registry."""

    def __init__(self, clock: Clock, textfile: str | None = None) -> None:
        self.clock = clock
        self.textfile = textfile
        self.registry = registry = CollectorRegistry()
        self.newest: dict[int, int] = {}
        self.visits = Counter(
            "matomo_kafka_follow_visits", "Visits delivered to Kafka by follow.", ["site"],
            registry=registry,
        )  # fmt: skip
        self.newest_gauge = Gauge(
            "matomo_kafka_follow_newest_visit_timestamp_seconds",
            "Last action time of the newest visit delivered, per site.", ["site"],
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "matomo_kafka_follow_lag_seconds",
            "Now minus the last action time of the newest visit delivered, per site.", ["site"],
            registry=registry,
        )  # fmt: skip
        self.horizon = Gauge(
            "matomo_kafka_follow_horizon_timestamp_seconds",
            "The instant each site was last brought up to (visits ending later wait).", ["site"],
            registry=registry,
        )  # fmt: skip
        self.cycles = Counter(
            "matomo_kafka_follow_cycles", "Cycles by outcome (ok, failed, interrupted).",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "matomo_kafka_follow_cycle_duration_seconds", "Duration of the cycles.",
            buckets=CYCLE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "matomo_kafka_follow_site_errors", "Failed sites by error kind (exception class).",
            ["kind"], registry=registry,
        )  # fmt: skip

    def cycle_done(
        self, horizon: datetime, report: RunReport, seconds: float, outcome: str
    ) -> None:
        """Counts a cycle; then writes the textfile, if one is configured."""
        self.cycles.labels(outcome).inc()
        self.duration.observe(seconds)
        for site in report.sites:
            label = str(site.idsite)
            self.visits.labels(label).inc(site.visits)
            if site.status == "done":
                self.horizon.labels(label).set(horizon.timestamp())
            elif site.error_kind and site.status == "failed":
                self.errors.labels(site.error_kind).inc()
            if site.newest is not None:
                self._newest(site.idsite, site.newest)
        self._write()

    def _newest(self, idsite: int, stamp: int) -> None:
        label = str(idsite)
        known = idsite in self.newest
        newest = self.newest[idsite] = max(stamp, self.newest.get(idsite, stamp))
        if not known:  # after the value it reads: a scrape may call it at once (its thread)
            self.lag.labels(label).set_function(lambda: self._lag(idsite))
        self.newest_gauge.labels(label).set(newest)

    def forget(self, idsite: int) -> None:
        """A site no longer followed (gone from Matomo's list): its gauges go, or its lag
        would grow forever and alert; its visit counter stays (a counter that vanished would
        read as a reset)."""
        label = str(idsite)
        for gauge in (self.lag, self.newest_gauge, self.horizon):
            gauge.remove(label)
        self.newest.pop(idsite, None)

    def _lag(self, idsite: int) -> float:
        """Called by a scrape, on the health server's thread: the site may have been
        forgotten since the scrape took its gauge (NaN then, rather than a failed scrape)."""
        newest = self.newest.get(idsite)
        return math.nan if newest is None else self.clock().timestamp() - newest

    def _write(self) -> None:
        if self.textfile is None:
            return
        try:
            write_to_textfile(self.textfile, self.registry)
        except OSError as exc:
            log.error("metrics: cannot write the metrics textfile %s: %s", self.textfile, exc)
