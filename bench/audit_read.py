"""Benchmark: what `matomo-kafka audit` of one recent day costs when the topic also holds many
older records (issue 16, part 3).

Two fresh topics get the same `matomo-kafka run` (1 site in UTC, the last --days days before
today, --per-day visits each, from the bundled simulator over real HTTP); one of them first gets
--older records produced straight into it (keys of the same site and of another one, headers of
older days, 60-byte values, timestamps spread over the 30 days before the first day run). Then
`matomo-kafka audit --site 1 --from <yesterday> --to <yesterday>` runs once on each topic
(a child process: wall time includes interpreter start and Matomo's Live listing), and, for
comparison, the former way of reading is timed in this process: the whole older topic read
from its first offset (topic_read.read_sent from the epoch).

The run's records are all produced now, so the recent read holds every day run, not only
yesterday's (a daily run would have produced the older days' records on their own days).
Topics are created with retention.ms=-1 (the older records' timestamps are past the default
7 days) and deleted at the end.

    KAFKA_PORT=29092 .venv/bin/python bench/audit_read.py                 # 1.5M older records
    KAFKA_PORT=29092 .venv/bin/python bench/audit_read.py --older 100000  # quicker

Needs the local broker: scripts/kafka-local.sh start. Numbers are for this machine only.
The older-records filler and the retained topics come from tests/support/kafka.py, shared with
tests/integration/test_audit.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from matomo_kafka.config.load import load_settings
from matomo_kafka.ops.topic_read import read_sent, read_start
from support.kafka import create_retained_topic, delete_topics, fill_older
from support.simulator_process import start_simulator_process

BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
TOKEN = "bench-token"


# -- the bench -----------------------------------------------------------------------------


def start_simulator(
    workdir: Path, days: list[date], per_day: int
) -> tuple[subprocess.Popen[bytes], str]:
    visits = {day.isoformat(): per_day for day in days}
    site = {"idsite": 1, "name": "site 1", "timezone": "UTC", "default_visits": 0, "visits": visits}
    return start_simulator_process({"token": TOKEN, "sites": [site]}, workdir / "sim.json")


def tool_env(url: str, topic: str, state: Path, first: date) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    env.update({
        "START_DATE": first.isoformat(), "MATOMO_FILTER_LIMIT": "1000",
        "FILE_PATH_FILTERDATE": str(state / "filterdate"),
        "FILE_PATH_LAST_OFFSET": str(state / "last_filter_offset"),
        "COLONNE_ANNOMYSE": "visitIp,visitorId", "SALAGE": "bench-salt", "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": "1", "MATOMO_API_URL": url, "MATOMO_API_TOKEN": TOKEN,
        "KAFKA_SERVERS": BOOTSTRAP, "CLUSTERID": "BENCH", "MATOMO_SETTLE_MINUTES": "0",
    })  # fmt: skip
    return env


def cli(env: dict[str, str], state: Path, *args: str) -> tuple[float, str]:
    """Runs the CLI, returns its wall time and stdout; exits on a non-zero code."""
    parm = state / "parm"
    parm.mkdir(exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "matomo_kafka.cli", *args, "--parm-dir",
                             str(parm)], env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"matomo-kafka {args[0]} exited {result.returncode}:\n"
                         f"{result.stdout}{result.stderr}")  # fmt: skip
    return seconds, result.stdout


def read_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("read "))


def topic_read(env: dict[str, str], state: Path, day: date, since: datetime) -> str:
    """The topic read alone, in this process (no interpreter start, no Matomo): from the first
    record stamped at or after `since`, as audit does, or from the epoch, the former way."""
    settings = load_settings(state / "parm", env)
    started = time.perf_counter()
    read = read_sent(settings, 1, day, day, since)
    seconds = time.perf_counter() - started
    return (f"{seconds:5.2f} s  read {read.read:,} records of {read.total:,}, "
            f"{sum(read.sent[day].values()):,} of them {day}'s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--older", type=int, default=1_500_000, help="older records")
    parser.add_argument("--days", type=int, default=3, help="days run, ending yesterday")
    parser.add_argument("--per-day", type=int, default=5000, help="visits a day run")
    args = parser.parse_args()

    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    days = [yesterday - timedelta(days=k) for k in reversed(range(args.days))]
    first_start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    simulator, url = start_simulator(workdir, days, args.per_day)
    topics: list[str] = []
    try:
        print(f"broker {BOOTSTRAP}; run: site 1, {days[0]} .. {yesterday}, {args.per_day:,} "
              f"visits a day; audit: {yesterday}")  # fmt: skip
        audits: dict[str, tuple[float, str]] = {}
        reads: dict[str, str] = {}
        older_topic = f"with {args.older:,} older"
        for label, older in (("without older records", 0), (older_topic, args.older)):
            topic = create_retained_topic(BOOTSTRAP, "bench.audit")
            topics.append(topic)
            if older:
                started = time.perf_counter()
                fill_older(BOOTSTRAP, topic, older, first_start - timedelta(hours=2))
                print(f"  filled {older:,} older records in {time.perf_counter() - started:.1f} s")
            state = workdir / f"state-{len(topics)}"
            state.mkdir()
            env = tool_env(url, topic, state, days[0])
            run_s, _ = cli(env, state, "run", "--run-date", today.isoformat(), "-q")
            print(f"  {label}: run of {args.days * args.per_day:,} visits in {run_s:.1f} s")
            audits[label] = cli(env, state, "audit", "--site", "1", "--from",
                                yesterday.isoformat(), "--to", yesterday.isoformat())  # fmt: skip
            if older:
                since = read_start(yesterday, UTC)
                reads["from the day's start - 1 h"] = topic_read(env, state, yesterday, since)
                epoch = datetime(1970, 1, 1, tzinfo=UTC)
                reads["from the first offset (former)"] = topic_read(env, state, yesterday, epoch)
        print("\nmatomo-kafka audit (child process, wall: interpreter start + topic + Live):")
        for label, (seconds, stdout) in audits.items():
            print(f"  {label:>30}: {seconds:5.2f} s  {read_line(stdout)}")
        print(f"topic read alone, in process, {older_topic} records:")
        for label, line in reads.items():
            print(f"  {label:>30}: {line}")
    finally:
        simulator.terminate()
        simulator.wait(10)
        if topics:
            delete_topics(BOOTSTRAP, topics)


if __name__ == "__main__":
    main()
