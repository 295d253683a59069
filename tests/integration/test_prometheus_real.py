"""The alert rules and the dashboard on a real Prometheus (issue 24): Debian's `prometheus`
scrapes, every second, a running `follow`'s /metrics and the run metrics the way
docs/operations.md recommends them, the node exporter's textfile collector
(`prometheus-node-exporter`) and the Pushgateway (`prometheus-pushgateway`, `honor_labels`),
after a good run and a run whose token Matomo refuses. Then, through its HTTP API: the value
side of every alert expression and every dashboard expression returns series, and the
refused token's alert (no `for`: it needs acting on at once) is firing. The rules file is
loaded as it is shipped; the `for:` of the others is promtool's business
(test_prometheus_rules.py). Binaries from scripts/prometheus-tools.sh; fails without them."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import SimSite
from support.cli import clean_env, run_cli
from support.follow import FollowProcess, follow_values, wait_until
from support.parm import base_values, write_parm
from support.prometheus import DASHBOARD, RULES, alert_rules, binary, value_sides
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

#: What a range in a dashboard expression becomes here (Grafana sets it from the scrape
#: interval and the panel's width).
RATE_INTERVAL = "30s"


class Daemon:
    """A server process on 127.0.0.1, its output in a file, stopped at the end."""

    def __init__(self, name: str, args: list[str], log: Path, port: int) -> None:
        self.name, self.log, self.port = name, log, port
        with log.open("wb") as handle:
            self.process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, path: str) -> Daemon:
        def answers() -> bool:
            assert self.process.poll() is None, f"{self.name} exited: {self.output()}"
            try:
                with urllib.request.urlopen(self.url(path), timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(answers, 60, lambda: f"{self.name} does not answer: {self.output()}")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(name: str, args: list[str], log: Path, port: int) -> Daemon:
        daemon = Daemon(name, args, log, port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        daemon.stop()


def query(prometheus: Daemon, expr: str) -> list[dict[str, Any]]:
    """The instant vector `expr` gives now."""
    url = prometheus.url("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        target["expr"].replace("$__rate_interval", RATE_INTERVAL)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_a_real_prometheus_evaluates_every_rule_and_panel(
    tmp_path: Path, topic: str, sim_factory: Any, daemons: Callable[..., Daemon]
) -> None:
    today = datetime.now(UTC).date()
    simulator = sim_factory([
        SimSite(1, "UTC site", "UTC", default_visits=30),
        SimSite(2, "Paris site", "Europe/Paris", default_visits=30),
    ])  # fmt: skip
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    node_port, push_port, prom_port, health_port = (free_port() for _ in range(4))
    node = daemons("node exporter", [
        binary("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{node_port}",
        "--collector.disable-defaults", "--collector.textfile",
        f"--collector.textfile.directory={textfiles}",
    ], tmp_path / "node.log", node_port)  # fmt: skip
    pushgateway = daemons("pushgateway", [
        binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{push_port}",
    ], tmp_path / "pushgateway.log", push_port)  # fmt: skip
    node.wait_ready("/metrics")
    pushgateway.wait_ready("/-/ready")

    # the runs: one good (TEST01), one whose token Matomo refuses (REFUSED)
    start = (today - timedelta(days=2)).isoformat()
    for clusterid, token in (("TEST01", None), ("REFUSED", "not-the-token-4b1d")):
        data = tmp_path / clusterid
        values = base_values(
            data, simulator.url, topic, START_DATE=start, CLUSTERID=clusterid,
            METRICS_TEXTFILE=str(textfiles / f"matomo_kafka_{clusterid.lower()}.prom"),
            METRICS_PUSHGATEWAY=pushgateway.url(),
        )  # fmt: skip
        if token is not None:
            values["MATOMO_API_TOKEN"] = token
        result = run_cli("run", "--parm-dir", str(write_parm(data / "parm", **values)))
        assert result.code == (0 if token is None else 1), result.output

    # follow, on checkpoints of its own
    data = tmp_path / "follow"
    values = base_values(data, simulator.url, topic, START_DATE=start, CLUSTERID="FOLLOW",
                         **follow_values(health_port))  # fmt: skip
    parm = write_parm(data / "parm", **values)
    follow = FollowProcess(parm, clean_env(), tmp_path / "follow.log", health_port).start()
    try:
        wait_until(lambda: follow.get("/readyz")[0] == 200, 90, lambda: follow.output[-3000:])
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "matomo-kafka-follow",
                 "static_configs": [{"targets": [f"127.0.0.1:{health_port}"]}]},
                {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}]},
                {"job_name": "pushgateway", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{push_port}"]}]},
            ],
        }))  # fmt: skip
        prometheus = daemons("prometheus", [
            binary("prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log", prom_port).wait_ready("/-/ready")  # fmt: skip

        expressions = {
            f"{rule['alert']}: {side}": side
            for rule in alert_rules()
            for side in value_sides(rule["expr"])
        }
        expressions.update({f"dashboard: {expr}": expr for expr in dashboard_expressions()})
        empty: dict[str, str] = dict(expressions)

        def all_answer() -> bool:
            for name, expr in list(empty.items()):
                if query(prometheus, expr):
                    del empty[name]
            return not empty

        wait_until(all_answer, 60, lambda: f"no series for: {sorted(empty)}\n"
                   f"{prometheus.output()}")  # fmt: skip

        def refused_token_firing() -> bool:
            firing = query(prometheus, 'ALERTS{alertname="MatomoKafkaCredentialsRefused", '
                                       'alertstate="firing"}')  # fmt: skip
            return [alert["metric"]["clusterid"] for alert in firing] == ["REFUSED"]

        wait_until(refused_token_firing, 30, lambda: prometheus.output())
        alerts = query(prometheus, 'ALERTS{alertname="MatomoKafkaCredentialsRefused"}')
        assert [a["metric"]["kind"] for a in alerts] == ["TokenRefusedError"]
        # the good run: no failed site, no Kafka error, nothing behind
        assert query(prometheus, 'ALERTS{alertname=~"MatomoKafka(SiteFailed|DeliveryErrors)"}'
                                 ' and ALERTS{clusterid="TEST01"}') == []  # fmt: skip
        behind = query(prometheus, 'max by (site) (matomo_kafka_days_behind{clusterid="TEST01"})')
        assert sorted(a["metric"]["site"] for a in behind) == ["1", "2"]
        assert {a["value"][1] for a in behind} == {"0"}
    finally:
        assert follow.stop() == 0, follow.output[-3000:]


def test_the_dashboard_is_importable_as_it_is() -> None:
    """Grafana's import needs nothing else: the data source is the dashboard's own variable,
    panel ids are unique, every panel fits the 24-column grid."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "matomo-kafka" and "__inputs" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
