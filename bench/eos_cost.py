"""Benchmark: what exactly-once costs against at-least-once, side by side in the same run.

Two scenarios (issue 23), each run by `matomo-kafka run` in both delivery modes, alternately
(at-least-once first in odd rounds, exactly-once first in even ones), against the bundled
simulator (its own process, real HTTP, Matomo answering in `--latency-ms` a page) and the real
local broker, pages of 1000 visits, MATOMO_MAX_CONCURRENCY=4:

- `sites`: `--sites` (200) small sites x 2 days of 20-80 visits (seeded);
- `big-day`: one site, one day of 40,000 visits.

Each run gets a fresh topic (3 partitions) and, in exactly-once mode, a fresh state topic; its
visits are read back with read_committed and must all be there exactly once. Printed per mode:
the lowest and the median wall time of the rounds, the lowest CPU time, and the peak thread
count and open file descriptors of the run's process (sampled every 10 ms from /proc); then
exactly-once wall / at-least-once wall, of the lowest (target <= 1.15) and of the medians.

    KAFKA_PORT=58092 .venv/bin/python bench/eos_cost.py             # 3 rounds
    KAFKA_PORT=58092 .venv/bin/python bench/eos_cost.py --rounds 1 --sites 500

Needs the local broker: scripts/kafka-local.sh start. Numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from delivery import bench_parm, committed_keys

from support.simulator_process import start_simulator_process

BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
TOKEN = "bench-token"
MODES = ("at_least_once", "exactly_once")
TARGET = 1.15


@dataclass
class Scenario:
    name: str
    sites: list[dict[str, Any]]
    run_date: str

    @property
    def visits(self) -> int:
        return sum(sum(site["visits"].values()) for site in self.sites)


@dataclass
class Figures:
    wall: float
    cpu: float
    threads: int
    fds: int


def small_sites(count: int) -> Scenario:
    rng = random.Random(23)
    sites = [{"idsite": i, "name": f"site {i}", "timezone": "UTC", "default_visits": 0,
              "visits": {"2024-03-01": rng.randint(20, 80), "2024-03-02": rng.randint(20, 80)}}
             for i in range(1, count + 1)]  # fmt: skip
    return Scenario(f"sites-{count}", sites, "2024-03-03")


def big_day() -> Scenario:
    site = {"idsite": 1, "name": "big", "timezone": "UTC", "default_visits": 0,
            "visits": {"2024-03-01": 40_000}}  # fmt: skip
    return Scenario("big-day", [site], "2024-03-02")


def new_topic(admin: AdminClient) -> str:
    name = f"bench.eos.{uuid.uuid4().hex[:10]}"
    for future in admin.create_topics([NewTopic(name, 3, 1)]).values():
        future.result(timeout=30)
    return name


def sample(pid: int, peak: dict[str, int], done: threading.Event) -> None:
    """Peak threads and open file descriptors of the process, every 10 ms."""
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("Threads:"):
                        peak["threads"] = max(peak["threads"], int(line.split()[1]))
            peak["fds"] = max(peak["fds"], len(os.listdir(f"/proc/{pid}/fd")))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
        done.wait(0.01)


def run_once(workdir: Path, url: str, scenario: Scenario, topic: str, delivery: str) -> Figures:
    sites = ",".join(str(site["idsite"]) for site in scenario.sites)
    parm = bench_parm(workdir, url, topic, sites, delivery, 1000, MATOMO_MAX_CONCURRENCY="4")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", scenario.run_date, "-q"]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"threads": 0, "fds": 0}
    done = threading.Event()
    sampler = threading.Thread(target=sample, args=(process.pid, peak, done), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        stderr = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{scenario.name} {delivery}: run failed: {stderr[-2000:]}")
    keys = committed_keys(topic)
    if len(keys) != scenario.visits or max(keys.values()) != 1:
        raise SystemExit(f"{scenario.name} {delivery}: not every visit exactly once")
    return Figures(wall, usage.ru_utime + usage.ru_stime, peak["threads"], peak["fds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--scenario", default="sites,big-day", help="sites, big-day or both")
    options = parser.parse_args()
    chosen = options.scenario.split(",")
    scenarios = [small_sites(options.sites)] if "sites" in chosen else []
    scenarios += [big_day()] if "big-day" in chosen else []
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    latency = options.latency_ms / 1000
    print(f"Matomo {options.latency_ms:.0f} ms a page, MATOMO_MAX_CONCURRENCY=4, pages of 1000, "
          f"best wall of {options.rounds} round(s)")  # fmt: skip
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for scenario in scenarios:
            config = {"token": TOKEN, "latency_s": latency, "sites": scenario.sites}
            path = workdir / f"sim-{scenario.name}.json"
            simulator, url = start_simulator_process(config, path)
            try:
                runs: dict[str, list[Figures]] = {mode: [] for mode in MODES}
                for round_ in range(options.rounds):
                    order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
                    for mode in order:
                        figures = run_once(workdir, url, scenario, new_topic(admin), mode)
                        runs[mode].append(figures)
                        print(f"  {scenario.name} round {round_ + 1} {mode}: {figures.wall:.2f} s",
                              flush=True)  # fmt: skip
            finally:
                simulator.terminate()
                simulator.wait()
            print(f"{scenario.name}: {len(scenario.sites)} site(s), {scenario.visits:,} visits")
            print(f"  {'delivery':>14} {'wall s':>7} {'median':>7} {'cpu s':>6} "
                  f"{'peak threads':>12} {'peak fds':>8}")  # fmt: skip
            best, middle = {}, {}
            for mode in MODES:
                wall = min(f.wall for f in runs[mode])
                median = statistics.median(f.wall for f in runs[mode])
                cpu = min(f.cpu for f in runs[mode])
                threads = max(f.threads for f in runs[mode])
                fds = max(f.fds for f in runs[mode])
                best[mode], middle[mode] = wall, median
                print(f"  {mode:>14} {wall:>7.2f} {median:>7.2f} {cpu:>6.2f} {threads:>12} "
                      f"{fds:>8}")  # fmt: skip
            ratio = best["exactly_once"] / best["at_least_once"]
            medians = middle["exactly_once"] / middle["at_least_once"]
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            verdicts.append(verdict)
            print(f"  exactly-once wall / at-least-once wall = {ratio:.2f} (<= {TARGET}: "
                  f"{verdict}); of the medians {medians:.2f}", flush=True)  # fmt: skip
    if "FAIL" in verdicts:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
