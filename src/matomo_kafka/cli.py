"""The `matomo-kafka` command: run, check, status, reset, audit, simulate, schema.

Every failure ends as one redacted line on stderr and a documented exit code (see errors.py):
0 ok, 1 run failed, 2 bad configuration or arguments, 3 another run holds the lock,
130 interrupted after the last acknowledged page.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import sys
import threading
import traceback
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from matomo_kafka import __version__, kafka_validate
from matomo_kafka.audit import audit_site
from matomo_kafka.checkpoint import CheckpointStore
from matomo_kafka.config import ConfigError, Settings, load_config, parse_site_selection
from matomo_kafka.days import days_behind, last_closed_day, site_timezone
from matomo_kafka.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MatomoKafkaError,
    Redactor,
)
from matomo_kafka.logsetup import setup_logging
from matomo_kafka.matomo import MatomoClient, RequestGate, RetryPolicy
from matomo_kafka.metrics import SuccessTimes, publish
from matomo_kafka.pipeline import Pipeline, RunReport, SiteReport
from matomo_kafka.progress import progress_observer
from matomo_kafka.reset import apply_reset, describe, plan_reset
from matomo_kafka.sink import KafkaSink
from matomo_kafka.sites import (
    DISABLED,
    LOG_DISABLED_MESSAGE,
    parse_shard,
    resolve_all_sites,
    sites_with_checkpoints,
    skip_disabled_sites,
)
from matomo_kafka.state import write_checkpoint
from matomo_kafka.summary import RunRecord, site_outcomes, write_json_atomic

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
    typer.Option("--sites", help="Comma-separated site ids (or all) overriding MATOMO_ID_SITE."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")]

log = logging.getLogger("matomo_kafka")


class Failure(typer.Exit):
    """typer.Exit that keeps its (redacted) one-line message, for the run summary."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message


def fail(message: str, code: int) -> NoReturn:
    """One redacted line on stderr, then the exit code."""
    text = _redactor(message)
    print(f"matomo-kafka: error: {text}", file=sys.stderr, flush=True)
    raise Failure(code, text)


def parse_run_date(value: str | None) -> date | None:
    if value is None or value.strip() == "":
        return None
    return parse_day("--run-date", value)


def parse_sites(value: str | None, settings: Settings) -> tuple[int, ...] | Literal["all"]:
    """--sites (ids or `all`), else MATOMO_ID_SITE; repeated ids are kept once."""
    if value is None:
        return settings.MATOMO_ID_SITE
    parts = [part.strip() for part in value.split(",") if part.strip()]
    try:
        return parse_site_selection(",".join(dict.fromkeys(parts)))
    except ValueError as exc:
        fail(f"--sites {value!r} {exc}", EXIT_CONFIG)


def load(
    parm_dir: Path, verbose: bool = False, quiet: bool = False, warn: bool = False
) -> Settings:
    """Validated settings (the Kafka clients' by librdkafka too), logging set up and secrets
    registered with the redactor; with `warn` (run, check), the configuration's warnings
    logged once (a short salt...)."""
    try:
        loaded = load_config(parm_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"matomo-kafka: config: {problem}", file=sys.stderr)
        fail(f"invalid configuration ({len(exc.problems)} problem(s)) in {parm_dir}", EXIT_CONFIG)
    settings = loaded.settings
    _redactor.add(settings.secret_values())
    kafka_problems = kafka_validate.problems(settings)
    if kafka_problems:
        for problem in kafka_problems:
            print(f"matomo-kafka: config: {_redactor(problem)}", file=sys.stderr)
        fail(f"invalid Kafka client configuration ({len(kafka_problems)} problem(s)) in "
             f"{parm_dir}", EXIT_CONFIG)  # fmt: skip
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    try:
        setup_logging(parm_dir, _redactor, level, settings.CLUSTERID, settings.LOG_FORMAT == "json")
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{parm_dir / 'logging.conf'} is invalid: {type(exc).__name__}: {exc}", EXIT_CONFIG)
    if warn:
        for warning in loaded.warnings:
            log.warning("config: %s", warning)
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
        gate=RequestGate(settings.MATOMO_MAX_CONCURRENCY, settings.MATOMO_MAX_REQUESTS_PER_MINUTE),
    )


