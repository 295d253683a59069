"""Reliability proofs of matomo-kafka (issue #3), at-least-once mode, with a figures table.

    .venv/bin/python bench/reliability.py                  # defaults: 300 kills, everything
    .venv/bin/python bench/reliability.py --kills 60 --seed 7 --skip-broker

The proofs themselves (kills, faults, broker, inputs, secrets: see their description in
tests/support/reliability.py) are the harness shared with the tests; tests/proofs/ runs them
with smaller counts. This script runs them long and prints the figures table.

Needs the shared broker (started here with `scripts/kafka-local.sh start` if it is not up, never
stopped). Exit code 0 when every proof held, 1 otherwise (the table is printed either way).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.reliability import (
    BAD_INPUTS,
    KAFKA_SCRIPT,
    LIMIT,
    SHARED_BOOTSTRAP,
    ZONES,
    BrokerFigures,
    Collector,
    FaultFigures,
    InputContext,
    InputOutcome,
    KillFigures,
    OwnBroker,
    ProofFailed,
    ScanFigures,
    WindowFigures,
    _where,
    broker_outage_proof,
    broker_restart_proof,
    day_change_kill_proof,
    fault_proof,
    kill_proof,
    run_bad_input,
)


@dataclass
class Report:
    seed: int
    kills: KillFigures | None = None
    eos_kills: KillFigures | None = None
    window: WindowFigures | None = None
    faults: list[FaultFigures] = field(default_factory=list)
    broker: list[BrokerFigures] = field(default_factory=list)
    inputs: list[InputOutcome] = field(default_factory=list)
    scan: ScanFigures | None = None
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        rows: list[tuple[str, str]] = []
        expected = lost = duplicated = 0
        if self.kills:
            k = self.kills
            expected, lost, duplicated = k.visits_expected, k.lost, k.duplicated
            rows += [
                ("kills (SIGKILL at random points)",
                 f"{k.kills} ({k.timed_kills} at a random instant, {k.paced_kills} after "
                 f"1-6 checkpoint moves); {k.rounds} rounds of {k.sites} sites (timezones "
                 f"{', '.join(ZONES[:k.sites])}); {k.seconds:.0f}s"),
                ("kills: visits expected / lost / duplicated",
                 f"{k.visits_expected} / {k.lost} / {k.duplicated} "
                 f"({k.duplicated / max(k.kills, 1):.1f} per kill, all sites)"),
                ("kills: max visits one kill left to re-send, per site",
                 f"{k.max_fresh} (one page = {LIMIT})"),
                ("kills: checkpoints unreadable / ahead of the topic",
                 f"0 / 0 (checked for every site after each of the {k.kills} kills)"),
                ("kills: temp files left beside the checkpoints", str(k.temp_files_left)),
            ]  # fmt: skip
            if k.window_kills:  # only with tolerate_day_window (code before the .next marker)
                rows.append(("kills in the day-change window",
                             f"{k.window_kills} kills, {k.window_sites} sites: each re-sends a "
                             f"whole day (max {k.max_window} visits)"))  # fmt: skip
        if self.eos_kills:
            e = self.eos_kills
            expected += e.visits_expected
            rows += [
                ("exactly-once kills (DELIVERY=exactly_once)",
                 f"{e.kills} ({e.timed_kills} at a random instant, {e.paced_kills} after 1-6 "
                 f"checkpoint moves); {e.rounds} rounds of {e.sites} sites; {e.seconds:.0f}s"),
                ("exactly-once kills: visits expected / lost / seen twice (read_committed)",
                 f"{e.visits_expected} / {e.lost} / {e.duplicated}"),
            ]  # fmt: skip
        if self.window:
            w = self.window
            left = f"files left at ({w.files[0]}, {w.files[1]})"
            rows.append(("kill between the two writes of a day change (deterministic)",
                         f"{left} after a {w.day_visits}-visit day; resumed at "
                         f"{_where(w.cursor)}; re-sent {w.resent} visits"))  # fmt: skip
        injected: Counter[str] = Counter()
        for f in self.faults:
            injected.update(f.injected)
            expected += f.visits_expected
            duplicated += f.duplicated
        if self.faults:
            transient = [f for f in self.faults if f.transient_only]
            mixed = [f for f in self.faults if not f.transient_only]
            rows += [
                ("Matomo faults injected (failed requests)",
                 f"{sum(injected.values())}: "
                 + ", ".join(f"{kind} {n}" for kind, n in sorted(injected.items()))),
                ("fault scenarios (seeded)",
                 f"{len(transient)} transient-only (each: 1 run, exit 0), {len(mixed)} mixed "
                 f"({sum(f.failed_runs for f in mixed)} failed runs, "
                 f"{sum(f.runs for f in mixed)} runs)"),
                ("faults: visits expected / lost / duplicated",
                 f"{sum(f.visits_expected for f in self.faults)} / 0 / "
                 f"{sum(f.duplicated for f in self.faults)}"),
            ]  # fmt: skip
        for b in self.broker:
            expected += b.visits_expected
            duplicated += b.duplicated
            if b.scenario == "outage":
                down = (
                    f"; a run started while down failed in {b.unreachable_after:.1f}s "
                    f"(KAFKA_CONNECT_TIMEOUT 3 s)"
                    if b.unreachable_after
                    else ""
                )
                rows.append(
                    (
                        f"broker {b.mode} mid-run (delivery timeout {b.delivery_timeout:.0f}s)",
                        f"run failed after {b.failed_after:.1f}s (bound {b.bound:.0f}s), "
                        f"exit {b.exit_code}: {b.error_line!r}{down}; after restart: "
                        f"{b.visits_expected} visits, 0 lost, {b.duplicated} duplicated",
                    )
                )
            else:
                outcome = (
                    f"completed (exit 0) {b.failed_after:.1f}s after the stop"
                    if b.exit_code == 0
                    else f"FAILED, exit {b.exit_code}: {b.error_line!r}"
                )
                rows.append((f"broker {b.mode} + restart within the delivery timeout "
                             f"({b.delivery_timeout:.0f}s)",
                             f"down {b.downtime:.1f}s; run {outcome}; {b.visits_expected} "
                             f"visits, 0 lost, {b.duplicated} duplicated"))  # fmt: skip
        if self.inputs:
            tried = [o for o in self.inputs if not o.skipped]
            bugs = [o for o in tried if o.case.bug]
            bad = [o for o in tried if not o.case.valid and not o.case.bug]
            known = (
                [("known src bugs reproduced (bad inputs)",
                  f"{sum(1 for o in bugs if o.problems)} of {len(bugs)}: "
                  + ", ".join(o.case.name for o in bugs if o.problems))]
                if bugs else []
            )  # fmt: skip
            by_kind = Counter(o.case.category for o in tried)
            rows += [
                ("bad inputs tried",
                 f"{len(tried)} ({', '.join(f'{k} {n}' for k, n in sorted(by_kind.items()))})"
                 + (f"; {len(self.inputs) - len(tried)} skipped" if len(tried) < len(self.inputs)
                    else "")),
                ("bad inputs: clear error, non-zero exit, checkpoints untouched",
                 f"{sum(1 for o in bad if not o.problems)} of {len(bad)}"),
                ("odd but valid inputs passed through",
                 f"{sum(1 for o in tried if o.case.valid and not o.problems)} of "
                 f"{sum(1 for o in tried if o.case.valid)}"),
                *known,
            ]  # fmt: skip
        rows += [
            ("all proofs: visits expected / lost / duplicated",
             f"{expected} / {lost} / {duplicated}"),
        ]  # fmt: skip
        if self.scan:
            rows.append(("secrets scan",
                         f"{self.scan.lines} output lines, {self.scan.messages} messages, "
                         f"{self.scan.raw_values} raw pseudonymised values: "
                         f"{len(self.scan.problems)} leak(s)"))  # fmt: skip
        rows.append(("seed / wall time", f"{self.seed} / {self.seconds:.0f}s"))
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
        return "\n".join(lines)


def _ensure_shared_broker() -> None:
    result = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"the shared broker is not up and did not start:\n{result.stderr}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=300, help="SIGKILLs (default 300)")
    parser.add_argument("--eos-kills", type=int, default=100,
                        help="SIGKILLs in exactly-once mode (default 100)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument(
        "--fault-scenarios",
        type=int,
        default=3,
        help="transient-only and mixed fault scenarios each (default 3)",
    )
    parser.add_argument("--faults", type=int, default=30, help="faults per scenario")
    parser.add_argument("--tolerate-day-window", action="store_true",
                        help="count kills that re-send a whole day instead of failing (to "
                        "measure code before the .next checkpoint marker)")  # fmt: skip
    parser.add_argument("--skip-broker", action="store_true", help="no own-broker proof")
    parser.add_argument("--skip-inputs", action="store_true", help="no bad-input proof")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    started = time.monotonic()
    print(f"matomo-kafka reliability proofs: seed {seed} (replay with --seed {seed})",
          flush=True)  # fmt: skip
    _ensure_shared_broker()
    workdir = Path(tempfile.mkdtemp(prefix="matomo-kafka-reliability-"))
    collector = Collector()
    report = Report(seed)

    def attempt(name: str, proof: Callable[[], None]) -> None:
        try:
            proof()
        except (ProofFailed, subprocess.SubprocessError, OSError) as exc:
            report.failures.append(f"{name}: {exc}")
            print(f"PROOF FAILED: {name}: {exc}", flush=True)

    def say(text: str) -> None:
        print(text, flush=True)

    def kills() -> None:
        report.kills = kill_proof(
            SHARED_BOOTSTRAP,
            workdir,
            args.kills,
            seed,
            collector,
            say=say,
            tolerate_day_window=args.tolerate_day_window,
        )

    def eos_kills() -> None:
        report.eos_kills = kill_proof(SHARED_BOOTSTRAP, workdir / "eos", args.eos_kills, seed,
                                      collector, say=say, delivery="exactly_once")  # fmt: skip

    def window() -> None:
        report.window = day_change_kill_proof(SHARED_BOOTSTRAP, workdir, collector)

    def faults() -> None:
        for n in range(args.fault_scenarios):
            for transient in (True, False):
                report.faults.append(
                    fault_proof(
                        SHARED_BOOTSTRAP,
                        workdir,
                        seed + n,
                        collector,
                        transient,
                        faults=args.faults,
                        say=say,
                    )
                )

    def broker() -> None:
        own = OwnBroker(workdir)
        try:
            say(f"broker: own broker on {own.bootstrap} ({own.start():.1f}s to start)")
            for mode in ("stop", "kill"):
                report.broker.append(broker_outage_proof(own, workdir, collector, mode))
                say(f"  outage {mode}: failed after {report.broker[-1].failed_after:.1f}s")
            for mode in ("stop", "kill"):
                report.broker.append(broker_restart_proof(own, workdir, collector, mode))
                say(f"  restart {mode}: exit {report.broker[-1].exit_code}")
        finally:
            own.close()

    def inputs() -> None:
        ctx = InputContext.open(SHARED_BOOTSTRAP, workdir, collector)
        try:
            for case in BAD_INPUTS:
                outcome = run_bad_input(case, ctx)
                report.inputs.append(outcome)
                if outcome.skipped:
                    say(f"  input {case.name}: skipped: {outcome.skipped}")
                elif case.bug and outcome.problems:
                    say(f"  input {case.name}: known bug reproduced: {outcome.problems[0]}")
                elif case.bug:
                    say(f"  input {case.name}: known bug NOT reproduced (fixed?)")
                elif outcome.problems:
                    report.failures.append(f"input {outcome.describe()}")
                    say(f"  input FAILED: {outcome.describe()}")
        finally:
            ctx.close()

    try:
        attempt("kills", kills)
        if args.eos_kills:
            attempt("exactly-once kills", eos_kills)
        attempt("day-change window", window)
        attempt("faults", faults)
        if not args.skip_broker:
            attempt("broker", broker)
        if not args.skip_inputs:
            attempt("inputs", inputs)
        report.scan = collector.scan()
        report.failures += [f"secrets: {problem}" for problem in report.scan.problems]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.monotonic() - started
    print()
    print(report.table())
    for failure in report.failures:
        print(f"FAILED: {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
