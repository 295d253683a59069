"""Before and after: the floor, the tool as it was (another source tree) and the tool as it
is, run in turns against one simulator per case of bench.py, `--rounds` times each; prints
the median of each figure.

On a shared machine whose speed changes from minute to minute, two bench.py runs of the same
code minutes apart differ by 10-30 %; runs in turns see about the same load, so their medians
compare two versions of the tool better than two separate bench.py runs do.

    git archive <commit> | tar -x -C /tmp/before      # the tool as it was
    .venv/bin/python bench/ab.py --before /tmp/before/src --scenario skew-b --rounds 5

Columns: median wall s (and the lowest and highest), median of each round's wall / the
floor's wall in that round, highest peak RSS, median Live requests. Needs the local broker
(KAFKA_PORT) as bench.py does.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench  # bench/bench.py, next to this file


def run_round(case: bench.Case, url: str, workdir: Path, before: str) -> dict[str, bench.Result]:
    """One run of each variant, in turns: the floor, the tool before, the tool after."""
    out: dict[str, bench.Result] = {"floor": bench.run_variant("floor", case, url, workdir)}
    bench.TOOL_ENV["PYTHONPATH"] = before
    try:
        out["before"] = bench.run_variant("tool", case, url, workdir)
    finally:
        del bench.TOOL_ENV["PYTHONPATH"]
    out["after"] = bench.run_variant("tool", case, url, workdir)
    return out


def report(case: bench.Case, rounds: list[dict[str, bench.Result]]) -> None:
    print(f"\n{case.label()}: {case.scenario.name} ({case.scenario.visits:,} visits); "
          f"Matomo {case.server.label()}; {len(rounds)} rounds")  # fmt: skip
    print(f"  {'variant':<8} {'wall s':>7} {'(min':>7} {'max)':>7} {'wall/floor':>10} "
          f"{'peak RSS MB':>11} {'Live reqs':>9}")  # fmt: skip
    for name in ("floor", "before", "after"):
        walls = [r[name].seconds for r in rounds]
        ratios = [r[name].seconds / r["floor"].seconds for r in rounds]
        rss = max(r[name].rss_mb for r in rounds)
        reqs = statistics.median(r[name].stats.get("live_requests", 0) for r in rounds)
        print(f"  {name:<8} {statistics.median(walls):>7.2f} {min(walls):>7.2f} "
              f"{max(walls):>7.2f} {statistics.median(ratios):>10.2f} {rss:>11.0f} "
              f"{reqs:>9.0f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--before", required=True, help="the src/ directory of the tool before")
    parser.add_argument("--scenario", required=True, help="comma-separated, as bench.py's")
    parser.add_argument("--concurrency", help="comma-separated levels (default: bench.py's)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--quick", action="store_true", help="bench.py's smaller sizes")
    options = parser.parse_args()
    before = str(Path(options.before).resolve())
    if not (Path(before) / "matomo_kafka" / "__init__.py").is_file():
        raise SystemExit(f"--before {before}: no matomo_kafka package there")
    levels = [int(x) for x in options.concurrency.split(",")] if options.concurrency else None
    bench.compile_tool()
    subprocess.run([sys.executable, "-m", "compileall", "-q", before], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for case in bench.cases(options.quick, options.scenario.split(","), levels):
                simulator, url = bench.start_simulator(case.scenario, case.server, Path(tmp))
                try:
                    rounds = [run_round(case, url, Path(tmp), before)
                              for _ in range(options.rounds)]  # fmt: skip
                finally:
                    simulator.terminate()
                    simulator.wait()
                report(case, rounds)
        finally:
            bench.delete_created_topics()


if __name__ == "__main__":
    main()