def checkpoint_store(settings: Settings) -> CheckpointStore:
    return CheckpointStore(settings.FILE_PATH_FILTERDATE, settings.FILE_PATH_LAST_OFFSET)


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: finish the page in flight, checkpoint, exit 130. Second: now."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            print("matomo-kafka: second signal, exiting now (rerun resumes)", file=sys.stderr)
            os._exit(130)
        log.warning("signal %d: stopping after the page in flight", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        envvar="MATOMO_SHARD",
        help="INDEX/COUNT: only the sites with crc32(idsite) % COUNT == INDEX, so COUNT "
        "instances share the sites (e.g. $(JOB_COMPLETION_INDEX)/4).",
    ),
]
SummaryFile = Annotated[
    Path | None,
    typer.Option(
        "--summary-file",
        envvar="MATOMO_SUMMARY_FILE",
        help="Writes a JSON summary of the run there, even when it fails.",
    ),
]


@app.command()
def run(
    parm_dir: ParmDir = Path("parm"),
    run_date: RunDate = None,
    sites: Sites = None,
    shard: Shard = None,
    summary_file: SummaryFile = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Extracts every closed day of each site, from its checkpoint, into Kafka."""
    if summary_file is not None and not summary_file.parent.is_dir():
        fail(f"--summary-file {summary_file}: directory {summary_file.parent} does not exist",
             EXIT_CONFIG)  # fmt: skip
    record = RunRecord(version=__version__)
    try:
        _run(record, parm_dir, run_date, sites, shard, verbose, quiet)
    except Failure as exc:
        record.fail(exc.exit_code, exc.message)
        _write_summary(summary_file, record)
        raise
    except KeyboardInterrupt:
        record.fail(EXIT_INTERRUPTED, "interrupted")
        _write_summary(summary_file, record)
        raise
    problem = _write_summary(summary_file, record)
    if problem is not None:
        fail(problem, EXIT_FAILED)


def _write_summary(path: Path | None, record: RunRecord) -> str | None:
    """Writes the summary file when asked; returns the problem, if any (already printed)."""
    if record.finished is None:
        record.finished = datetime.now(UTC)
    if path is None:
        return None
    try:
        write_json_atomic(path, record.as_dict())
    except OSError as exc:
        problem = f"cannot write the summary file {path}: {exc.strerror or exc}"
        print(f"matomo-kafka: error: {_redactor(problem)}", file=sys.stderr, flush=True)
        return problem
    return None


def _run(
    record: RunRecord,
    parm_dir: Path,
    run_date: str | None,
    sites: str | None,
    shard: str | None,
    verbose: bool,
    quiet: bool,
) -> None:
    day = record.run_date = parse_run_date(run_date)
    shard_spec = None
    if shard is not None and shard.strip():
        try:
            shard_spec = parse_shard(shard)
        except ValueError as exc:
            fail(str(exc), EXIT_CONFIG)
        record.shard = str(shard_spec)
    settings = load(parm_dir, verbose, quiet, warn=True)
    record.clusterid, record.topic = settings.CLUSTERID, settings.KAFKA_TOPIC
    selection = parse_sites(sites, settings)
    record.site_selection = selection if selection == "all" else ",".join(map(str, selection))
    stop = threading.Event()
    _stop_on_signals(stop)
    store = checkpoint_store(settings)
    with matomo_client(settings) as matomo:
        try:
            site_ids = resolve_sites(selection, matomo)
        except MatomoKafkaError as exc:
            fail(str(exc), exc.exit_code)
        if shard_spec is not None:
            site_ids = shard_spec.select(site_ids)
        log.info(
            "matomo-kafka %s: sites %s%s, topic %s, cluster %s",
            __version__, ",".join(map(str, site_ids)) or "none",
            f" (shard {shard_spec})" if shard_spec else "", settings.KAFKA_TOPIC,
            settings.CLUSTERID,
        )  # fmt: skip
        if not site_ids:
            log.warning("shard %s has no site of %s: nothing to do", shard_spec, selection)
        try:
            with store.lock(site_ids):
                report, startup = _extract(settings, matomo, store, day, stop, site_ids, quiet)
                _conclude(record, report, startup, settings, store, matomo.retries_done)
        except MatomoKafkaError as exc:  # the lock (exit 3) or its file
            fail(str(exc), exc.exit_code)
    if startup is not None:
        fail(str(startup), startup.exit_code)
    print_summary(report, store)
    if report.fatal is not None:
        fail(str(report.fatal), report.fatal.exit_code)
    failed = [site for site in report.sites if site.status not in ("done", DISABLED)]
    if failed:
        for site in failed:
            print(f"matomo-kafka: site {site.idsite}: {_redactor(site.error or '')}",
                  file=sys.stderr)  # fmt: skip
        fail(f"{len(failed)} of {len(report.sites)} site(s) failed", EXIT_FAILED)


def resolve_sites(
    selection: tuple[int, ...] | Literal["all"], matomo: MatomoClient
) -> tuple[int, ...]:
    """The configured ids, or with `all` every site the token can view (one Matomo call)."""
    if selection != "all":
        return selection
    site_ids = resolve_all_sites(matomo)
    log.info("MATOMO_ID_SITE=all: the token can view %d site(s)", len(site_ids))
    return site_ids


def _extract(
    settings: Settings,
    matomo: MatomoClient,
    store: CheckpointStore,
    day: date | None,
    stop: threading.Event,
    site_ids: tuple[int, ...],
    quiet: bool,
) -> tuple[RunReport, MatomoKafkaError | None]:
    """Runs the pipeline; a failure before it starts (Kafka, topic) comes back as `startup`."""
    try:
        sink = KafkaSink.from_settings(settings)
        try:
            sink.check_topic()
            json_logs = settings.LOG_FORMAT == "json"
            with progress_observer(quiet=quiet, json_logs=json_logs) as observer:
                pipeline = Pipeline(settings, matomo, sink, store, day, stop, observer=observer)
                # What exists now (modules, settings, clients) lasts the whole run: frozen out
                # of the cyclic GC, whose full collections then walk only what the run makes
                # (they walked every module's objects, 1-2 us a visit).
                gc.collect()
                gc.freeze()
                return pipeline.run(site_ids), None
        finally:
            sink.close()
    except MatomoKafkaError as exc:
        skipped = [SiteReport(idsite, status="skipped") for idsite in site_ids]
        return RunReport(sites=skipped, fatal=exc), exc


def _conclude(
    record: RunRecord,
    report: RunReport,
    startup: MatomoKafkaError | None,
    settings: Settings,
    store: CheckpointStore,
    retries: int,
) -> None:
    """Under the sites' locks: applies the disabled-log policy, records the outcome, keeps
    each clean site's success time and publishes the metrics."""
    for site in skip_disabled_sites(report.sites, settings.MATOMO_STRICT_SITES):
        log.warning(
            "site %d: visitor log disabled in Matomo, skipped (MATOMO_STRICT_SITES=true makes "
            "it an error): %s", site.idsite, site.error,
        )  # fmt: skip
    record.sites = site_outcomes(report.sites, store, settings.START_DATE, record.run_date)
    record.matomo_retries = retries
    record.matomo_concurrency_lowest = report.pace_lowest
    record.matomo_concurrency_last = report.pace_last
    fatal = startup or report.fatal
    failed = [site for site in report.sites if site.status not in ("done", DISABLED)]
    if fatal is not None:
        record.fail(fatal.exit_code, _redactor(str(fatal)), type(fatal).__name__)
    elif failed:
        record.fail(EXIT_FAILED, f"{len(failed)} of {len(report.sites)} site(s) failed",
                    failed[0].error_kind)  # fmt: skip
    record.finished = datetime.now(UTC)
    successes = SuccessTimes(store)
    for site in report.sites:
        if site.status == "done":
            successes.write(site.idsite, record.finished)
    for outcome in record.sites:
        outcome.error = _redactor(outcome.error) if outcome.error else None
    if settings.METRICS_TEXTFILE or settings.METRICS_PUSHGATEWAY:
        last_success = {
            site.idsite: moment
            for site in record.sites
            if (moment := successes.read(site.idsite)) is not None
        }
        publish(
            record,
            last_success,
            textfile=settings.METRICS_TEXTFILE,
            pushgateway=settings.METRICS_PUSHGATEWAY,
        )


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
    rescan = ""
    if any(site.rescanned_days for site in report.sites):
        new = sum(site.rescan_new for site in report.sites)
        changed = sum(site.rescan_changed for site in report.sites)
        rescan = f" (re-scan: {new} new and {changed} changed visits re-sent)"
    table.caption = (
        f"{report.visits} visits sent{rescan}; checkpoint = next day to read +visits already "
        f"sent; files {store.filterdate_prefix}<site>.txt"
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
    site_ids = settings.MATOMO_ID_SITE
    if site_ids == "all":  # no network call here: the sites that have a checkpoint
        site_ids = sites_with_checkpoints(store)
        table.caption = f"MATOMO_ID_SITE=all: the {len(site_ids)} site(s) with a checkpoint file"
    for idsite in site_ids:
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
    settings = load(parm_dir, quiet=True, warn=True)
    selection = parse_sites(sites, settings)
    table = Table(title="matomo-kafka check", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    failures = 0

    def record(name: str, ok: bool, detail: str, result: str | None = None) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        table.add_row(name, result or ("ok" if ok else "FAIL"), _redactor(detail))

    count = "all sites" if selection == "all" else f"{len(selection)} site(s)"
    record("config", True, f"{count}, topic {settings.KAFKA_TOPIC}")
    site_ids: tuple[int, ...] = ()
    with matomo_client(settings) as matomo:
        step = "matomo"
        try:
            record(step, True, f"Matomo {matomo.version()} at {settings.MATOMO_API_URL}")
            step = "sites"
            site_ids = resolve_sites(selection, matomo)
            if selection == "all":
                record(step, True, f"all: {','.join(map(str, site_ids))}")
        except MatomoKafkaError as exc:
            record(step, False, str(exc))
        for idsite in site_ids:
            try:
                info = matomo.site(idsite)
                tz = site_timezone(info.timezone)
                yesterday = last_closed_day(tz, None)
                matomo.visits_page(idsite, yesterday, 1, 0)
                detail = f"{info.name!r}, {info.timezone}, visits log readable"
                record(f"site {idsite}", True, detail)
            except (MatomoKafkaError, ValueError) as exc:
                if LOG_DISABLED_MESSAGE in str(exc) and not settings.MATOMO_STRICT_SITES:
                    record(f"site {idsite}", True, f"run skips it: {exc}", "disabled")
                else:
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


SiteId = Annotated[int, typer.Option("--site", min=1, help="The Matomo idSite.")]


def parse_day(option: str, value: str) -> date:
    """A YYYY-MM-DD (or YYYYMMDD) day option; exit 2 otherwise."""
    text = value.strip()
    if re.fullmatch(r"\d{8}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        day = date.fromisoformat(text)
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)", EXIT_CONFIG)
    if not 1990 <= day.year <= 2999:
        fail(f"{option} {value!r} is out of range (years 1990 to 2999)", EXIT_CONFIG)
    return day


def say(text: str) -> None:
    """A plain stdout line (no wrapping, no markup): what scripts and operators read."""
    print(text, flush=True)


def _known_site(settings: Settings, idsite: int) -> None:
    """With an explicit MATOMO_ID_SITE, a site outside it is most likely a typo."""
    if settings.MATOMO_ID_SITE != "all" and idsite not in settings.MATOMO_ID_SITE:
        listed = ",".join(map(str, settings.MATOMO_ID_SITE))
        fail(f"--site {idsite} is not in MATOMO_ID_SITE ({listed})", EXIT_CONFIG)


@app.command()
def reset(
    site: SiteId,
    day_text: Annotated[
        str, typer.Option("--date", help="New checkpoint day (YYYY-MM-DD), offset 0.")
    ],
    parm_dir: ParmDir = Path("parm"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Moves a site's checkpoint on purpose to (DATE, offset 0): the next run reads from DATE.

    Refused (exit 3) while a run holds the site's lock; asks for confirmation unless --yes
    (without a terminal and without --yes it refuses, exit 2)."""
    new_day = parse_day("--date", day_text)
    settings = load(parm_dir, quiet=True)
    _known_site(settings, site)
    if new_day > date.today() + timedelta(days=1):
        fail(f"--date {new_day} is in the future", EXIT_CONFIG)
    store = checkpoint_store(settings)
    try:
        with store.lock([site]):
            plan = plan_reset(store, site, new_day)
            old = plan.describe_old(settings.START_DATE)
            new = describe(plan.new)
            if not plan.changes and not settings.exactly_once:  # (the state topic may differ)
                say(f"site {site}: checkpoint already at {new}: nothing to change")
                return
            say(f"site {site}: checkpoint {old} -> {new}")
            if plan.unreadable:
                say(f"  (current checkpoint: {_redactor(plan.unreadable)})")
            if plan.old is not None and new_day <= plan.old.day:
                say(
                    f"  the next run re-sends site {site}'s visits from {new_day} on "
                    "(consumers see them again, same keys)"
                )
            elif plan.old is not None:
                skipped = f"{plan.old.day} to {new_day - timedelta(days=1)}"
                say(f"  the visits of site {site} from {skipped} will NOT be sent")
            if not yes:
                if not sys.stdin.isatty():
                    fail("no terminal to confirm the reset: pass --yes", EXIT_CONFIG)
                if not typer.confirm("Move the checkpoint?", default=False):
                    fail("reset cancelled, checkpoint unchanged", EXIT_CONFIG)
            if settings.exactly_once:  # the state topic is what runs start from
                write_checkpoint(settings, site, plan.new)
                say(f"site {site}: checkpoint written to the state topic {settings.state_topic}")
            apply_reset(store, plan)
            log.warning("site %d: checkpoint reset from %s to %s", site, old, new)
            say(f"site {site}: checkpoint moved ({store.date_path(site)}, "
                f"{store.offset_path(site)})")  # fmt: skip
    except MatomoKafkaError as exc:
        fail(str(exc), exc.exit_code)


@app.command()
def audit(
    site: SiteId,
    first_text: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    last_text: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD).")],
    parm_dir: ParmDir = Path("parm"),
) -> None:
    """Compares, per day, the visits in the topic with Matomo's; exit 1 if any differ.

    Sent (read back from the topic, from the first record produced at or after the first
    day's start in the site's timezone minus 1 hour) against VisitsSummary.get nb_visits and a
    fresh Live listing; a visit missing from the topic, or one in it that Live does not list,
    is a mismatch."""
    first, last = parse_day("--from", first_text), parse_day("--to", last_text)
    if first > last:
        fail(f"--from {first} is after --to {last}", EXIT_CONFIG)
    if (last - first).days >= 366:
        fail("audit at most 366 days at once", EXIT_CONFIG)
    settings = load(parm_dir, quiet=True)
    store = checkpoint_store(settings)
    try:
        cursor = store.load(site)
    except MatomoKafkaError:
        cursor = None
    try:
        with matomo_client(settings) as matomo:
            audited = audit_site(settings, matomo, site, first, last)
    except MatomoKafkaError as exc:
        fail(str(exc), exc.exit_code)
    rows, read = audited.rows, audited.topic
    table = Table(title=f"matomo-kafka audit: site {site}, topic {settings.KAFKA_TOPIC}",
                  title_justify="left")  # fmt: skip
    columns = ("day", "sent", "distinct sent", "duplicates", "VisitsSummary", "Live", "missing",
               "extra", "ok")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("day", "ok") else "right")
    for row in rows:
        pending = cursor is None or row.day >= cursor.day
        verdict = "ok" if row.ok else "NOT SENT" if pending and row.sent == 0 else "MISMATCH"
        summary = "-" if row.summary is None else str(row.summary)
        table.add_row(
            str(row.day), str(row.sent), str(row.distinct), str(row.duplicates), summary,
            str(row.live), str(row.missing), str(row.extra), verdict,
        )  # fmt: skip
    where = f"{cursor.day} offset {cursor.offset}" if cursor else "none"
    table.caption = (
        f"checkpoint: {where}. missing = in Live, not in the topic; extra = in the topic, "
        "not in Live; duplicates are re-sends (at-least-once), not errors."
    )
    # Never truncated, even in a scheduler's log (no terminal: rich would assume 80 columns).
    wide = stdout if stdout.is_terminal else Console(highlight=False, width=200)
    wide.print(table)
    say(
        f"read {read.read:,} records of {read.total:,} in the topic's partitions (from the "
        f"first one produced at or after {read.since:%Y-%m-%d %H:%M} UTC)"
    )
    for row in rows:
        if row.summary_differs:
            say(
                f"note: {row.day}: VisitsSummary says {row.summary} visits, Live lists "
                f"{row.live} (Matomo's archive may be stale; Live is what the tool reads)"
            )
    bad = [row for row in rows if not row.ok]
    if bad:
        missing = sum(row.missing for row in bad)
        extra = sum(row.extra for row in bad)
        fail(
            f"site {site}: {len(bad)} of {len(rows)} day(s) differ: {missing} visit(s) "
            f"missing from the topic, {extra} extra",
            EXIT_FAILED,
        )


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
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")
    ] = None,
    matomo_version: Annotated[
        str,
        typer.Option(
            "--matomo-version", help="5.0.2 or 4.15.1: the version whose refusals to reproduce."
        ),
    ] = "5.0.2",
) -> None:
    """Serves a deterministic Matomo API simulator (demos and tests), over HTTP or HTTPS."""
    import ssl

    from matomo_kafka.simulator import (
        MATOMO_VERSIONS,
        SimConfig,
        SimSite,
        run_simulator,
        tls_context,
    )

    tls = None
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together", EXIT_CONFIG)
    if tls_cert is not None and tls_key is not None:
        tls = (str(tls_cert), str(tls_key))
        try:
            tls_context(*tls)
        except (OSError, ssl.SSLError) as exc:
            fail(f"--tls-cert/--tls-key cannot be used: {exc}", EXIT_CONFIG)
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
        if matomo_version not in MATOMO_VERSIONS:
            fail(f"--matomo-version {matomo_version!r}: expected one of "
                 f"{', '.join(MATOMO_VERSIONS)}", EXIT_CONFIG)  # fmt: skip
        sim_config = SimConfig(
            token=token, sites=sim_sites, latency_s=latency_ms / 1000, basic_auth=gateway,
            matomo_version=matomo_version,
        )  # fmt: skip
    scheme = "https" if tls else "http"
    print(f"matomo simulator on {scheme}://{host}:{port}/index.php", flush=True)
    run_simulator(sim_config, host, port, tls)


@app.command()
def schema() -> None:
    """Prints the JSON Schema of a message value (what consumers can rely on)."""
    from matomo_kafka.message_schema import message_schema_text

    sys.stdout.write(message_schema_text())


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
