"""deploy/ examples of `follow` (issue 15): the StatefulSet parses, its probes and ports agree
with its parm, and its pods' arguments (one shard each) run the real service against the
simulator and the broker until ready, then stop on SIGTERM with exit 0; the systemd service
verifies and its ExecStart runs the same way."""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from matomo_kafka.simulator import SimSite
from support.follow import (
    FollowProcess,
    MovingClock,
    expected_up_to,
    follow_env,
    follow_values,
    utc,
    wait_until,
)
from support.kafka import BOOTSTRAP, REPO, read_records
from support.parm import SALT, TOKEN, base_values, write_parm
from support.simulator_process import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
FIRST = date(2024, 3, 3)
NOW = "2024-03-05 12:00"


def statefulset_docs() -> dict[str, dict[str, Any]]:
    text = (DEPLOY / "kubernetes" / "follow-statefulset.yaml").read_text()
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_statefulset_parses_and_agrees_with_its_parm() -> None:
    docs = statefulset_docs()
    assert set(docs) == {"ConfigMap", "Service", "StatefulSet"}
    env_lines = docs["ConfigMap"]["data"]["wa7.env"].splitlines()
    parm = dict(line.split("=", 1) for line in env_lines if "=" in line)
    port = int(parm["MATOMO_HEALTH_PORT"].strip('"'))
    assert parm["MATOMO_HEALTH_BIND"] == '"0.0.0.0"', "the kubelet's probes come from outside"
    sts = docs["StatefulSet"]
    spec = sts["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "follow" and "--shard" in args
    assert args[args.index("--shard") + 1] == f"$(POD_INDEX)/{spec['replicas']}"
    (pod_index,) = container["env"]
    assert pod_index["name"] == "POD_INDEX"
    assert "apps.kubernetes.io/pod-index" in pod_index["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["ports"] == [{"name": "health", "containerPort": port}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert spec["serviceName"] == docs["Service"]["metadata"]["name"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_statefulset_pods_run_our_service(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    """Each replica's arguments, with its own /data, follow their shard of MATOMO_ID_SITE=all
    until ready; together they deliver every site's visits up to the horizon, once."""
    sites = [SimSite(i, f"site {i}", "UTC", default_visits=24) for i in range(1, 6)]
    simulator = sim_factory(sites)
    clock = MovingClock(tmp_path / "clock", [simulator], utc(NOW))
    docs = statefulset_docs()
    parm = tmp_path / "parm"
    parm.mkdir()
    for name, text in docs["ConfigMap"]["data"].items():
        (parm / name).write_text(text)
    spec = docs["StatefulSet"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    pods: list[FollowProcess] = []
    try:
        for index in range(spec["replicas"]):
            data, port = tmp_path / f"data-{index}", free_port()
            env = follow_env(
                clock, MATOMO_API_TOKEN=TOKEN, SALAGE=SALT, MATOMO_API_URL=simulator.url,
                KAFKA_SERVERS=BOOTSTRAP, KAFKA_USER="", KAFKA_TOPIC=topic,
                START_DATE=FIRST.isoformat(), FILE_PATH_FILTERDATE=str(data / "filterdate"),
                FILE_PATH_LAST_OFFSET=str(data / "last_filter_offset"),
                MATOMO_HEALTH_PORT=str(port), POD_INDEX=str(index),
            )  # fmt: skip
            args = [arg.replace("$(POD_INDEX)", str(index)) for arg in container["args"][1:]]
            assert args[:2] == ["--parm-dir", "/parm"]  # start() gives --parm-dir
            pod = FollowProcess(parm, env, tmp_path / f"pod-{index}.log", port)
            pods.append(pod.start(*args[2:]))
        for pod in pods:
            _ready(pod)
            assert pod.get("/livez")[0] == 200
    finally:
        codes = [pod.stop(signal.SIGTERM) for pod in pods]
    assert codes == [0] * len(pods), [pod.output[-2000:] for pod in pods]
    shards = [f"(shard {index}/{spec['replicas']})" for index in range(spec["replicas"])]
    assert all(shard in pod.output for shard, pod in zip(shards, pods, strict=True))
    want = expected_up_to(simulator, {i: "UTC" for i in range(1, 6)}, FIRST, clock.horizon)
    counts = Counter(key for key, _ in read_records(topic))
    assert set(counts) == set(want) and max(counts.values()) == 1


def _ready(pod: FollowProcess) -> None:
    wait_until(lambda: pod.get("/readyz")[0] == 200, 120, lambda: pod.output[-3000:])


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser


def test_systemd_follow_service(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    service = unit("matomo-kafka-follow.service")["Service"]
    assert service["Type"] == "exec" and service["Restart"] == "on-failure"
    assert set(service["RestartPreventExitStatus"].split()) == {"1", "2"}
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/matomo-kafka/.venv/bin/matomo-kafka" and argv[1] == "follow"
    assert argv[2:] == ["--parm-dir", "/etc/matomo-kafka/parm"]

    simulator = sim_factory([SimSite(1, "site 1", "UTC", default_visits=24)])
    clock = MovingClock(tmp_path / "clock", [simulator], utc(NOW))
    port = free_port()
    parm = write_parm(tmp_path / "parm", **base_values(
        tmp_path, simulator.url, topic, MATOMO_ID_SITE="1", START_DATE=FIRST.isoformat(),
        **follow_values(port)))  # fmt: skip
    local = [str(VENV_BIN / "matomo-kafka"), "follow", "--parm-dir", str(parm)]
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen(local, env=follow_env(clock), stdout=log, stderr=subprocess.STDOUT)
    probe = FollowProcess(parm, {}, tmp_path / "service.log", port)
    try:
        _ready(probe)
    finally:
        process.send_signal(signal.SIGTERM)  # KillSignal: what `systemctl stop` sends
        assert process.wait(timeout=60) == 0, probe.output[-3000:]
        log.close()
    want = expected_up_to(simulator, {1: "UTC"}, FIRST, clock.horizon)
    assert Counter(key for key, _ in read_records(topic)) == Counter(dict.fromkeys(want, 1))

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit is checked by parsing only")
    units = tmp_path / "units"
    units.mkdir()
    text = (DEPLOY / "systemd" / "matomo-kafka-follow.service").read_text()
    (units / "matomo-kafka-follow.service").write_text(text.replace(argv[0], local[0]))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / "matomo-kafka-follow.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
