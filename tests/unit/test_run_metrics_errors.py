"""matomo_kafka_run_errors of a run (ops/metrics.py): the run's own error counts even when it
only made the sites skip (a refused token stops the run before any site: the alert
MatomoKafkaCredentialsRefused reads it), and a failed site's error is not counted twice."""

from __future__ import annotations

from matomo_kafka.ops.metrics import build_registry
from matomo_kafka.ops.summary import RunRecord, SiteOutcome


def _site(idsite: int, outcome: str, kind: str | None) -> SiteOutcome:
    return SiteOutcome(idsite, outcome, 0, 0, 0, 0.0, None, None, 1, kind and "...", kind)


def _errors(record: RunRecord) -> dict[str, float]:
    registry = build_registry(record, {}, {"clusterid": "C"})
    return {
        sample.labels["kind"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "matomo_kafka_run_errors"
    }


def test_a_refused_token_that_skipped_every_site_is_counted() -> None:
    record = RunRecord("0", sites=[_site(1, "skipped", "TokenRefusedError"),
                                   _site(2, "skipped", "TokenRefusedError")])  # fmt: skip
    record.fail(1, "token refused by Matomo", "TokenRefusedError")
    assert _errors(record) == {"TokenRefusedError": 1}


def test_a_failed_site_carrying_the_runs_error_is_counted_once() -> None:
    record = RunRecord("0", sites=[_site(1, "failed", "KafkaDeliveryError"),
                                   _site(2, "interrupted", None)])  # fmt: skip
    record.fail(1, "Kafka failed", "KafkaDeliveryError")
    assert _errors(record) == {"KafkaDeliveryError": 1}


def test_a_good_run_has_no_error() -> None:
    assert _errors(RunRecord("0", sites=[_site(1, "done", None)])) == {}
