"""Metrics and the run summary (issue #5): a node-exporter textfile read back for real, a push
received by a tiny local HTTP server standing in for the Pushgateway, and `--summary-file`
written whatever the outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from matomo_kafka.simulator import Fault
from support.cli import run_cli
from support.runs import LIMIT, RUN_DATE, parm, store, two_sites

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIVE = "Live.getLastVisitsDetails"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_textfile_and_summary_after_a_good_run(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    faults = [Fault(kind="status", method=LIVE, status=500, times=2)]
    simulator = sim_factory(two_sites(LIMIT), faults=faults)
    metrics_dir = tmp_path / "textfile"
    metrics_dir.mkdir()
    textfile = metrics_dir / "matomo_kafka.prom"
    summary = tmp_path / "summary.json"
    directory = parm(tmp_path, simulator, topic, METRICS_TEXTFILE=str(textfile))
    before = time.time()
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                     "--summary-file", str(summary))  # fmt: skip
    assert result.code == 0, result.output

    found = samples(textfile.read_text())
    assert [p.name for p in metrics_dir.iterdir()] == ["matomo_kafka.prom"], "no temp file left"
    for site in ("1", "2"):
        assert value(found, "matomo_kafka_run_visits_sent", clusterid="TEST01", site=site) == 50
        assert value(found, "matomo_kafka_run_pages", clusterid="TEST01", site=site) == 9
        assert value(found, "matomo_kafka_run_days_completed", clusterid="TEST01", site=site) == 5
        assert value(found, "matomo_kafka_days_behind", clusterid="TEST01", site=site) == 0
        assert value(found, "matomo_kafka_run_site_outcome", clusterid="TEST01", site=site,
                     outcome="done") == 1  # fmt: skip
        success = value(
            found, "matomo_kafka_last_success_timestamp_seconds", clusterid="TEST01", site=site
        )
        assert before - 1 <= success <= time.time() + 1
    assert value(found, "matomo_kafka_run_matomo_retries", clusterid="TEST01") == 2
    assert value(found, "matomo_kafka_run_exit_code", clusterid="TEST01") == 0
    assert value(found, "matomo_kafka_run_success", clusterid="TEST01") == 1
    assert not [key for key in found if key[0] == "matomo_kafka_run_errors"]

    report = json.loads(summary.read_text())
    assert report["outcome"] == "ok" and report["exit_code"] == 0 and report["error"] is None
    assert report["totals"]["visits_sent"] == 100 and report["totals"]["matomo_retries"] == 2
    assert report["totals"]["days_completed"] == 10
    assert report["run_date"] == "2024-03-06" and report["clusterid"] == "TEST01"
    for site in report["sites"]:
        assert site["outcome"] == "done" and site["visits_sent"] == 50
        assert site["days_completed"] == 5 and site["days_behind"] == 0
        assert site["checkpoint"] == {"day": "2024-03-06", "offset": 0}


def test_failed_site_keeps_its_last_success_and_counts_as_an_error(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    textfile = tmp_path / "m.prom"
    summary = tmp_path / "summary.json"
    directory = parm(tmp_path, simulator, topic, METRICS_TEXTFILE=str(textfile))
    assert run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE).code == 0
    first = samples(textfile.read_text())
    site1_success = value(
        first, "matomo_kafka_last_success_timestamp_seconds", clusterid="TEST01", site="1"
    )
    assert (tmp_path / "data" / "filterdate1.success").is_file()

    time.sleep(1.1)  # success times have a one-second resolution
    simulator.add_fault(Fault(kind="envelope", method="Goals.getGoals", idsite=1,
                              times=-1, message="Mysql went away"))  # fmt: skip
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", "2024-03-07",
                     "--summary-file", str(summary))  # fmt: skip
    assert result.code == 1, result.output
    found = samples(textfile.read_text())
    assert value(found, "matomo_kafka_run_site_outcome", clusterid="TEST01", site="1",
                 outcome="failed") == 1  # fmt: skip
    assert value(found, "matomo_kafka_run_errors", clusterid="TEST01", kind="MatomoError") == 1
    assert value(found, "matomo_kafka_last_success_timestamp_seconds", clusterid="TEST01",
                 site="1") == site1_success  # fmt: skip
    assert value(found, "matomo_kafka_last_success_timestamp_seconds", clusterid="TEST01",
                 site="2") > site1_success  # fmt: skip
    assert value(found, "matomo_kafka_days_behind", clusterid="TEST01", site="1") == 1
    assert value(found, "matomo_kafka_days_behind", clusterid="TEST01", site="2") == 0
    assert value(found, "matomo_kafka_run_exit_code", clusterid="TEST01") == 1
    assert value(found, "matomo_kafka_run_success", clusterid="TEST01") == 0

    report = json.loads(summary.read_text())
    assert report["outcome"] == "failed" and report["exit_code"] == 1
    assert report["error"] == "1 of 2 site(s) failed"
    site1, site2 = report["sites"]
    assert site1["outcome"] == "failed" and site1["error_kind"] == "MatomoError"
    assert "Mysql went away" in site1["error"] and site1["visits_sent"] == 0
    assert site1["checkpoint"] == {"day": "2024-03-06", "offset": 0} and site1["days_behind"] == 1
    assert site2["outcome"] == "done" and site2["visits_sent"] == 3


class _Recorder(BaseHTTPRequestHandler):
    """A stand-in Pushgateway: records every request, answers 200."""

    received: list[dict[str, Any]]

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.received.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "body": self.rfile.read(length).decode()}
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = do_DELETE = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def pushgateway() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_push_to_a_pushgateway(
    tmp_path: Path, topic: str, sim_factory: Any, pushgateway: ThreadingHTTPServer
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    url = f"http://127.0.0.1:{pushgateway.server_address[1]}/"
    directory = parm(tmp_path, simulator, topic, METRICS_PUSHGATEWAY=url)
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    received: list[dict[str, Any]] = pushgateway.received  # type: ignore[attr-defined]
    assert len(received) == 1
    push = received[0]
    assert push["method"] == "PUT", "each run replaces its group"
    assert push["path"] == "/metrics/job/matomo-kafka/clusterid/TEST01"
    found = samples(push["body"])
    assert value(found, "matomo_kafka_run_visits_sent", site="1") == 50
    assert value(found, "matomo_kafka_days_behind", site="2") == 0
    assert value(found, "matomo_kafka_run_success") == 1
    assert ("matomo_kafka_last_success_timestamp_seconds", (("site", "1"),)) in found

    # A shard pushes to its own group, so shards never overwrite each other.
    sharded = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                      "--shard", "0/1")  # fmt: skip
    assert sharded.code == 0, sharded.output
    assert received[1]["path"] == "/metrics/job/matomo-kafka/clusterid/TEST01/shard@base64/MC8x"


def test_metrics_failures_do_not_fail_the_run(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    directory = parm(tmp_path, simulator, topic, METRICS_PUSHGATEWAY="http://127.0.0.1:1")
    result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE)
    assert result.code == 0, result.output
    assert "metrics: cannot push the metrics to http://127.0.0.1:1" in result.stderr


def test_summary_is_written_when_the_run_fails(
    tmp_path: Path, topic: str, sim_factory: Any
) -> None:
    simulator = sim_factory(two_sites(LIMIT))
    summary = tmp_path / "out" / "summary.json"
    summary.parent.mkdir()

    def run(directory: Path) -> tuple[int, dict[str, Any]]:
        result = run_cli("run", "--parm-dir", str(directory), "--run-date", RUN_DATE,
                         "--summary-file", str(summary))  # fmt: skip
        return result.code, json.loads(summary.read_text())

    unreachable = parm(tmp_path, simulator, topic, KAFKA_SERVERS="127.0.0.1:1",
                       KAFKA_CONNECT_TIMEOUT="1")  # fmt: skip
    code, report = run(unreachable)
    assert code == 1 and report["outcome"] == "failed" and report["exit_code"] == 1
    assert "Kafka unreachable" in report["error"] and report["error_kind"] == "KafkaDeliveryError"
    assert [site["outcome"] for site in report["sites"]] == ["skipped", "skipped"]
    assert report["sites"][0]["checkpoint"] is None and report["sites"][0]["days_behind"] == 5

    broken = parm(tmp_path, simulator, topic, START_DATE="not-a-date")
    code, report = run(broken)
    assert code == 2 and report["outcome"] == "invalid" and report["exit_code"] == 2
    assert report["error"].startswith("invalid configuration (1 problem(s))")

    good = parm(tmp_path, simulator, topic)
    with store(tmp_path).lock([2]):
        code, report = run(good)
    assert code == 3 and report["outcome"] == "locked"
    assert "another matomo-kafka run" in report["error"]

    missing_dir = run_cli("run", "--parm-dir", str(good), "--summary-file",
                          str(tmp_path / "nowhere" / "s.json"))  # fmt: skip
    assert missing_dir.code == 2 and "--summary-file" in missing_dir.stderr
    assert list(summary.parent.iterdir()) == [summary], "no temp file left beside the summary"
