"""What a finished run leaves behind, under its sites' locks: the run record (with the
disabled-log policy applied), each clean site's success time, and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import EXIT_FAILED, MatomoKafkaError
from matomo_kafka.model import RunReport
from matomo_kafka.ops.metrics import SuccessTimes, publish
from matomo_kafka.ops.summary import RunRecord, site_outcomes
from matomo_kafka.source.sites import skip_disabled_sites
from matomo_kafka.state.checkpoint_files import CheckpointStore

log = logging.getLogger(__name__)


def conclude(
    record: RunRecord,
    report: RunReport,
    startup: MatomoKafkaError | None,
    settings: Settings,
    store: CheckpointStore,
    retries: int,
    redact: Callable[[str], str],
) -> None:
    """Under the sites' locks: applies the disabled-log policy, records the outcome, keeps
    each clean site's success time and publishes the metrics."""
    for site in skip_disabled_sites(report.sites, settings.MATOMO_STRICT_SITES):
        log.warning(
            "site %d: visitor log disabled in Matomo, skipped (MATOMO_STRICT_SITES=true makes "
            "it an error): %s", site.idsite, site.error,
        )  # fmt: skip
    record.sites = site_outcomes(report.sites, store, settings.START_DATE, record.run_date)
    record.matomo_retries = retries
    record.warnings = list(report.unmatched_columns)
    record.matomo_concurrency_lowest = report.pace_lowest
    record.matomo_concurrency_last = report.pace_last
    fatal = startup or report.fatal
    failed = report.failed
    if fatal is not None:
        record.fail(fatal.exit_code, redact(str(fatal)), type(fatal).__name__)
    elif failed:
        record.fail(EXIT_FAILED, f"{len(failed)} of {len(report.sites)} site(s) failed",
                    failed[0].error_kind)  # fmt: skip
    record.finished = datetime.now(UTC)
    successes = SuccessTimes(store)
    for site in report.sites:
        if site.status == "done":
            successes.write(site.idsite, record.finished)
    for outcome in record.sites:
        outcome.error = redact(outcome.error) if outcome.error else None
    if settings.METRICS_TEXTFILE or settings.METRICS_PUSHGATEWAY:
        last_success = {
            site.idsite: moment
            for site in record.sites
            if (moment := successes.read(site.idsite)) is not None
        }
        publish(
            record,
            last_success,
            textfile=settings.METRICS_TEXTFILE,
            pushgateway=settings.METRICS_PUSHGATEWAY,
        )
