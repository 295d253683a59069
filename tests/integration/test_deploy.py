"""deploy/ examples (issue #5): the Kubernetes manifests parse and their container arguments
(and their ConfigMap's parm files) run our CLI for real; the systemd units verify and their
ExecStart runs; the Control-M job definitions drive the launcher, sharded."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from matomo_kafka.simulator import SimSite
from support.cli import clean_env
from support.deploy import DEPLOY, VENV_BIN, container, manifests, run
from support.kafka import BOOTSTRAP, REPO
from support.parm import SALT, TOKEN, base_values, write_parm
from support.runs import expected_keys, topic_counts

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]


def sim_sites(*ids: int) -> list[SimSite]:
    return [SimSite(idsite=i, name=f"site {i}", timezone="UTC", default_visits=4) for i in ids]


def parm_from_configmap(directory: Path) -> Path:
    """The ConfigMap's two files, as Kubernetes mounts them on /parm."""
    (configmap,) = [doc for doc in manifests("cronjob.yaml") if doc["kind"] == "ConfigMap"]
    directory.mkdir(parents=True)
    for name, text in configmap["data"].items():
        (directory / name).write_text(text)
    return directory


def pod_env(tmp_path: Path, simulator_url: str, topic: str) -> dict[str, str]:
    """The Secret's values, plus what points the example at this test's Matomo and Kafka
    (the environment overrides parm/, exactly as in the pod)."""
    start = (date.today() - timedelta(days=3)).isoformat()
    return clean_env(
        MATOMO_API_TOKEN=TOKEN,
        SALAGE=SALT,
        MATOMO_API_URL=simulator_url,
        KAFKA_SERVERS=BOOTSTRAP,
        KAFKA_USER="",
        KAFKA_TOPIC=topic,
        START_DATE=start,
        FILE_PATH_FILTERDATE=str(tmp_path / "data" / "filterdate"),
        FILE_PATH_LAST_OFFSET=str(tmp_path / "data" / "last_filter_offset"),
        METRICS_PUSHGATEWAY="",
    )


