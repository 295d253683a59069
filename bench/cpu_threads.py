"""Where the tool's CPU goes: one `matomo-kafka run` of a 100k-visit day (no latency), with
the CPU time of each of its threads read at exit, in us per visit.

    .venv/bin/python bench/cpu_threads.py [--visits 100000] [--runs 3]

Python threads are timed with time.thread_time() when they end (the main thread at exit);
librdkafka's own threads (rdk:*) from /proc/self/task. Threads: matomo-fetch_* fetch, parse,
transform and serialise pages; site_* hands pages to the producer and checkpoints them;
kafka-poll serves delivery reports; rdk:broker* compress and send; MainThread is interpreter
start, imports and setup. Needs the local broker (scripts/kafka-local.sh start); Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # bench.py: the simulator, topic and environment helpers

#: Runs the CLI with every thread's CPU time recorded; writes them to $THREAD_TIMES at exit.
TIMED_CLI = """
import atexit, os, sys, threading, time
times = {}
run = threading.Thread.run
def timed_run(self):
    try:
        run(self)
    finally:
        times[self.name] = times.get(self.name, 0.0) + time.thread_time()
threading.Thread.run = timed_run
def report():
    times["MainThread"] = time.thread_time()
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as handle:
            stat = handle.read()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if name.startswith("rdk:"):
            times[name] = times.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    with open(os.environ["THREAD_TIMES"], "w") as handle:
        handle.writelines(f"{name}\\t{seconds}\\n" for name, seconds in times.items())
atexit.register(report)
from matomo_kafka.cli import main
sys.argv[0] = "matomo-kafka"
main()
"""


def one_run(scenario: bench.Scenario, url: str, workdir: Path) -> tuple[float, dict[str, float]]:
    """Returns the process's CPU seconds (wait4) and each thread group's CPU seconds."""
    state = Path(tempfile.mkdtemp(dir=workdir))
    (state / "parm").mkdir()
    times_file = state / "threads.tsv"
    env = bench.tool_env(scenario, url, bench.create_topic(), state, 2)
    env["THREAD_TIMES"] = str(times_file)
    run_date = bench.day_iso(scenario.day_count)
    process = subprocess.Popen(
        [sys.executable, "-c", TIMED_CLI, "run", "--parm-dir", str(state / "parm"),
         "--run-date", run_date, "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(process.stderr.read().decode()[-2000:] if process.stderr else "failed")
    groups: dict[str, float] = {}
    for line in times_file.read_text().splitlines():
        name, seconds = line.split("\t")
        group = name.rstrip("0123456789_").removesuffix("-")  # matomo-fetch_1 -> matomo-fetch
        groups[group] = groups.get(group, 0.0) + float(seconds)
    return usage.ru_utime + usage.ru_stime, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="the run with the least CPU is shown")
    options = parser.parse_args()
    scenario = bench.Scenario.uniform(f"1 day x {options.visits}", 1, 1, options.visits)
    with tempfile.TemporaryDirectory() as tmp:
        simulator, url = bench.start_simulator(scenario, bench.Server(), Path(tmp))
        try:
            runs = [one_run(scenario, url, Path(tmp)) for _ in range(options.runs)]
        finally:
            simulator.terminate()
            simulator.wait()
            bench.delete_created_topics()
    per_visit = 1e6 / options.visits
    for cpu, _ in runs:
        print(f"run: {cpu * per_visit:.1f} us CPU a visit")
    cpu, groups = min(runs, key=lambda run: run[0])
    print(f"lowest: {cpu * per_visit:.1f} us CPU a visit (process, wait4), by thread:")
    for name, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {name:<14} {seconds * per_visit:6.1f}")
    rest = cpu - sum(groups.values())
    print(f"  {'(other)':<14} {rest * per_visit:6.1f}")


if __name__ == "__main__":
    main()
