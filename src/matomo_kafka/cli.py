"""The `matomo-kafka` command: run, check, status, simulate.

Every failure ends as one redacted line on stderr and a documented exit code (see errors.py):
0 ok, 1 run failed, 2 bad configuration or arguments, 3 another run holds the lock,
130 interrupted after the last acknowledged page.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
import traceback
from datetime import UTC, date
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from matomo_kafka import __version__
from matomo_kafka.checkpoint import CheckpointStore
from matomo_kafka.config import ConfigError, Settings, load_settings
from matomo_kafka.days import days_behind, last_closed_day, site_timezone
from matomo_kafka.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    MatomoKafkaError,
    Redactor,
)
from matomo_kafka.logsetup import setup_logging
from matomo_kafka.matomo import MatomoClient, RetryPolicy
from matomo_kafka.pipeline import Pipeline, RunReport
from matomo_kafka.sink import KafkaSink

app = typer.Typer(
    name="matomo-kafka",
    help="Moves raw Matomo visits (Live.getLastVisitsDetails) into a Kafka topic.",
    add_completion=False,
    no_args_is_help=True,
    # Rich tracebacks print local variables: a token or password could leak through them.
    pretty_exceptions_enable=False,
)
stdout = Console(highlight=False)
_redactor = Redactor()

ParmDir = Annotated[
    Path,
    typer.Option("--parm-dir", help="Directory holding wa7_conf.ini, wa7.env, logging.conf."),
]
RunDate = Annotated[
    str | None,
    typer.Option(
        "--run-date",
        help="Run date (YYYY-MM-DD or the Control-M YYYYMMDD): reads up to the day before.",
    ),
]
Sites = Annotated[
    str | None,
    typer.Option("--sites", help="Comma-separated site ids overriding MATOMO_ID_SITE."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")]

log = logging.getLogger("matomo_kafka")


def fail(message: str, code: int) -> NoReturn:
    """One redacted line on stderr, then the exit code."""
    print(f"matomo-kafka: error: {_redactor(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def parse_run_date(value: str | None) -> date | None:
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if re.fullmatch(r"\d{8}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"--run-date {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)", EXIT_CONFIG)


def parse_sites(value: str | None, settings: Settings) -> tuple[int, ...]:
    if value is None:
        return settings.MATOMO_ID_SITE
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        fail(f"--sites {value!r} must be comma-separated site ids, e.g. 6,15", EXIT_CONFIG)
    return tuple(dict.fromkeys(int(part) for part in parts))


def load(parm_dir: Path, verbose: bool = False, quiet: bool = False) -> Settings:
    """Validated settings, logging set up and secrets registered with the redactor."""
    try:
        settings = load_settings(parm_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"matomo-kafka: config: {problem}", file=sys.stderr)
        fail(f"invalid configuration ({len(exc.problems)} problem(s)) in {parm_dir}", EXIT_CONFIG)
    _redactor.add(settings.secret_values())
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    try:
        setup_logging(parm_dir, _redactor, level, settings.CLUSTERID)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{parm_dir / 'logging.conf'} is invalid: {type(exc).__name__}: {exc}", EXIT_CONFIG)
    return settings


def matomo_client(settings: Settings) -> MatomoClient:
    gateway = None
    if settings.MATOMO_SPS_USER is not None and settings.MATOMO_SPS_MDP is not None:
        gateway = (settings.MATOMO_SPS_USER, settings.MATOMO_SPS_MDP.get_secret_value())
    return MatomoClient(
        settings.MATOMO_API_URL,
        settings.MATOMO_API_TOKEN.get_secret_value(),
        gateway_auth=gateway,
        ca_bundle=settings.MATOMO_CA_BUNDLE,
        timeout=settings.MATOMO_TIMEOUT,
        retry=RetryPolicy(
            settings.MATOMO_MAX_RETRIES,
            settings.MATOMO_RETRY_BACKOFF,
            settings.MATOMO_RETRY_MAX_WAIT,
        ),
    )


def checkpoint_store(settings: Settings) -> CheckpointStore:
    return CheckpointStore(settings.FILE_PATH_FILTERDATE, settings.FILE_PATH_LAST_OFFSET)


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: finish the page in flight, checkpoint, exit 130. Second: now."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after the page in flight", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@app.command()
def run(
    parm_dir: ParmDir = Path("parm"),
    run_date: RunDate = None,
    sites: Sites = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Extracts every closed day of each site, from its checkpoint, into Kafka."""
    day = parse_run_date(run_date)
    settings = load(parm_dir, verbose, quiet)
    site_ids = parse_sites(sites, settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    store = checkpoint_store(settings)
    log.info(
        "matomo-kafka %s: sites %s, topic %s, cluster %s",
        __version__, ",".join(map(str, site_ids)), settings.KAFKA_TOPIC, settings.CLUSTERID,
    )  # fmt: skip
    try:
        with store.lock(site_ids):
            sink = KafkaSink.from_settings(settings)
            try:
                sink.check_topic()
                with matomo_client(settings) as matomo:
                    report = Pipeline(settings, matomo, sink, store, day, stop).run(site_ids)
            finally:
                sink.close()
    except MatomoKafkaError as exc:
        fail(str(exc), exc.exit_code)
    print_summary(report, store)
    if report.fatal is not None:
        fail(str(report.fatal), report.fatal.exit_code)
    failed = [site for site in report.sites if site.status != "done"]
    if failed:
        for site in failed:
            print(f"matomo-kafka: site {site.idsite}: {_redactor(site.error or '')}",
                  file=sys.stderr)  # fmt: skip
        fail(f"{len(failed)} of {len(report.sites)} site(s) failed", EXIT_FAILED)


def print_summary(report: RunReport, store: CheckpointStore) -> None:
    table = Table(title="matomo-kafka run", title_justify="left")
    for column in ("site", "outcome", "days", "pages", "visits", "time", "checkpoint", "behind"):
        table.add_column(column, justify="right" if column in ("days", "visits") else "left")
    for site in report.sites:
        cursor = site.cursor
        where = f"{cursor.day} +{cursor.offset}" if cursor else "-"
        behind = (
            str(days_behind(cursor.day, site.last_closed)) if cursor and site.last_closed else "-"
        )
        table.add_row(
            str(site.idsite), site.status, str(site.days_done), str(site.pages),
            str(site.visits), f"{site.seconds:.1f}s", where, behind,
        )  # fmt: skip
    table.caption = (
        f"{report.visits} visits sent; checkpoint = next day to read +visits already sent; "
        f"files {store.filterdate_prefix}<site>.txt"
    )
    stdout.print(table)


@app.command()
def status(
    parm_dir: ParmDir = Path("parm"),
    run_date: RunDate = None,
) -> None:
    """Shows each site's checkpoint (day, offset) and the days left, without any network call."""
    day = parse_run_date(run_date)
    settings = load(parm_dir, quiet=True)
    store = checkpoint_store(settings)
    last_day = last_closed_day(UTC, day)
    table = Table(title=f"checkpoints (days behind counted to {last_day}, UTC)",
                  title_justify="left")  # fmt: skip
    for column in ("site", "day", "offset", "behind", "files"):
        table.add_column(column)
    broken = 0
    for idsite in settings.MATOMO_ID_SITE:
        try:
            cursor = store.load(idsite)
        except MatomoKafkaError as exc:
            broken += 1
            table.add_row(str(idsite), "unreadable", "-", "-", _redactor(str(exc)))
            continue
        files = f"{store.date_path(idsite)}, {store.offset_path(idsite)}"
        if cursor is None:
            start = settings.START_DATE
            behind = days_behind(start, last_day)
            table.add_row(str(idsite), f"never run (from {start})", "0", str(behind), files)
        else:
            behind = days_behind(cursor.day, last_day)
            table.add_row(str(idsite), str(cursor.day), str(cursor.offset), str(behind), files)
    stdout.print(table)
    if broken:
        fail(f"{broken} checkpoint(s) unreadable", EXIT_FAILED)


@app.command()
def check(
    parm_dir: ParmDir = Path("parm"),
    sites: Sites = None,
) -> None:
    """Validates the config, reaches Matomo (version, sites, rights) and Kafka (topic)."""
    settings = load(parm_dir, quiet=True)
    site_ids = parse_sites(sites, settings)
    table = Table(title="matomo-kafka check", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    failures = 0

    def record(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        table.add_row(name, "ok" if ok else "FAIL", _redactor(detail))

    record("config", True, f"{len(site_ids)} site(s), topic {settings.KAFKA_TOPIC}")
    with matomo_client(settings) as matomo:
        try:
            record("matomo", True, f"Matomo {matomo.version()} at {settings.MATOMO_API_URL}")
            reachable = True
        except MatomoKafkaError as exc:
            record("matomo", False, str(exc))
            reachable = False
        for idsite in site_ids if reachable else ():
            try:
                info = matomo.site(idsite)
                tz = site_timezone(info.timezone)
                yesterday = last_closed_day(tz, None)
                matomo.visits_page(idsite, yesterday, 1, 0)
                detail = f"{info.name!r}, {info.timezone}, visits log readable"
                record(f"site {idsite}", True, detail)
            except (MatomoKafkaError, ValueError) as exc:
                record(f"site {idsite}", False, str(exc))
    sink = KafkaSink.from_settings(settings)
    try:
        partitions = sink.check_topic()
        record("kafka", True, f"topic {settings.KAFKA_TOPIC} ({partitions} partitions)")
    except MatomoKafkaError as exc:
        record("kafka", False, str(exc))
    stdout.print(table)
    if failures:
        fail(f"{failures} check(s) failed", EXIT_FAILED)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: Annotated[
        Path | None, typer.Option("--config", help="Simulator JSON (sites, visits, faults).")
    ] = None,
    token: Annotated[str, typer.Option(help="token_auth the simulator accepts.")] = "demo-token",
    sites: Annotated[
        str, typer.Option("--sites", help="id:timezone list, e.g. 1:UTC,2:Europe/Paris.")
    ] = "1:UTC,2:Europe/Paris",
    visits_per_day: Annotated[int, typer.Option(help="Visits per site and day.")] = 50,
    latency_ms: Annotated[int, typer.Option(help="Added latency per Live page.")] = 0,
    basic_auth: Annotated[
        str | None, typer.Option("--basic-auth", help="user:password a gateway would require.")
    ] = None,
) -> None:
    """Serves a deterministic Matomo API simulator (demos and tests)."""
    from matomo_kafka.simulator import SimConfig, SimSite, run_simulator

    if config is not None:
        try:
            sim_config = SimConfig.from_json(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"simulator config {config}: {exc}", EXIT_CONFIG)
    else:
        sim_sites = []
        for part in sites.split(","):
            idsite, _, tz = part.strip().partition(":")
            if not idsite.isdigit():
                fail(f"--sites {sites!r}: expected id:timezone pairs", EXIT_CONFIG)
            sim_sites.append(
                SimSite(idsite=int(idsite), name=f"Demo site {idsite}", timezone=tz or "UTC",
                        default_visits=visits_per_day, visits={})
            )  # fmt: skip
        gateway = None
        if basic_auth is not None:
            user, _, password = basic_auth.partition(":")
            gateway = (user, password)
        sim_config = SimConfig(
            token=token, sites=sim_sites, latency_s=latency_ms / 1000, basic_auth=gateway
        )
    print(f"matomo simulator on http://{host}:{port}/index.php", flush=True)
    run_simulator(sim_config, host, port)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        print(f"matomo-kafka {__version__}")
        raise typer.Exit(EXIT_OK)


def main() -> None:
    """Entry point: unexpected exceptions become one redacted line, never a traceback."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("matomo-kafka: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # the last line of defence for secrets in tracebacks
        if "--verbose" in sys.argv or "-v" in sys.argv:
            print(_redactor(traceback.format_exc()), file=sys.stderr)
        print(f"matomo-kafka: internal error: {type(exc).__name__}: {_redactor(str(exc))}",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
