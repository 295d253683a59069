"""`matomo-kafka run`: every closed day of each site, from its checkpoint, into Kafka."""

from __future__ import annotations

import gc
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from matomo_kafka import __version__
from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    AcceptNewTopic,
    Failure,
    ParmDir,
    Quiet,
    RunDate,
    Shard,
    Sites,
    Verbose,
    _redactor,
    app,
    check_summary_file,
    checkpoint_store,
    fail,
    load,
    log,
    matomo_client,
    parse_run_date,
    parse_shard_option,
    parse_sites,
    resolve_sites,
    sites_named_by,
    stdout,
    stop_on_signals,
    tool_clock,
)
from matomo_kafka.clock import Clock
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import EXIT_FAILED, EXIT_INTERRUPTED, MatomoKafkaError
from matomo_kafka.model import RunReport, SiteReport
from matomo_kafka.ops.conclusion import conclude
from matomo_kafka.ops.progress import progress_observer
from matomo_kafka.ops.summary import RunRecord, write_json_atomic
from matomo_kafka.ops.terminal import plain
from matomo_kafka.pipeline import Pipeline
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.days import days_behind
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.state.topic_id import TopicGuard

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
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
    run_date: RunDate = None,
    sites: Sites = None,
    shard: Shard = None,
    summary_file: SummaryFile = None,
    accept_new_topic: AcceptNewTopic = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Extracts every closed day of each site, from its checkpoint, into Kafka."""
    check_summary_file(summary_file)
    record = RunRecord(version=__version__)
    try:
        _run(record, parm_dir, run_date, sites, shard, verbose, quiet, accept_new_topic)
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
    accept_new_topic: bool = False,
) -> None:
    day = record.run_date = parse_run_date(run_date)
    shard_spec = parse_shard_option(shard)
    if shard_spec is not None:
        record.shard = str(shard_spec)
    settings = load(parm_dir, verbose, quiet, warn=True)
    clock = tool_clock()
    record.clusterid, record.topic = settings.CLUSTERID, settings.KAFKA_TOPIC
    selection = parse_sites(sites, settings)
    record.site_selection = selection if selection == "all" else ",".join(map(str, selection))
    named_by = sites_named_by(sites)
    stop = threading.Event()
    stop_on_signals(stop, "exit 130")
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
                report, startup = _extract(settings, matomo, store, day, stop, site_ids, quiet,
                                           clock, accept_new_topic, named_by)  # fmt: skip
                conclude(record, report, startup, settings, store, matomo.retries_done, _redactor)
                _forget_unknown_sites(store, report)
        except MatomoKafkaError as exc:  # the lock (exit 3) or its file
            fail(str(exc), exc.exit_code)
    if startup is not None:
        fail(str(startup), startup.exit_code)
    print_summary(report, store)
    if report.fatal is not None:
        fail(str(report.fatal), report.fatal.exit_code)
    failed = report.failed
    if failed:
        for site in failed:
            print(f"matomo-kafka: site {site.idsite}: {_redactor(site.error or '')}",
                  file=sys.stderr)  # fmt: skip
        fail(f"{len(failed)} of {len(report.sites)} site(s) failed", EXIT_FAILED)


def _forget_unknown_sites(store: CheckpointStore, report: RunReport) -> None:
    """A site Matomo does not list (a typo in --sites, a deleted site) that never had a
    checkpoint leaves no lock file behind. Removed while still held: another run that opened
    it meanwhile fails to lock it (exit 3) and the next one creates it again."""
    for site in report.sites:
        if site.error_kind != "SiteAccessError" or site.cursor is not None:
            continue
        idsite = site.idsite
        state = (store.date_path(idsite), store.offset_path(idsite), store.marker_path(idsite),
                 store.boundary_path(idsite))  # fmt: skip
        if not any(path.exists() for path in state):
            store.lock_path(idsite).unlink(missing_ok=True)


def _extract(
    settings: Settings,
    matomo: MatomoClient,
    store: CheckpointStore,
    day: date | None,
    stop: threading.Event,
    site_ids: tuple[int, ...],
    quiet: bool,
    clock: Clock,
    accept_new_topic: bool = False,
    sites_named_by: str = "MATOMO_ID_SITE",
) -> tuple[RunReport, MatomoKafkaError | None]:
    """Runs the pipeline; a failure before it starts (Kafka, topic) comes back as `startup`."""
    try:
        sink = KafkaSink.from_settings(settings)
        try:
            sink.check_topic()
            guard = TopicGuard(settings, accept_new_topic)
            guard.check()
            json_logs = settings.LOG_FORMAT == "json"
            with progress_observer(quiet=quiet, json_logs=json_logs) as observer:
                pipeline = Pipeline(settings, matomo, sink, store, day, stop, observer=observer,
                                    clock=clock)  # fmt: skip
                pipeline.sites_named_by = sites_named_by
                # What exists now (modules, settings, clients) lasts the whole run: frozen out
                # of the cyclic GC, whose full collections then walk only what the run makes
                # (they walked every module's objects, 1-2 us a visit).
                gc.collect()
                gc.freeze()
                report = pipeline.run(site_ids)
                guard.checkpointed(report)
                return report, None
        finally:
            sink.close()
    except MatomoKafkaError as exc:
        skipped = [SiteReport(idsite, status="skipped") for idsite in site_ids]
        return RunReport(sites=skipped, fatal=exc), exc


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
        erased = sum(site.rescan_erased for site in report.sites)
        rescan = f" (re-scan: {new} new and {changed} changed visits re-sent, {erased} erased)"
    table.caption = plain(
        f"{report.visits} visits sent{rescan}; checkpoint = next day to read +visits already "
        f"sent; files {store.filterdate_prefix}<site>.txt"
    )
    stdout.print(table)
    for site in report.sites:
        if site.purged_days:
            days = ", ".join(day.isoformat() for day in site.purged_days)
            stdout.print(
                f"site {site.idsite}: purged by Matomo (listed empty now, visits were sent): "
                f"{days}; not erased from Kafka (matomo-kafka reconcile --erase-purged-days would)"
            )
