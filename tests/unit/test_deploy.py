"""deploy/ examples that need nothing running (issue #5): the Kubernetes manifests parse, and the
Control-M launcher sources parm/wa7.fonctions.env (a config error stops the run before any
network)."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import clean_env
from support.deploy import VENV_BIN, container, manifests, run
from support.kafka import REPO
from support.parm import base_values, write_parm


def test_kubernetes_manifests_parse() -> None:
    plain = {doc["kind"]: doc for doc in manifests("cronjob.yaml")}
    assert set(plain) == {"ConfigMap", "PersistentVolumeClaim", "CronJob"}
    cron = plain["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    template = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["restartPolicy"] == "Never"
    assert all(isinstance(arg, str) for arg in container(cron)["args"])
    assert set(plain["ConfigMap"]["data"]) == {"wa7_conf.ini", "wa7.env"}

    (sharded,) = [doc for doc in manifests("cronjob-sharded.yaml") if doc["kind"] == "CronJob"]
    job = sharded["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    count = job["completions"]
    assert job["parallelism"] == count
    assert f"$(JOB_COMPLETION_INDEX)/{count}" in container(sharded)["args"]


def test_launcher_sources_wa7_fonctions_env(tmp_path: Path) -> None:
    """parm/wa7.fonctions.env (the seed's shell environment), when present, is sourced by the
    launcher before the run: a function it defines is called there and what it exports
    reaches matomo-kafka (here --summary-file's variable). Absent, nothing changes. The
    configuration is invalid on purpose, so the run stops at once (exit 2) without network,
    and still writes its summary when told where."""
    launcher = REPO / "shell" / "DDWA7AJA0_KFK.KSH"
    values = base_values(tmp_path, "http://127.0.0.1:9/index.php", "t", START_DATE="never")
    parm = write_parm(tmp_path / "parm", **values)
    summary = tmp_path / "from-fonctions.json"
    env = clean_env(PARM_DIR=str(parm), MATOMO_KAFKA_VENV=str(VENV_BIN.parent))
    env.pop("MATOMO_SUMMARY_FILE", None)

    absent = run(["sh", str(launcher), "20240304"], env)
    assert absent.returncode == 2, absent.stdout + absent.stderr
    assert "START_DATE" in absent.stderr and "exit code 2" in absent.stdout
    assert not summary.exists()

    (parm / "wa7.fonctions.env").write_text(
        "# the seed's environment for the shell\n"
        "wa7_summary_to() {\n"
        "    MATOMO_SUMMARY_FILE=$1\n"
        "    export MATOMO_SUMMARY_FILE\n"
        "}\n"
        f"wa7_summary_to '{summary}'\n",
        encoding="utf-8",
    )
    present = run(["sh", str(launcher), "20240304"], env)
    assert present.returncode == 2, present.stdout + present.stderr
    assert "exit code 2" in present.stdout
    written = json.loads(summary.read_text())
    assert written["exit_code"] == 2 and written["run_date"] == "2024-03-04"
