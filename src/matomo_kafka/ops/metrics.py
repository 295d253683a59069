"""Prometheus metrics of a run: a node-exporter textfile (METRICS_TEXTFILE, written
atomically) and/or a Pushgateway push (METRICS_PUSHGATEWAY, job `matomo-kafka`, grouped by
CLUSTERID, and by shard when the run has `--shard`).

A run is a batch job, so every metric is a gauge describing the last run (the textfile and
the Pushgateway group are replaced as a whole by each run), except the last success time of
each site, which must survive a failed run: it is kept beside the checkpoints, in
`<FILE_PATH_FILTERDATE><idsite>.success` (the UTC time of the site's last successful run).

Metrics never decide the exit code: a textfile or push failure is logged as an error, the
extraction's outcome stands (alert on the metrics' age: `time() - push_time_seconds`, or the
node exporter's `node_textfile_mtime_seconds`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from matomo_kafka.errors import CheckpointError
from matomo_kafka.ops.summary import RunRecord
from matomo_kafka.state import no_follow
from matomo_kafka.state.checkpoint_files import CheckpointStore

log = logging.getLogger(__name__)

JOB = "matomo-kafka"
OUTCOMES = ("done", "failed", "disabled", "skipped", "interrupted", "pending")


class SuccessTimes:
    """Per-site `<FILE_PATH_FILTERDATE><idsite>.success`: when the site last ran cleanly."""

    def __init__(self, store: CheckpointStore) -> None:
        self.prefix = store.filterdate_prefix

    def path(self, idsite: int) -> Path:
        return Path(f"{self.prefix}{idsite}.success")

    def read(self, idsite: int) -> float | None:
        try:
            data = no_follow.read_bytes(self.path(idsite))
            return (
                None if data is None else datetime.fromisoformat(data.decode().strip()).timestamp()
            )
        except (OSError, ValueError, CheckpointError):
            return None

    def write(self, idsite: int, moment: datetime) -> None:
        path = self.path(idsite)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:  # never through a link planted at either name (state/no_follow.py)
            fd = no_follow.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(moment.astimezone(UTC).isoformat(timespec="seconds") + "\n")
            no_follow.refuse_link(path)
            os.replace(tmp, path)
        except (OSError, CheckpointError) as exc:
            tmp.unlink(missing_ok=True)
            log.error("cannot record the last success of site %d in %s: %s", idsite, path, exc)


#: Every metric of a run: name -> (help, its labels beside the constant ones).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "matomo_kafka_run_visits_sent": ("Visits sent to Kafka by the last run.", ("site",)),
    "matomo_kafka_run_pages": ("Live pages read by the last run.", ("site",)),
    "matomo_kafka_run_days_completed": ("Days completed by the last run.", ("site",)),
    "matomo_kafka_run_pages_split": (
        "Live pages the last run asked for again in smaller pages after they hit Matomo's "
        "memory or time limit.",
        ("site",),
    ),
    "matomo_kafka_run_site_outcome": (
        "1 for the outcome of each site in the last run (done, failed, disabled, skipped, "
        "interrupted).",
        ("site", "outcome"),
    ),
    "matomo_kafka_days_behind": (
        "Closed days not yet sent, per site, after the last run.",
        ("site",),
    ),
    "matomo_kafka_last_success_timestamp_seconds": (
        "Unix time of the last run that brought the site up to date without error.",
        ("site",),
    ),
    "matomo_kafka_run_errors": (
        "Errors of the last run by kind (the exception class, e.g. SiteAccessError).",
        ("kind",),
    ),
    "matomo_kafka_run_matomo_retries": ("Matomo requests retried by the last run.", ()),
    "matomo_kafka_run_matomo_concurrency": (
        "Matomo requests in flight the last run allowed itself (under MATOMO_MAX_CONCURRENCY): "
        "the lowest it backed off to, the level at its end, and MATOMO_MAX_CONCURRENCY (max).",
        ("which",),
    ),
    "matomo_kafka_run_duration_seconds": ("Duration of the last run.", ()),
    "matomo_kafka_run_timestamp_seconds": ("Unix time the last run ended.", ()),
    "matomo_kafka_run_exit_code": ("Exit code of the last run.", ()),
    "matomo_kafka_run_success": ("1 if the last run exited 0, else 0.", ()),
}

#: Sets one sample: metric name, value, then its own label values.
Put = Callable[..., None]


def build_registry(
    record: RunRecord, success: dict[int, float], labels: dict[str, str] | None = None
) -> CollectorRegistry:
    """Every metric of the run in a fresh registry; `labels` are added to every sample."""
    const = dict(labels or {})
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(name, doc, [*const, *extra], registry=registry)
        for name, (doc, extra) in METRICS.items()
    }

    def put(name: str, number: float, *extra: str) -> None:
        gauge, values = gauges[name], [*const.values(), *extra]
        (gauge.labels(*values) if values else gauge).set(number)

    _site_metrics(record, success, put)
    _run_metrics(record, put)
    return registry


def _site_metrics(record: RunRecord, success: dict[int, float], put: Put) -> None:
    kinds: dict[str, int] = {}
    for site in record.sites:
        label = str(site.idsite)
        put("matomo_kafka_run_visits_sent", site.visits_sent, label)
        put("matomo_kafka_run_pages", site.pages, label)
        put("matomo_kafka_run_days_completed", site.days_completed, label)
        put("matomo_kafka_run_pages_split", site.pages_split, label)
        put("matomo_kafka_run_site_outcome", 1, label, site.outcome)
        if site.days_behind is not None:
            put("matomo_kafka_days_behind", site.days_behind, label)
        if site.error_kind and site.outcome not in ("done", "skipped"):
            kinds[site.error_kind] = kinds.get(site.error_kind, 0) + 1
    # The run's own error (a refused token, Kafka...), unless a failed site counted it: sites
    # merely skipped because of it do not count.
    if record.error_kind and record.error_kind not in kinds:
        kinds[record.error_kind] = 1
    for kind, count in sorted(kinds.items()):
        put("matomo_kafka_run_errors", count, kind)
    for idsite, moment in sorted(success.items()):
        put("matomo_kafka_last_success_timestamp_seconds", moment, str(idsite))


def _run_metrics(record: RunRecord, put: Put) -> None:
    for which, level in (
        ("lowest", record.matomo_concurrency_lowest),
        ("last", record.matomo_concurrency_last),
        ("max", record.matomo_concurrency_max),
    ):
        if level is not None:
            put("matomo_kafka_run_matomo_concurrency", level, which)
    end = record.finished or datetime.now(UTC)
    put("matomo_kafka_run_matomo_retries", record.matomo_retries)
    put("matomo_kafka_run_duration_seconds", record.seconds)
    put("matomo_kafka_run_timestamp_seconds", end.timestamp())
    put("matomo_kafka_run_exit_code", record.exit_code)
    put("matomo_kafka_run_success", 1 if record.exit_code == 0 else 0)


def textfile_path(base: str, shard: str | None) -> str:
    """One file per shard (`x.prom` -> `x.shard-0-of-4.prom`), so shards on one node never
    overwrite each other's file."""
    if shard is None:
        return base
    index, _, count = shard.partition("/")
    return f"{base.removesuffix('.prom')}.shard-{index}-of-{count}.prom"


