"""Benchmark: matomo-kafka against the raw floor and a naive reference, on this machine.

Runs, against the bundled simulator (its own process, real HTTP) and the real local broker:
  floor   fetch + parse the very pages the tool needs, same concurrency, nothing else;
  naive   the seed's way: sequential pages, json, HMAC, per-page producer flush, checkpoint;
  tool    `matomo-kafka run` (at-least-once);
for a day of 100k visits and for 20 sites x 5 days, with the simulator answering at once and
with 200 ms of latency per page. Each variant is a child process, so its CPU time and peak RSS
(wait4) are its own. Prints visits/s, CPU us per visit, peak RSS and the ratios.

    .venv/bin/python bench/bench.py --repeat 3 --big   # the table of the README
    .venv/bin/python bench/bench.py --quick            # smaller sizes, for a smoke run

--repeat N runs every variant N times (the 1M-visit day once) and keeps, for each, its lowest
CPU and its lowest wall time (and the highest peak RSS): this machine is shared, and its
speed varies by 10-30 % between runs.

Needs the local broker: scripts/kafka-local.sh start. Numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
SALT = "bench-salt"
COLUMNS = ("visitIp", "visitorId", "userId")  # three pseudonymised columns, as in the targets
LIMIT = 1000
FIRST_DAY = date(2024, 3, 1)
BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"


@dataclass(frozen=True)
class Scenario:
    name: str
    sites: int
    days: int
    visits_per_day: int

    @property
    def visits(self) -> int:
        return self.sites * self.days * self.visits_per_day

    def pages(self) -> list[tuple[int, str, int]]:
        """(site, day, offset) of every request a reader must make, the short page included."""
        pages = []
        for site in range(1, self.sites + 1):
            for d in range(self.days):
                day = (FIRST_DAY + timedelta(days=d)).isoformat()
                for offset in range(0, self.visits_per_day + 1, LIMIT):
                    pages.append((site, day, offset))
        return pages


@dataclass
class Result:
    seconds: float
    cpu: float
    rss_mb: float
    visits: int


# -- child processes ---------------------------------------------------------------------


def run_child(args: list[str], env: dict[str, str] | None = None) -> Result:
    """Runs a child, returns its wall time, CPU (user+sys) and peak RSS from wait4."""
    started = time.monotonic()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {' '.join(args)}\n{out}\n{err[-3000:]}")
    visits = 0
    for line in out.splitlines():
        if line.startswith("VISITS "):
            visits = int(line.split()[1])
    return Result(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, visits)


def floor_main(url: str, pages_file: str, concurrency: int) -> None:
    """The floor: POST the same pages with the same concurrency, parse, nothing else."""
    import httpx
    import orjson

    pages = json.loads(Path(pages_file).read_text())
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency))

    def fetch(page: list[Any]) -> int:
        site, day, offset = page
        response = client.post(url, data={
            "module": "API", "method": "Live.getLastVisitsDetails", "format": "json",
            "idSite": site, "period": "day", "date": day, "filter_limit": LIMIT,
            "filter_offset": offset, "filter_sort_order": "asc", "token_auth": TOKEN,
        })  # fmt: skip
        return len(orjson.loads(response.content))

    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(fetch, pages))
    print(f"VISITS {total}")


def naive_main(url: str, sites: int, days: int, topic: str, state: str) -> None:
    """The seed's way: one page at a time, json, HMAC, rename, flush per page, checkpoint."""
    import httpx
    from confluent_kafka import Producer

    client = httpx.Client(timeout=120)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    key = SALT.encode()
    total = 0
    for site in range(1, sites + 1):
        for d in range(days):
            day = (FIRST_DAY + timedelta(days=d)).isoformat()
            offset = 0
            while True:
                response = client.post(url, data={
                    "module": "API", "method": "Live.getLastVisitsDetails", "format": "json",
                    "idSite": site, "period": "day", "date": day, "filter_limit": LIMIT,
                    "filter_offset": offset, "filter_sort_order": "asc", "token_auth": TOKEN,
                })  # fmt: skip
                visits = json.loads(response.text)
                for visit in visits:
                    if "dimension1" in visit:
                        visit["Plan"] = visit.pop("dimension1")
                    for action in visit.get("actionDetails", []):
                        if "dimension2" in action:
                            action["Page Type"] = action.pop("dimension2")
                    for column in COLUMNS:
                        if visit.get(column) is not None:
                            visit[column] = hmac.new(
                                key, str(visit[column]).encode(), hashlib.sha256
                            ).hexdigest()
                    producer.produce(topic, json.dumps(visit).encode(),
                                     key=f"{site}:{visit['idVisit']}")  # fmt: skip
                producer.flush()
                offset += len(visits)
                total += len(visits)
                Path(state, f"offset{site}.txt").write_text(str(offset))
                if len(visits) < LIMIT:
                    break
    print(f"VISITS {total}")


# -- orchestration -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(scenario: Scenario, latency: float, workdir: Path) -> tuple[Any, str]:
    days = {(FIRST_DAY + timedelta(days=d)).isoformat(): scenario.visits_per_day
            for d in range(scenario.days)}  # fmt: skip
    config = {
        "token": TOKEN,
        "latency_s": latency,
        "sites": [
            {
                "idsite": s,
                "name": f"site {s}",
                "timezone": "UTC",
                "default_visits": 0,
                "visits": days,
            }
            for s in range(1, scenario.sites + 1)
        ],
    }
    path = workdir / f"sim-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "matomo_kafka.cli", "simulate", "--port", str(port),
         "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/index.php"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    return process, url


