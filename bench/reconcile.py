"""Benchmark: `matomo-kafka reconcile` of one big day against `run` of the same day (issue 22):
Matomo requests, wall time and peak RSS of each command (a child process each, its peak RSS
by GNU time: a child forked from this process would report this process's RSS as its own
ru_maxrss, since Linux keeps the larger at exec), through the real broker and the bundled
simulator over real HTTP (in this process, so its request log can be counted).

Steps: `run` sends the day (--visits visits, yesterday, one site in UTC); --erase visits are
erased in the simulator and the whole day is anonymised (every visit changes); then
`reconcile` (dry run), `reconcile --apply --yes` (all visits as updates, the tombstones) and a
second `reconcile --apply` (nothing to send). The claim checked: no more Matomo requests than
`run` makes for that day, memory that does not hold the day's messages.

    KAFKA_PORT=29092 .venv/bin/python bench/reconcile.py                  # 40,000 visits
    KAFKA_PORT=29092 .venv/bin/python bench/reconcile.py --visits 5000    # quicker

Needs the local broker: scripts/kafka-local.sh start. Numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from matomo_kafka.simulator import MatomoSimulator, SimConfig, SimSite
from support.kafka import create_retained_topic, delete_topics

BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
TOKEN = "bench-token"
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)


def tool_env(url: str, topic: str, state: Path, first: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    env.update({
        "START_DATE": first, "MATOMO_FILTER_LIMIT": "1000",
        "FILE_PATH_FILTERDATE": str(state / "filterdate"),
        "FILE_PATH_LAST_OFFSET": str(state / "last_filter_offset"),
        "COLONNE_ANNOMYSE": "visitIp,visitorId", "SALAGE": "bench-salt", "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": "1", "MATOMO_API_URL": url, "MATOMO_API_TOKEN": TOKEN,
        "KAFKA_SERVERS": BOOTSTRAP, "CLUSTERID": "BENCH", "MATOMO_SETTLE_MINUTES": "0",
        "MATOMO_MAX_RECONCILE_DAYS": "92",
    })  # fmt: skip
    return env


def measured(sim: MatomoSimulator, env: dict[str, str], state: Path, *args: str) -> str:
    """Runs the CLI; one line: Matomo requests (Live pages apart), wall time, peak RSS."""
    sim.clear_requests()
    parm = state / "parm"
    parm.mkdir(exist_ok=True)
    out, peak = state / "out.txt", state / "peak.txt"
    started = time.perf_counter()
    with out.open("w") as handle:
        command = [TIME, "-f", "%M", "-o", str(peak), sys.executable, "-m", "matomo_kafka.cli",
                   *args, "--parm-dir", str(parm)]  # fmt: skip
        code = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    kbytes = int(peak.read_text().split()[-1])
    methods = Counter(str(r.get("method")) for r in sim.requests)
    live = methods.pop("Live.getLastVisitsDetails", 0)
    others = ", ".join(f"{m} {n}" for m, n in sorted(methods.items()))
    return (f"exit {code}, {live + sum(methods.values())} Matomo requests ({live} Live pages; "
            f"{others}), {seconds:.1f} s, peak RSS {kbytes / 1024:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=40_000, help="visits of the day")
    parser.add_argument("--erase", type=int, default=50, help="visits erased in Matomo")
    args = parser.parse_args()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    day = yesterday.isoformat()
    site = SimSite(idsite=1, name="big", timezone="UTC", default_visits=0,
                   visits={day: args.visits})  # fmt: skip
    sim = MatomoSimulator(SimConfig(token=TOKEN, sites=[site])).start()
    topic = create_retained_topic(BOOTSTRAP, "bench.reconcile")
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    env = tool_env(sim.url, topic, workdir, day)
    try:
        print(f"broker {BOOTSTRAP}; site 1, {day}: {args.visits:,} visits, MATOMO_FILTER_LIMIT "
              "1000")  # fmt: skip
        print(f"  run:                      {measured(sim, env, workdir, 'run', '-q')}")
        ids = [int(v["idVisit"]) for v in sim.expected_visits(1, day)]
        sim.delete_visits([(1, i) for i in ids[:: max(1, len(ids) // args.erase)][: args.erase]])
        sim.anonymize_raw_data([1], yesterday, yesterday, ip=True, location=True, user_id=True)
        print(f"  then {args.erase} erased and every visit anonymised in Matomo")
        span = ("--site", "1", "--from", day, "--to", day)
        summary = workdir / "reconcile.json"
        steps: list[tuple[str, tuple[str, ...]]] = [
            ("reconcile (dry run)", ()),
            ("reconcile --apply --yes", ("--apply", "--yes")),
            ("reconcile --apply again", ("--apply",)),
        ]
        for label, extra in steps:
            line = measured(sim, env, workdir, "reconcile", *span, *extra, "--summary-file",
                            str(summary))  # fmt: skip
            totals = json.loads(summary.read_text())["totals"]
            figures = ", ".join(f"{key} {totals[key]}" for key in ("missing", "changed", "erased",
                                                                    "sent"))  # fmt: skip
            print(f"  {label + ':':<25} {line}\n{'':28}{figures}")
    finally:
        sim.stop()
        delete_topics(BOOTSTRAP, [topic])


if __name__ == "__main__":
    main()