def test_kubernetes_args_run_our_cli(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    simulator = sim_factory(sim_sites(1, 2, 3, 4, 5))
    parm = parm_from_configmap(tmp_path / "parm")
    env = pod_env(tmp_path, simulator.url, topic)
    data = tmp_path / "data"
    data.mkdir()

    def argv(args: list[str], index: int | None = None) -> list[str]:
        out = []
        for arg in args:
            if index is not None:
                arg = arg.replace("$(JOB_COMPLETION_INDEX)", str(index))
            out.append(str(parm) if arg == "/parm" else arg.replace("/data/", f"{data}/"))
        return [str(VENV_BIN / "matomo-kafka"), *out]

    (sharded,) = [doc for doc in manifests("cronjob-sharded.yaml") if doc["kind"] == "CronJob"]
    count = sharded["spec"]["jobTemplate"]["spec"]["completions"]
    for index in range(count):  # what the Indexed Job's pods run (here one after the other)
        result = run(argv(container(sharded)["args"], index), env)
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads((data / f"summary-shard-{index}.json").read_text())
        assert summary["shard"] == f"{index}/{count}" and summary["site_selection"] == "all"
        assert all(line.startswith("{") for line in result.stderr.splitlines()), "JSON logs"
    days = [date.today() - timedelta(days=d) for d in (3, 2, 1)]
    counts = topic_counts(topic)
    assert set(counts) == expected_keys(simulator, (1, 2, 3, 4, 5), days)
    assert max(counts.values()) == 1

    (plain,) = [doc for doc in manifests("cronjob.yaml") if doc["kind"] == "CronJob"]
    again = run(argv(container(plain)["args"]), env)  # everything is up to date already
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((data / "summary.json").read_text())
    assert summary["outcome"] == "ok" and summary["totals"]["visits_sent"] == 0
    assert summary["totals"]["sites"] == 5


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser


def test_systemd_units(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    service, timer = unit("matomo-kafka.service"), unit("matomo-kafka.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Unit"] == "matomo-kafka.service"
    assert timer["Timer"]["Persistent"] == "true" and timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"

    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv[0] == "/opt/matomo-kafka/.venv/bin/matomo-kafka" and argv[1] == "run"
    simulator = sim_factory(sim_sites(1, 2))
    start = (date.today() - timedelta(days=2)).isoformat()
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic,
                                                        START_DATE=start))  # fmt: skip
    summary = tmp_path / "summary.json"
    places = {"/etc/matomo-kafka/parm": str(parm),
              "/var/lib/matomo-kafka/summary.json": str(summary)}  # fmt: skip
    assert set(places) <= set(argv), "the test rewrites these paths"
    local = [str(VENV_BIN / "matomo-kafka"), *(places.get(arg, arg) for arg in argv[1:])]
    result = run(local, clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(summary.read_text())["totals"]["visits_sent"] == 2 * 2 * 4

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: units checked by parsing only")
    units = tmp_path / "units"
    units.mkdir()
    text = (DEPLOY / "systemd" / "matomo-kafka.service").read_text()
    (units / "matomo-kafka.service").write_text(text.replace(argv[0], local[0]))
    shutil.copy(DEPLOY / "systemd" / "matomo-kafka.timer", units)
    verify = subprocess.run(
        ["systemd-analyze", "verify", *(str(path) for path in sorted(units.iterdir()))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert calendar.returncode == 0, calendar.stderr


def test_control_m_jobs_drive_the_launcher(tmp_path: Path, topic: str, sim_factory: Any) -> None:
    folders = json.loads((DEPLOY / "control-m" / "jobs.json").read_text())
    jobs = {name: job for folder in folders.values() for name, job in folder.items()
            if isinstance(job, dict) and job.get("Type") == "Job:Command"}  # fmt: skip
    assert set(jobs) == {"DDWA7AJA0_KFK", "DDWA7AJA0_KFK_S0", "DDWA7AJA0_KFK_S1"}
    launcher = REPO / "shell" / "DDWA7AJA0_KFK.KSH"
    simulator = sim_factory(sim_sites(1, 2, 3, 4))
    parm = write_parm(tmp_path / "parm", **base_values(tmp_path, simulator.url, topic,
                                                        MATOMO_ID_SITE="1,2,3,4"))  # fmt: skip
    env = clean_env(PARM_DIR=str(parm), MATOMO_KAFKA_VENV=str(VENV_BIN.parent))
    summaries = []
    for name in ("DDWA7AJA0_KFK_S0", "DDWA7AJA0_KFK_S1"):
        argv = shlex.split(jobs[name]["Command"])
        assert argv[0] == "env" and argv[-1] == "%%ODATE"
        assert Path(argv[-2]).name == launcher.name
        settings = dict(arg.split("=", 1) for arg in argv[1:-2])
        summary = tmp_path / f"{name}.json"
        settings["MATOMO_SUMMARY_FILE"] = str(summary)
        result = run(["env", *(f"{k}={v}" for k, v in settings.items()), "sh", str(launcher),
                      "20240304"], env)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "exit code 0" in result.stdout
        summaries.append(json.loads(summary.read_text()))
    assert [s["shard"] for s in summaries] == ["0/2", "1/2"]
    done = sorted(site["site"] for s in summaries for site in s["sites"])
    assert done == [1, 2, 3, 4]
    days = [date(2024, 3, d) for d in (1, 2, 3)]
    counts = topic_counts(topic)
    assert set(counts) == expected_keys(simulator, (1, 2, 3, 4), days)
    assert max(counts.values()) == 1
    single = shlex.split(jobs["DDWA7AJA0_KFK"]["Command"])
    assert Path(single[-2]).name == launcher.name and single[-1] == "%%ODATE"
