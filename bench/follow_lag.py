"""Benchmark: the lag of `matomo-kafka follow` (issue 15): how long after a visit's end (its last
action) the visit is in Kafka, against what the design promises: about MATOMO_VISIT_LENGTH +
MATOMO_SETTLE_MINUTES + up to MATOMO_FOLLOW_INTERVAL (the visit waits for the horizon, then for
the next cycle).

The real command runs as a service against the bundled simulator (over real HTTP) and the
local broker, with Matomo's defaults (visit length 1800 s, settle 10 min) and an interval of
300 s, on a clock that runs --speed times faster than real time: the simulator's clock and the
tool's (MATOMO_TEST_NOW=@file, rewritten every 10 ms) both read simulated = start + speed x
(wall - wall at start). Visits appear in the simulator as their last action passes. The lag of
each visit is the simulated time of its record's Kafka timestamp (CreateTime: when the tool
produced it) minus its lastActionTimestamp; visits that had ended before the service started
(the first cycle's catch-up) are left out. The tool's own work (a cycle, ~0.05 s) is
multiplied by the speed too, so the figures are slightly pessimistic.

    KAFKA_PORT=19092 .venv/bin/python bench/follow_lag.py                  # 3 simulated hours
    KAFKA_PORT=19092 .venv/bin/python bench/follow_lag.py --hours 1 --speed 120

Needs the local broker: scripts/kafka-local.sh start. Exit 1 if a visit came early (before
the horizon), twice, or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reliability as rel  # bench/: topic and parm helpers

from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite

BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
VISIT_LENGTH = 1800
SETTLE_MINUTES = 10
INTERVAL_SIM = 300.0  # simulated seconds between cycles (MATOMO_FOLLOW_INTERVAL's default)
START = datetime(2024, 3, 5, 21, 0, tzinfo=UTC)  # the run crosses midnight in every zone
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")


class RunningClock:
    """simulated = start + speed x (wall - wall0), written to a file every 10 ms and told to
    the simulator, until stopped."""

    def __init__(self, path: Path, simulator: MatomoSimulator, start: float, speed: float):
        self.path, self.simulator, self.start, self.speed = path, simulator, start, speed
        self.wall0 = time.time()
        self._stop = threading.Event()
        self.tick()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def at(self, wall: float) -> float:
        return self.start + self.speed * (wall - self.wall0)

    def tick(self) -> float:
        now = self.at(time.time())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{now}\n")
        os.replace(tmp, self.path)
        self.simulator.set_now(now)
        return now

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def read_all(topic: str) -> list[tuple[str, int, float]]:
    """(key, lastActionTimestamp, Kafka timestamp in wall seconds) of every record."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"lag-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[tuple[str, int, float]] = []
        todo = {p for p in partitions if ends[p] > 0}
        while todo:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    raise RuntimeError(message.error().str())
                stamp = orjson.loads(message.value())["lastActionTimestamp"]
                found.append((message.key().decode(), stamp, message.timestamp()[1] / 1000))
                if message.offset() + 1 >= ends[message.partition()]:
                    todo.discard(message.partition())
        return found
    finally:
        consumer.close()


def due_keys(simulator: MatomoSimulator, sites: list[SimSite], until: float) -> set[str]:
    """Keys of the visits whose last action is at or before `until` (from the day started)."""
    keys: set[str] = set()
    for site in sites:
        for day in ("2024-03-05", "2024-03-06", "2024-03-07"):
            keys.update(f"{site.idsite}:{int(v['idVisit'])}"
                        for v in simulator.expected_visits(site.idsite, day)
                        if v["lastActionTimestamp"] <= until)  # fmt: skip
    return keys


