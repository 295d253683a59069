"""Benchmark: DELIVERY=at_least_once against DELIVERY=exactly_once, on this machine.

A 20k-visit extraction (2 sites x 10 days x 1000 visits) by `matomo-kafka run`, against the
bundled simulator (its own process, real HTTP) and the real local broker, in each mode, with
pages of 1000 and of 100 visits (exactly-once commits one transaction per page), and with
the simulator answering at once or after 200 ms a page. Each run gets a fresh topic; the
visits are read back with isolation.level=read_committed and must be there exactly once.
Prints wall time, CPU time, visits/s and transactions.

    .venv/bin/python bench/delivery.py            # 3 runs per cell, the median is printed
    .venv/bin/python bench/delivery.py --runs 1   # quicker

Needs the local broker: scripts/kafka-local.sh start. Numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.kafka import read_committed
from support.parm import write_parm
from support.simulator_process import start_simulator_process

BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
TOKEN = "bench-token"
SITES, DAYS, PER_DAY = 2, 10, 1000
RUN_DATE = "2024-03-11"  # reads 2024-03-01 .. 2024-03-10


def start_simulator(workdir: Path, latency: float) -> tuple[subprocess.Popen[bytes], str]:
    days = {f"2024-03-{d:02d}": PER_DAY for d in range(1, DAYS + 1)}
    sites = [{"idsite": s, "name": f"site {s}", "timezone": "UTC", "default_visits": 0,
              "visits": days} for s in range(1, SITES + 1)]  # fmt: skip
    config = {"token": TOKEN, "latency_s": latency, "sites": sites}
    return start_simulator_process(config, workdir / f"sim-{uuid.uuid4().hex[:6]}.json")


def new_topic(admin: AdminClient) -> str:
    name = f"bench.delivery.{uuid.uuid4().hex[:10]}"
    for future in admin.create_topics([NewTopic(name, 3, 1)]).values():
        future.result(timeout=30)
    return name


def committed_keys(topic: str) -> Counter[str]:
    return Counter(record.key for record in read_committed(topic))


def bench_parm(
    workdir: Path, url: str, topic: str, sites: str, delivery: str, limit: int, **extra: str
) -> Path:
    """A fresh parm/ directory (its own checkpoint files) for one run against the simulator."""
    data = workdir / uuid.uuid4().hex[:8]
    return write_parm(
        data / "parm",
        START_DATE="2024-03-01",
        MATOMO_FILTER_LIMIT=str(limit),
        FILE_PATH_LAST_OFFSET=f"{data}/last_filter_offset",
        FILE_PATH_FILTERDATE=f"{data}/filterdate",
        COLONNE_ANNOMYSE="visitIp,visitorId,userId",
        SALAGE="bench-salt",
        KAFKA_TOPIC=topic,
        MATOMO_ID_SITE=sites,
        MATOMO_API_URL=url,
        MATOMO_API_TOKEN=TOKEN,
        KAFKA_SERVERS=BOOTSTRAP,
        CLUSTERID="BENCH",
        DELIVERY=delivery,
        **extra,
    )


def run_once(workdir: Path, url: str, topic: str, delivery: str, limit: int) -> tuple[float, float]:
    parm = bench_parm(workdir, url, topic, "1,2", delivery, limit)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    args = [sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir", str(parm),
            "--run-date", RUN_DATE, "-q"]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        stderr = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"run failed: {stderr[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    total = SITES * DAYS * PER_DAY
    print(f"{total} visits ({SITES} sites x {DAYS} days x {PER_DAY}), median of {options.runs}")
    print(f"{'latency':>8} {'page':>5} {'delivery':>14} {'wall s':>7} {'cpu s':>6} "
          f"{'visits/s':>9} {'txns':>5}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for latency in (0.0, 0.2):
            simulator, url = start_simulator(workdir, latency)
            try:
                for limit in (1000, 100):
                    pages = SITES * DAYS * (PER_DAY // limit + 1)  # the short page included
                    for delivery in ("at_least_once", "exactly_once"):
                        walls, cpus = [], []
                        for _ in range(options.runs):
                            topic = new_topic(admin)
                            wall, cpu = run_once(workdir, url, topic, delivery, limit)
                            keys = committed_keys(topic)
                            assert len(keys) == total and max(keys.values()) == 1, "not once"
                            walls.append(wall)
                            cpus.append(cpu)
                        wall, cpu = statistics.median(walls), statistics.median(cpus)
                        txns = str(pages) if delivery == "exactly_once" else "-"
                        cells = f"{wall:>7.2f} {cpu:>6.2f} {total / wall:>9.0f} {txns:>5}"
                        print(f"{latency * 1000:>6.0f}ms {limit:>5} {delivery:>14} {cells}",
                              flush=True)  # fmt: skip
            finally:
                simulator.terminate()
                simulator.wait()


if __name__ == "__main__":
    main()
