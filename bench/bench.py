"""Benchmark: matomo-kafka against a page-level floor and a naive reference, on real shapes.

Each case runs the bundled simulator (its own process, real HTTP) and the real local broker,
and these variants, each a child process so that its CPU time and peak RSS (wait4) are its own:
  floor        fetch + parse only, `concurrency` slots, one queue of pages across all sites and
               days, not knowing any day's size: each (site, day) starts at offset 0, a full
               page makes its next offset needed, a short page ends the day. A free slot takes
               a needed page (the next page of a day known to be big first, then the first page
               of a new day) and, when none is left, reads ahead speculatively in a big day (up
               to `concurrency` of its pages in flight; those past the day's end are wasted).
               The reference for wall time.
  floor-known  the former floor: the exact list of pages, known in advance (a lower bound;
               not run unless asked for with --variants);
  naive        the seed's way: every site and day in turn, one page at a time, json, HMAC,
               a producer flush and a checkpoint per page;
  tool         `matomo-kafka run` (at-least-once), MATOMO_MAX_CONCURRENCY = the concurrency.

Scenarios (--scenario, comma-separated; default: all but day-1m):
  day-100k     1 site, 1 day of 100k visits; Matomo answering at once, and with 200 ms a page
  sites-20x5   20 sites x 5 days of 2,000 visits; the same two servers
  skew-a       4 sites x 11 days of 50-300 visits (pseudo-random, fixed) plus one day of 40,000
               visits in the middle of site 1's; 200 ms a page; concurrency 2 and 4
  skew-b       1 site with 3 days of 30,000 visits plus 20 sites of 200 visits a day (3 days);
               200 ms a page; concurrency 2 and 4
  workers      skew-b's visits on a Matomo with 2 workers (a request beyond them queues) that
               spends 20 ms + 0.18 ms a visit of a Live page (0.2 s a full page); concurrency
               2 and 4: 4 buys nothing over 2, and nobody may hold more than 4 in flight
  sites-200    200 sites x 3 days of 20-200 visits; 200 ms a page; concurrency 4 (add the
               variant tool-eos, `--variants floor,naive,tool,tool-eos`, for exactly-once)
  day-1m       1 day of 1M visits, no latency, for the peak RSS (added by --big)
  heavy-100    visits of 101 actions (about 48 KB of JSON each): site 1 with days of 3,000,
               150 and 1,500 visits, site 2 with 3 days of 100-250; a Matomo with 4 workers
               that spends 20 ms + 7 ms a visit of a Live page; concurrency 4
  heavy-500    visits of 501 actions (about 230 KB each): site 1 with days of 1,500 and 80
               visits, site 2 with 2 days of 60-120; 4 workers, 20 ms + 35 ms a visit;
               concurrency 4
"200 ms a page" is the simulator's latency_s: every page takes it, however many run at once.

For each case the bench prints, per variant: visits/s, wall time, CPU us a visit (user+sys,
interpreter start included), peak RSS, and Matomo's own view (the simulator's GET /__stats,
reset before each variant): Live requests, the most requests in flight at once (all methods),
the most waiting for a worker, and how busy it was: Live request time / (slots x the time from
the first request to the last answer), slots = min(concurrency, workers). Then one line per
target, with PASS or FAIL:
  tool wall / floor wall        <= 1.10        every case where Matomo takes time
  naive wall / tool wall        >= 1.8         skew-a and skew-b
  tool CPU / naive CPU          <= 0.65        day-100k without latency
  tool peak RSS                 < 150 MB       day-1m, skew-b and sites-200
  tool peak RSS                 < 200 MB       heavy-100 and heavy-500
  tool: Matomo requests         <= the floor's Live pages + 1 per 50 sites + 5    sites-200
  tool-eos wall / tool wall     <= 1.3         where tool-eos runs (exactly-once)
  max in flight (tools, floor)  <= concurrency every case: MATOMO_MAX_CONCURRENCY holds
and, as notes, what concurrency 4 bought each variant over 2 (on `workers`, 2 workers are the
limit, not the client). With as many requests in flight as workers, each worker idles between
an answer and the client's next request (the answer's transfer, the parse, the new request); a
request queued behind it hides that gap: about 5-10 % here with 0.2 s pages, more with
--quick's small ones. At --quick sizes interpreter start-up (about 0.5 s for the tool) weighs
on every ratio, so only full sizes say whether a target holds.

    .venv/bin/python bench/bench.py --repeat 3 --big      # every scenario, for docs/performance.md
    .venv/bin/python bench/bench.py --quick               # smaller sizes: a smoke run (minutes)
    .venv/bin/python bench/bench.py --scenario skew-a,skew-b --concurrency 4
    .venv/bin/python bench/bench.py --scenario workers --variants floor,tool
    .venv/bin/python bench/bench.py --scenario skew-b --variants tool --tool-env MALLOC_ARENA_MAX=2

--quick divides the big days by 10 and keeps fewer small days or sites (skew-a: 5 days,
skew-b: 4 small sites). --repeat N runs every variant N times (the 1M-visit day once) and keeps,
for each, its lowest CPU and its lowest wall time (and the highest peak RSS and in-flight
count): this machine is shared, and its speed varies by 10-30 % between runs. The naive loop
does not depend on the concurrency, so it runs once per scenario and server.

Needs the local broker (KAFKA_PORT, default 9092): scripts/kafka-local.sh start. Numbers are
for this machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.simulator_process import start_simulator_process  # noqa: E402

TOKEN = "bench-token"
SALT = "bench-salt"
COLUMNS = ("visitIp", "visitorId", "userId")  # three pseudonymised columns, as in the targets
LIMIT = 1000
FIRST_DAY = date(2024, 3, 1)
BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
VARIANTS = ("floor-known", "floor", "naive", "tool", "tool-eos")  # the order they run in
TOOL_ENV: dict[str, str] = {}  # --tool-env: more environment for the tool's runs only


# -- what is measured ----------------------------------------------------------------------


def day_iso(d: int) -> str:
    return (FIRST_DAY + timedelta(days=d)).isoformat()


@dataclass(frozen=True)
class Scenario:
    """Sites and their visits on each day from FIRST_DAY: `days[site][d]`."""

    name: str
    days: dict[int, tuple[int, ...]] = field(hash=False)
    actions: int = 0  # entries of every visit's actionDetails (0: the simulator's 1 to 6)

    @classmethod
    def uniform(cls, name: str, sites: int, days: int, visits_per_day: int) -> Scenario:
        return cls(name, {s: (visits_per_day,) * days for s in range(1, sites + 1)})

    @property
    def site_ids(self) -> list[int]:
        return sorted(self.days)

    @property
    def day_count(self) -> int:
        return max(len(counts) for counts in self.days.values())

    @property
    def visits(self) -> int:
        return sum(sum(counts) for counts in self.days.values())

    def site_days(self) -> list[tuple[int, str]]:
        """Every (site, day) a reader must look at, day by day (sizes not given)."""
        return [(s, day_iso(d)) for d in range(self.day_count) for s in self.site_ids]

    def pages(self) -> list[tuple[int, str, int]]:
        """(site, day, offset) of every request a reader must make, the short page included."""
        return [
            (site, day_iso(d), offset)
            for site, counts in sorted(self.days.items())
            for d, n in enumerate(counts)
            for offset in range(0, n + 1, LIMIT)
        ]


@dataclass(frozen=True)
class Server:
    """How the simulated Matomo spends its time on a Live page."""

    latency_s: float = 0.0  # every page, however many run at once
    workers: int = 0  # 0: no limit; else requests beyond them queue
    page_cost_s: float = 0.0  # worker time a page holds...
    visit_cost_s: float = 0.0  # ...plus this per visit in it

    @property
    def timed(self) -> bool:
        """Matomo takes time: wall-time ratios mean something (without, the simulator's
        own CPU is every variant's bottleneck)."""
        return self.latency_s > 0 or self.page_cost_s > 0 or self.visit_cost_s > 0

    def label(self) -> str:
        if self.workers:
            cost = f"{self.page_cost_s * 1e3:g} ms + {self.visit_cost_s * 1e3:g} ms/visit"
            return f"{self.workers} workers, {cost} a page"
        return f"{self.latency_s * 1e3:.0f}ms"

    def short(self) -> str:
        return f"{self.workers}w" if self.workers else f"{self.latency_s * 1e3:.0f}ms"

    def slots(self, concurrency: int) -> int:
        return min(concurrency, self.workers) if self.workers else concurrency


@dataclass(frozen=True)
class Case:
    key: str  # the --scenario name
    scenario: Scenario
    server: Server
    concurrency: int

    def label(self) -> str:
        return f"{self.key} {self.server.short()} c{self.concurrency}"


@dataclass
class Result:
    seconds: float
    cpu: float
    rss_mb: float
    visits: int
    stats: dict[str, Any] = field(default_factory=dict)  # the simulator's, for this run


#: Matomo's time for heavy visits: 4 workers, 20 ms a page + about 70 us an action of a visit.
HEAVY_100 = Server(workers=4, page_cost_s=0.02, visit_cost_s=0.007)
HEAVY_500 = Server(workers=4, page_cost_s=0.02, visit_cost_s=0.035)

SKEW_A_BIG = 40_000
SKEW_B_BIG = 30_000
LATENCY = Server(latency_s=0.2)
TWO_WORKERS = Server(workers=2, page_cost_s=0.02, visit_cost_s=0.00018)


def small_day(site: int, d: int) -> int:
    """50-300 visits, pseudo-random but the same on every run and machine."""
    digest = hashlib.sha256(f"{site}/{d}".encode()).digest()
    return 50 + int.from_bytes(digest[:4], "big") % 251


def skew_a(quick: bool) -> Scenario:
    days = 5 if quick else 11
    big = SKEW_A_BIG // (10 if quick else 1)
    counts = {s: [small_day(s, d) for d in range(days)] for s in range(1, 5)}
    counts[1][days // 2] = big
    return Scenario(
        f"4 sites x {days} days of 50-300 visits + 1 day of {big:,}",
        {s: tuple(c) for s, c in counts.items()},
    )


def many_sites(quick: bool) -> Scenario:
    """200 sites (20 with --quick) x 3 days of 20-200 visits (pseudo-random, fixed)."""
    sites = 20 if quick else 200
    days = {s: tuple(20 + (small_day(s, d) - 50) * 180 // 250 for d in range(3))
            for s in range(1, sites + 1)}  # fmt: skip
    return Scenario(f"{sites} sites x 3 days of 20-200 visits", days)


def skew_b(quick: bool) -> Scenario:
    big = SKEW_B_BIG // (10 if quick else 1)
    small_sites = 4 if quick else 20
    days: dict[int, tuple[int, ...]] = {1: (big,) * 3}
    days.update({s: (200,) * 3 for s in range(2, small_sites + 2)})
    return Scenario(f"1 site x 3 days of {big:,} + {small_sites} sites x 3 days of 200", days)


def heavy(quick: bool, actions: int) -> Scenario:
    """Visits of `actions` actions, big and small days mixed (see the module docstring)."""
    scale = 5 if quick else 1
    if actions <= 101:
        big = (3_000 // scale, 150, 1_500 // scale)
        small = tuple(100 + (small_day(2, d) - 50) * 150 // 250 for d in range(3))
    else:
        big = (1_500 // scale, 80)
        small = tuple(60 + (small_day(2, d) - 50) * 60 // 250 for d in range(2))
    days = {1: big, 2: small}
    shown = " + ".join(f"site {s}: {', '.join(f'{n:,}' for n in counts)}"
                       for s, counts in days.items())  # fmt: skip
    return Scenario(f"visits of {actions} actions, {shown}", days, actions)


def cases(quick: bool, keys: list[str], concurrency: list[int] | None) -> list[Case]:
    """The cases of the scenarios asked for, in the order of `keys`."""
    scale = 10 if quick else 1
    table: dict[str, tuple[Scenario, list[Server], list[int]]] = {
        "day-100k": (
            Scenario.uniform(f"1 day x {100_000 // scale:,}", 1, 1, 100_000 // scale),
            [Server(), LATENCY],
            [2],
        ),
        "sites-20x5": (
            Scenario.uniform(f"20 sites x 5 days x {2_000 // scale:,}", 20, 5, 2_000 // scale),
            [Server(), LATENCY],
            [2],
        ),
        "skew-a": (skew_a(quick), [LATENCY], [2, 4]),
        "skew-b": (skew_b(quick), [LATENCY], [2, 4]),
        "sites-200": (many_sites(quick), [LATENCY], [4]),
        "workers": (skew_b(quick), [TWO_WORKERS], [2, 4]),
        "day-1m": (Scenario.uniform("1 day x 1,000,000", 1, 1, 1_000_000), [Server()], [2]),
        "heavy-100": (heavy(quick, 101), [HEAVY_100], [4]),
        "heavy-500": (heavy(quick, 501), [HEAVY_500], [4]),
    }
    unknown = [k for k in keys if k not in table]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; expected some of {list(table)}")
    out = []
    for key in keys:
        scenario, servers, levels = table[key]
        for server in servers:
            for level in concurrency or levels:
                out.append(Case(key, scenario, server, level))
    return out


# -- child processes -----------------------------------------------------------------------


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


def live_fetcher(url: str, concurrency: int) -> Any:
    """POSTs one Live page and parses it: all a floor does with a page."""
    import httpx
    import orjson

    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency))

    def fetch(site: int, day: str, offset: int) -> int:
        response = client.post(url, data={
            "module": "API", "method": "Live.getLastVisitsDetails", "format": "json",
            "idSite": site, "period": "day", "date": day, "filter_limit": LIMIT,
            "filter_offset": offset, "filter_sort_order": "asc", "token_auth": TOKEN,
        })  # fmt: skip
        return len(orjson.loads(response.content))

    return fetch


@dataclass
class _DayPages:
    """A (site, day) being read: the next offset to ask for, pages in flight, what is known."""

    next_offset: int = LIMIT  # its first page (offset 0) is asked for when it opens
    in_flight: int = 1
    needed_to: int = 0  # offsets up to this one are needed: the page before each was full
    ended: bool = False  # a short page came back


class PageScheduler:
    """Which page a free slot takes next, for any site and day, knowing no day's size.

    Needed pages first, so that no slot waits while certain work exists: the next page of a
    day whose last page came back full (a long day is the run's longest chain: it goes first),
    then the first page of a day not started. With neither left, a slot reads ahead in a day
    that gave a full page, up to `read_ahead` of its pages in flight (wasted past its end).
    """

    def __init__(self, site_days: list[tuple[int, str]], read_ahead: int) -> None:
        self.read_ahead = max(1, read_ahead)
        self._new = deque(site_days)
        self._days: dict[tuple[int, str], _DayPages] = {}  # started ones, in start order
        self._running = 0
        self._cond = threading.Condition()
        self.requests = 0

    def take(self) -> tuple[int, str, int] | None:
        """The next page to fetch, waiting while others are in flight; None: all done."""
        with self._cond:
            while True:
                page = self._pick()
                if page is not None:
                    self._running += 1
                    self.requests += 1
                    return page
                if self._running == 0:
                    return None
                self._cond.wait()

    def done(self, site: int, day: str, offset: int, visits: int) -> None:
        with self._cond:
            self._running -= 1
            pages = self._days[(site, day)]
            pages.in_flight -= 1
            if visits >= LIMIT:
                pages.needed_to = max(pages.needed_to, offset + LIMIT)
            else:
                pages.ended = True
            self._cond.notify_all()

    def _pick(self) -> tuple[int, str, int] | None:
        open_days = [(key, p) for key, p in self._days.items() if not p.ended]
        for key, pages in open_days:
            if pages.next_offset <= pages.needed_to:
                return self._next_of(key, pages)
        if self._new:
            key = self._new.popleft()
            self._days[key] = _DayPages()
            return (*key, 0)
        for key, pages in open_days:
            if pages.needed_to > 0 and pages.in_flight < self.read_ahead:
                return self._next_of(key, pages)
        return None

    @staticmethod
    def _next_of(key: tuple[int, str], pages: _DayPages) -> tuple[int, str, int]:
        offset = pages.next_offset
        pages.next_offset += LIMIT
        pages.in_flight += 1
        return (*key, offset)


def floor_main(url: str, site_days_file: str, concurrency: int) -> None:
    """The page-level floor: `concurrency` workers taking pages from one PageScheduler."""
    site_days = [(int(s), str(d)) for s, d in json.loads(Path(site_days_file).read_text())]
    fetch = live_fetcher(url, concurrency)
    scheduler = PageScheduler(site_days, read_ahead=concurrency)
    total = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal total
        while (page := scheduler.take()) is not None:
            visits = fetch(*page)
            scheduler.done(*page, visits)
            with lock:
                total += visits

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"VISITS {total}")
    print(f"PAGES {scheduler.requests}")


def floor_known_main(url: str, pages_file: str, concurrency: int) -> None:
    """The former floor: the exact pages, known in advance, with the same concurrency."""
    pages = json.loads(Path(pages_file).read_text())
    fetch = live_fetcher(url, concurrency)
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(lambda page: fetch(*page), pages))
    print(f"VISITS {total}")


def naive_main(url: str, sites: str, days: int, topic: str, state: str) -> None:
    """The seed's way: one page at a time, json, HMAC, rename, flush per page, checkpoint."""
    import httpx
    from confluent_kafka import Producer

    client = httpx.Client(timeout=120)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    key = SALT.encode()
    total = 0
    for site in (int(s) for s in sites.split(",")):
        for d in range(days):
            day = day_iso(d)
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


def start_simulator(scenario: Scenario, server: Server, workdir: Path) -> tuple[Any, str]:
    """The simulator in its own process (real HTTP, its own GIL); returns it and its URL."""
    config = {
        "token": TOKEN,
        "latency_s": server.latency_s,
        "workers": server.workers,
        "page_cost_s": server.page_cost_s,
        "visit_cost_s": server.visit_cost_s,
        "sites": [
            {
                "idsite": site,
                "name": f"site {site}",
                "timezone": "UTC",
                "default_visits": 0,
                "visits": {day_iso(d): n for d, n in enumerate(counts)},
                "actions_per_visit": scenario.actions,
            }
            for site, counts in sorted(scenario.days.items())
        ],
    }
    return start_simulator_process(config, workdir / f"sim-{uuid.uuid4().hex[:6]}.json")


def simulator_stats(url: str, reset: bool = True) -> dict[str, Any]:
    """The simulator's load stats since the last reset (GET /__stats), reset again."""
    stats_url = url.replace("/index.php", "/__stats") + ("?reset=1" if reset else "")
    with urllib.request.urlopen(stats_url, timeout=30) as response:
        stats: dict[str, Any] = json.loads(response.read())
    return stats


#: Topics this process created: deleted at its end, as a 1M-visit run leaves 3.4 GB behind.
CREATED_TOPICS: list[str] = []


@functools.cache
def admin() -> Any:
    """One admin client for the whole run (each one dropped logs a purge notice)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": BOOTSTRAP})


def create_topic() -> str:
    from confluent_kafka.admin import NewTopic

    name = f"bench.{uuid.uuid4().hex[:8]}"
    admin().create_topics([NewTopic(name, 3, 1)])[name].result(30)
    CREATED_TOPICS.append(name)
    return name


def delete_created_topics() -> None:
    if CREATED_TOPICS:
        for future in admin().delete_topics(CREATED_TOPICS, operation_timeout=30).values():
            future.result(60)
        CREATED_TOPICS.clear()


def tool_env(
    scenario: Scenario, url: str, topic: str, state: Path, concurrency: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATOMO_", "KAFKA_"))}
    env.update({
        "START_DATE": FIRST_DAY.isoformat(), "MATOMO_FILTER_LIMIT": str(LIMIT),
        "FILE_PATH_FILTERDATE": str(state / "filterdate"),
        "FILE_PATH_LAST_OFFSET": str(state / "last_filter_offset"),
        "COLONNE_ANNOMYSE": ",".join(COLUMNS), "SALAGE": SALT, "KAFKA_TOPIC": topic,
        "MATOMO_ID_SITE": ",".join(str(s) for s in scenario.site_ids),
        "MATOMO_API_URL": url, "MATOMO_API_TOKEN": TOKEN, "KAFKA_SERVERS": BOOTSTRAP,
        "CLUSTERID": "BENCH", "MATOMO_MAX_CONCURRENCY": str(concurrency),
    })  # fmt: skip
    env.update(TOOL_ENV)
    return env


def best_of(runs: list[Result]) -> Result:
    """Lowest CPU and lowest wall time of a variant's runs, highest peak RSS and in-flight
    count; the other stats are the fastest run's."""
    fastest = min(runs, key=lambda r: r.seconds)
    stats = dict(fastest.stats)
    for name in ("max_in_flight", "max_live_in_flight", "max_queued"):
        stats[name] = max(r.stats.get(name, 0) for r in runs)
    return Result(
        fastest.seconds,
        min(r.cpu for r in runs),
        max(r.rss_mb for r in runs),
        runs[0].visits,
        stats,
    )


def run_variant(name: str, case: Case, url: str, workdir: Path) -> Result:
    """One run of one variant against the running simulator, with the simulator's stats."""
    scenario, concurrency = case.scenario, case.concurrency
    simulator_stats(url)  # reset: what follows is this variant's alone
    if name == "floor":
        days_file = workdir / "site-days.json"
        days_file.write_text(json.dumps(scenario.site_days()))
        result = run_child([sys.executable, __file__, "floor", url, str(days_file),
                            str(concurrency)])  # fmt: skip
    elif name == "floor-known":
        pages_file = workdir / "pages.json"
        pages_file.write_text(json.dumps(scenario.pages()))
        result = run_child([sys.executable, __file__, "floor-known", url, str(pages_file),
                            str(concurrency)])  # fmt: skip
    elif name == "naive":
        state = Path(tempfile.mkdtemp(dir=workdir))
        sites = ",".join(str(s) for s in scenario.site_ids)
        result = run_child([sys.executable, __file__, "naive", url, sites,
                            str(scenario.day_count), create_topic(), str(state)])  # fmt: skip
    else:
        state = Path(tempfile.mkdtemp(dir=workdir))
        parm = state / "parm"
        parm.mkdir()
        topic = create_topic()
        env = tool_env(scenario, url, topic, state, concurrency)
        if name == "tool-eos":
            env.update(DELIVERY="exactly_once", KAFKA_STATE_TOPIC=f"{topic}.state")
            CREATED_TOPICS.append(f"{topic}.state")  # made by the run
        run_date = day_iso(scenario.day_count)
        result = run_child([sys.executable, "-m", "matomo_kafka.cli", "run", "--parm-dir",
                            str(parm), "--run-date", run_date, "-q"], env=env)  # fmt: skip
        result.visits = scenario.visits  # the tool prints no count: Matomo's is checked below
    result.stats = simulator_stats(url)
    served = result.stats["live_visits"]
    if result.visits != scenario.visits or served < scenario.visits:
        raise SystemExit(
            f"{case.label()}: {name} moved {result.visits} visits (Matomo served {served}), "
            f"expected {scenario.visits}"
        )
    return result


def measure(
    case: Case, variants: list[str], workdir: Path, repeat: int, naive: dict[Any, Result]
) -> dict[str, Result]:
    """Every variant of a case, `repeat` times each (best kept); the naive loop's result is
    shared by the cases of a scenario and server that differ only by concurrency."""
    simulator, url = start_simulator(case.scenario, case.server, workdir)
    naive_key = (case.key, case.server)
    results: dict[str, Result] = {}
    try:
        for name in variants:
            if name == "naive" and naive_key in naive:
                results[name] = naive[naive_key]
                continue
            runs = [run_variant(name, case, url, workdir) for _ in range(repeat)]
            results[name] = best_of(runs)
            if name == "naive":
                naive[naive_key] = results[name]
    finally:
        simulator.terminate()
        simulator.wait()
    return results


# -- report --------------------------------------------------------------------------------

HEADER = (
    f"  {'variant':<12} {'visits/s':>9} {'wall s':>7} {'CPU us/visit':>12} {'peak RSS MB':>11} "
    f"{'Live reqs':>9} {'max in flight':>13} {'mean':>5} {'max queued':>10} {'busy %':>6} "
    f"{'wall/floor':>10} {'naive/tool':>10}"
)


def print_case(case: Case, results: dict[str, Result]) -> None:
    """One case: a line per variant. Matomo's view (the simulator's stats): Live requests,
    the most requests in flight at once (all methods) and the mean of Live requests in
    flight over the run (the tool backs off from a struggling server), those waiting for a
    worker, and how busy
    it was: Live request time / (slots x the time from the first request to the last answer),
    so that process start-up does not count."""
    scenario, server = case.scenario, case.server
    print(f"\n{case.label()}: {scenario.name} ({scenario.visits:,} visits); Matomo "
          f"{server.label()}; concurrency {case.concurrency}")  # fmt: skip
    print(HEADER)
    floor, naive, tool = (results.get(n) for n in ("floor", "naive", "tool"))
    slots = server.slots(case.concurrency)
    for name, result in results.items():
        stats = result.stats
        busy = 100 * stats.get("live_busy_s", 0.0) / (max(stats.get("span_s", 0.0), 1e-9) * slots)
        ratio_floor = f"{result.seconds / floor.seconds:10.2f}" if floor else f"{'-':>10}"
        speedup = (
            f"{naive.seconds / tool.seconds:10.2f}" if name == "tool" and naive and tool else ""
        )
        print(f"  {name:<12} {scenario.visits / result.seconds:>9.0f} {result.seconds:>7.2f} "
              f"{result.cpu / scenario.visits * 1e6:>12.1f} {result.rss_mb:>11.0f} "
              f"{stats.get('live_requests', 0):>9} {stats.get('max_in_flight', 0):>13} "
              f"{stats.get('mean_live_in_flight', 0.0):>5.1f} "
              f"{stats.get('max_queued', 0):>10} {busy:>6.0f} {ratio_floor} {speedup:>10}",
              flush=True)  # fmt: skip


@dataclass
class Check:
    """One target on one case, judged on the value as printed (rounded to `digits`): a
    reader must never see "1.10 FAIL" against "<= 1.10"."""

    target: str
    case: str
    value: float
    op: str  # "<=", ">=" or "<"
    threshold: float
    digits: int = 2  # 0 for MB and request counts

    @property
    def ok(self) -> bool:
        shown = round(self.value, self.digits)
        if self.op == "<=":
            return shown <= self.threshold
        if self.op == ">=":
            return shown >= self.threshold
        return shown < self.threshold

    def line(self) -> str:
        value = f"{self.value:.{self.digits}f}"
        limit = f"{self.op} {self.threshold:.{self.digits}f}"
        verdict = "PASS" if self.ok else "FAIL"
        return f"  {self.target:<34} {self.case:<22} {value:>7} {limit:>9}  {verdict}"


def checks(measured: list[tuple[Case, dict[str, Result]]]) -> list[Check]:
    """The targets, on the cases they are about (see the module docstring)."""
    out = []
    for case, results in measured:
        floor, naive, tool = (results.get(n) for n in ("floor", "naive", "tool"))
        label = case.label()
        if tool and floor and case.server.timed:
            out.append(Check("tool wall / floor wall", label, tool.seconds / floor.seconds,
                             "<=", 1.10))  # fmt: skip
        if tool and naive and case.key in ("skew-a", "skew-b"):
            out.append(Check("naive wall / tool wall", label, naive.seconds / tool.seconds,
                             ">=", 1.8))  # fmt: skip
        if tool and naive and case.key == "day-100k" and not case.server.timed:
            out.append(Check("tool CPU / naive CPU", label, tool.cpu / naive.cpu, "<=", 0.65))
        if tool and case.key in ("day-1m", "skew-b", "sites-200"):
            out.append(Check("tool peak RSS MB", label, tool.rss_mb, "<", 150, 0))
        if tool and case.key in ("heavy-100", "heavy-500"):
            out.append(Check("tool peak RSS MB", label, tool.rss_mb, "<", 200, 0))
        eos = results.get("tool-eos")
        if eos and tool:
            out.append(Check("tool-eos wall / tool wall", label, eos.seconds / tool.seconds,
                             "<=", 1.3))  # fmt: skip
        if tool and floor and case.key == "sites-200":
            sites = len(case.scenario.site_ids)
            allowed = floor.stats.get("live_requests", 0) + -(-sites // 50) + 5
            out.append(Check("tool: Matomo requests", label, tool.stats.get("requests", 0),
                             "<=", allowed, 0))  # fmt: skip
        for name in ("tool", "tool-eos", "floor"):
            if name in results:
                seen = results[name].stats.get("max_in_flight", 0)
                out.append(Check(f"{name}: max in flight at Matomo", label, seen, "<=",
                                 case.concurrency, 0))  # fmt: skip
    return out


def print_checks(measured: list[tuple[Case, dict[str, Result]]]) -> None:
    found = checks(measured)
    print(f"\ntargets ({sum(c.ok for c in found)} of {len(found)} hold):")
    print(f"  {'target':<34} {'case':<22} {'value':>7} {'limit':>9}  verdict")
    for check in found:
        print(check.line())
    for case, results in measured:  # heavy visits: pages of fewer visits, so more requests
        if case.key.startswith("heavy") and "tool" in results:
            counted = ", ".join(f"{name} {results[name].stats.get('live_requests', 0)}"
                                for name in ("tool", "floor") if name in results)  # fmt: skip
            print(f"  note: {case.label()}: Live requests: {counted}")
    for case, results in measured:  # what extra concurrency bought, for the record
        lower = next((r for c, r in measured if (c.key, c.server, c.concurrency) ==
                      (case.key, case.server, 2)), None)  # fmt: skip
        if case.concurrency <= 2 or lower is None:
            continue
        for name in ("floor", "tool"):
            if name in results and name in lower:
                ratio = results[name].seconds / lower[name].seconds
                print(
                    f"  note: {case.label()}: {name} wall / its wall at c2 = {ratio:.2f}"
                    f"{' (Matomo has 2 workers)' if case.server.workers == 2 else ''}"
                )


def compile_tool() -> None:
    """The tool's modules compiled to bytecode first, as an installed tool's are: a run from
    a source tree without them (PYTHONDONTWRITEBYTECODE, or the first run) would compile
    ~11,000 lines at start-up (~0.15 s), a cost users do not pay."""
    import matomo_kafka

    package = str(Path(matomo_kafka.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        epilog="Scenarios: day-100k, sites-20x5, skew-a, skew-b, workers, sites-200, day-1m, "
        "heavy-100, heavy-500.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--big", action="store_true", help="add the 1M-visit day (day-1m)")
    parser.add_argument("--scenario", help="comma-separated scenarios (default: all but day-1m)")
    parser.add_argument("--concurrency", help="comma-separated levels for every scenario "
                        "(default: 2; 2,4 for skew-a, skew-b, workers)")  # fmt: skip
    parser.add_argument("--variants", default="floor,naive,tool",
                        help=f"comma-separated, among {','.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant, best kept")
    parser.add_argument("--tool-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the tool's runs (repeatable), e.g. "
                             "MALLOC_ARENA_MAX=2")  # fmt: skip
    options = parser.parse_args()
    for item in options.tool_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--tool-env {item!r}: expected KEY=VALUE")
        TOOL_ENV[key] = value
    keys = (options.scenario.split(",") if options.scenario else
            ["day-100k", "sites-20x5", "skew-a", "skew-b", "workers"])  # fmt: skip
    if options.big and "day-1m" not in keys:
        keys.append("day-1m")
    levels = [int(x) for x in options.concurrency.split(",")] if options.concurrency else None
    variants = [v for v in VARIANTS if v in options.variants.split(",")]
    if not variants or len(variants) != len(set(options.variants.split(","))):
        raise SystemExit(f"--variants: expected some of {','.join(VARIANTS)}")
    compile_tool()
    measured: list[tuple[Case, dict[str, Result]]] = []
    naive: dict[Any, Result] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_created_topics)
        for case in cases(options.quick, keys, levels):
            repeat = 1 if case.key == "day-1m" else options.repeat
            results = measure(case, variants, Path(tmp), repeat, naive)
            measured.append((case, results))
            print_case(case, results)
        print_checks(measured)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        floor_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "floor-known":
        floor_known_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        naive_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        main()