#: Topics this process created: deleted at its end, as a 1M-visit run leaves 3.4 GB behind.
CREATED_TOPICS: list[str] = []


def create_topic() -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(30)
    CREATED_TOPICS.append(name)
    return name


def delete_created_topics() -> None:
    from confluent_kafka.admin import AdminClient

    if CREATED_TOPICS:
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        for future in admin.delete_topics(CREATED_TOPICS, operation_timeout=30).values():
            future.result(60)
        CREATED_TOPICS.clear()


def tool_env(scenario: Scenario, url: str, topic: str, state: Path, concurrency: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    env.update({
        "START_DATE": FIRST_DAY.isoformat(), "MATOMO_FILTER_LIMIT": str(LIMIT),
        "FILE_PATH_FILTERDATE": str(state / "filterdate"),
        "FILE_PATH_LAST_OFFSET": str(state / "last_filter_offset"),
        "COLONNE_ANNOMYSE": ",".join(COLUMNS), "SALAGE": SALT, "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": ",".join(str(s) for s in range(1, scenario.sites + 1)),
        "MATOMO_API_URL": url, "MATOMO_API_TOKEN": TOKEN, "KAFKA_SERVERS": BOOTSTRAP,
        "CLUSTERID": "BENCH", "MATOMO_MAX_CONCURRENCY": str(concurrency),
    })  # fmt: skip
    return env


def best_of(runs: list[Result]) -> Result:
    """Lowest CPU and lowest wall time of a variant's runs, highest peak RSS."""
    return Result(
        min(r.seconds for r in runs),
        min(r.cpu for r in runs),
        max(r.rss_mb for r in runs),
        runs[0].visits,
    )


def measure(
    scenario: Scenario, latency: float, concurrency: int, workdir: Path, repeat: int = 1
) -> dict:
    runs = [measure_once(scenario, latency, concurrency, workdir) for _ in range(repeat)]
    return {name: best_of([run[name] for run in runs]) for name in runs[0]}


def measure_once(scenario: Scenario, latency: float, concurrency: int, workdir: Path) -> dict:
    simulator, url = start_simulator(scenario, latency, workdir)
    run_date = (FIRST_DAY + timedelta(days=scenario.days)).isoformat()
    try:
        pages_file = workdir / "pages.json"
        pages_file.write_text(json.dumps(scenario.pages()))
        results = {
            "floor": run_child(
                [sys.executable, __file__, "floor", url, str(pages_file), str(concurrency)]
            ),
        }
        state = Path(tempfile.mkdtemp(dir=workdir))
        results["naive"] = run_child([sys.executable, __file__, "naive", url,
                                      str(scenario.sites), str(scenario.days), create_topic(),
                                      str(state)])  # fmt: skip
        state = Path(tempfile.mkdtemp(dir=workdir))
        parm = state / "parm"
        parm.mkdir()
        env = tool_env(scenario, url, create_topic(), state, concurrency)
        tool = run_child([sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir",
                          str(parm), "--run-date", run_date, "-q"], env=env)  # fmt: skip
        tool.visits = scenario.visits
        results["matomo-kafka"] = tool
    finally:
        simulator.terminate()
        simulator.wait()
    for name, result in results.items():
        if result.visits != scenario.visits:
            raise SystemExit(f"{name} moved {result.visits} visits, expected {scenario.visits}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--big", action="store_true", help="add the 1M-visit day")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant, best kept")
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    scenarios = [Scenario("1 day x 100k", 1, 1, 100_000 // scale),
                 Scenario("20 sites x 5 days", 20, 5, 2_000 // scale)]  # fmt: skip
    latencies = [0.0, 0.2]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_created_topics)
        for scenario in scenarios:
            for latency in latencies:
                results = measure(scenario, latency, options.concurrency, Path(tmp), options.repeat)
                rows.append((scenario, latency, results))
                print_rows([rows[-1]], header=len(rows) == 1)
        if options.big:
            big = Scenario("1 day x 1M", 1, 1, 1_000_000)
            results = measure(big, 0.0, options.concurrency, Path(tmp))  # for its peak RSS
            print_rows([(big, 0.0, results)], header=False)


def print_rows(rows: list[tuple[Scenario, float, dict]], header: bool) -> None:
    if header:
        print(f"{'scenario':<19} {'latency':>7} {'variant':<13} {'visits/s':>9} "
              f"{'wall s':>7} {'CPU us/visit':>12} {'peak RSS MB':>11} {'wall/floor':>10} "
              f"{'naive/tool':>10}")  # fmt: skip
    for scenario, latency, results in rows:
        floor, naive, tool = results["floor"], results["naive"], results["matomo-kafka"]
        for name, result in results.items():
            ratio_floor = result.seconds / floor.seconds
            speedup = f"{naive.seconds / tool.seconds:10.2f}" if name == "matomo-kafka" else ""
            print(f"{scenario.name:<19} {latency * 1000:>5.0f}ms {name:<13} "
                  f"{scenario.visits / result.seconds:>9.0f} {result.seconds:>7.2f} "
                  f"{result.cpu / scenario.visits * 1e6:>12.1f} {result.rss_mb:>11.0f} "
                  f"{ratio_floor:>10.2f} {speedup:>10}", flush=True)  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        floor_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        naive_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        main()