def publish(
    record: RunRecord,
    success: dict[int, float],
    *,
    textfile: str | None,
    pushgateway: str | None,
    timeout: float = 10.0,
) -> list[str]:
    """Writes the textfile and/or pushes; returns the problems (already logged)."""
    problems: list[str] = []
    clusterid = record.clusterid or "local"
    if textfile is not None:
        labels = {"clusterid": clusterid}
        if record.shard is not None:
            labels["shard"] = record.shard
        path = textfile_path(textfile, record.shard)
        try:
            write_to_textfile(path, build_registry(record, success, labels))
            log.info("metrics written to %s", path)
        except OSError as exc:
            problems.append(f"cannot write the metrics textfile {path}: {exc}")
    if pushgateway is not None:
        grouping = {"clusterid": clusterid}
        if record.shard is not None:
            grouping["shard"] = record.shard
        try:
            push_to_gateway(
                pushgateway.rstrip("/"),
                job=JOB,
                registry=build_registry(record, success),
                grouping_key=grouping,
                timeout=timeout,
            )
            log.info("metrics pushed to %s", pushgateway)
        except Exception as exc:  # urllib raises many kinds; metrics never fail the run
            problems.append(f"cannot push the metrics to {pushgateway}: {type(exc).__name__}: "
                            f"{exc}")  # fmt: skip
    for problem in problems:
        log.error("metrics: %s", problem)
    return problems