def run(
    hours: float, speed: float, per_day: int, dump: Path | None = None
) -> dict[str, float | int]:
    interval_real = INTERVAL_SIM / speed
    margin = VISIT_LENGTH + 60 * SETTLE_MINUTES
    sites = [SimSite(i + 1, f"site {i + 1}", zone, default_visits=per_day, tie_group=2)
             for i, zone in enumerate(ZONES)]  # fmt: skip
    simulator = MatomoSimulator(SimConfig(token=rel.TOKEN, sites=sites)).start()
    topic = rel.create_topic(BOOTSTRAP, prefix="bench.follow")
    work = Path(tempfile.mkdtemp(prefix="follow-lag-"))
    clock = RunningClock(work / "clock", simulator, START.timestamp(), speed)
    values = rel.parm_values(work / "data", simulator.url, topic, BOOTSTRAP,
                             MATOMO_ID_SITE=",".join(str(s.idsite) for s in sites),
                             START_DATE="2024-03-05", MATOMO_FILTER_LIMIT="1000",
                             MATOMO_FOLLOW_INTERVAL=str(interval_real),
                             MATOMO_VISIT_LENGTH=str(VISIT_LENGTH),
                             MATOMO_SETTLE_MINUTES=str(SETTLE_MINUTES),
                             MATOMO_SPS_USER="", MATOMO_SPS_MDP="")  # fmt: skip
    parm = rel.write_parm(work / "parm", values)
    env = rel.clean_env(MATOMO_TEST_NOW=f"@{clock.path}")
    log = (work / "follow.log").open("wb")
    started_sim = clock.tick()
    process = subprocess.Popen(rel.cli_command("follow", "--parm-dir", str(parm), "-q"),
                               env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        time.sleep(hours * 3600 / speed)
    finally:
        process.terminate()
        code = process.wait(timeout=120)
        ended_sim = clock.tick()
        clock.stop()
        simulator.stop()
        log.close()
    if code != 0:
        print((work / "follow.log").read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"follow exited {code}")
    records = read_all(topic)
    rel.delete_topic(BOOTSTRAP, topic)
    shutil.rmtree(work, ignore_errors=True)  # kept above when follow failed
    counts = Counter(key for key, _, _ in records)
    # Visits that ended after the service started, early enough to be due before it stopped.
    measured = [(key, stamp, clock.at(produced) - stamp) for key, stamp, produced in records
                if stamp > started_sim - margin]  # fmt: skip
    if dump is not None:
        dump.write_text("".join(f"{key},{stamp},{lag:.1f}\n" for key, stamp, lag in measured))
    lags = [lag for _, _, lag in measured]
    # Every visit due a whole interval before the end must be there.
    due = due_keys(simulator, sites, ended_sim - margin - INTERVAL_SIM)
    lags.sort()
    return {
        "simulated_hours": hours,
        "speed": speed,
        "visits": len(counts),
        "duplicates": sum(c - 1 for c in counts.values()),
        "measured": len(lags),
        "due": len(due),
        "missing": len(due - set(counts)),
        "design_min_s": margin,
        "design_mean_s": margin + INTERVAL_SIM / 2,
        "design_max_s": margin + INTERVAL_SIM,
        "lag_min_s": round(lags[0], 1),
        "lag_mean_s": round(statistics.fmean(lags), 1),
        "lag_p50_s": round(lags[len(lags) // 2], 1),
        "lag_p95_s": round(lags[int(len(lags) * 0.95)], 1),
        "lag_max_s": round(lags[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours to run")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds a second")
    parser.add_argument("--per-day", type=int, default=2000, help="visits a day per site")
    parser.add_argument("--dump", type=Path, help="writes key,lastActionTimestamp,lag lines")
    args = parser.parse_args()
    figures = run(args.hours, args.speed, args.per_day, args.dump)
    print(json.dumps(figures))
    print(
        f"follow lag over {figures['measured']} visits ({args.hours:g} simulated hours, "
        f"{len(ZONES)} sites, interval {INTERVAL_SIM:.0f}s, visit length {VISIT_LENGTH}s, "
        f"settle {SETTLE_MINUTES} min):\n"
        f"  design: {figures['design_min_s']}s to {figures['design_max_s']}s, mean "
        f"{figures['design_mean_s']}s\n"
        f"  measured: min {figures['lag_min_s']}s, mean {figures['lag_mean_s']}s, p50 "
        f"{figures['lag_p50_s']}s, p95 {figures['lag_p95_s']}s, max {figures['lag_max_s']}s\n"
        f"  {figures['visits']} visits in Kafka, {figures['duplicates']} duplicates, "
        f"{figures['missing']} of the {figures['due']} due missing"
    )
    early = figures["lag_min_s"] < figures["design_min_s"]
    return 1 if early or figures["duplicates"] or figures["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
