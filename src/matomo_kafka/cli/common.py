"""What every command shares: the one-line failure, options, settings loading (with the
secrets registered for redaction), the Matomo client and the checkpoint files."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal, NoReturn

import typer

from matomo_kafka.clock import TEST_NOW, Clock, clock_from_environment
from matomo_kafka.config import kafka_check
from matomo_kafka.config.load import load_config
from matomo_kafka.config.settings import Settings, parse_site_selection
from matomo_kafka.errors import EXIT_CONFIG, EXIT_INTERRUPTED, ConfigError
from matomo_kafka.ops.log_setup import setup_logging
from matomo_kafka.ops.redaction import Redactor
from matomo_kafka.ops.terminal import escape_controls, plain_console
from matomo_kafka.source.client import MatomoClient, RequestGate, RetryPolicy
from matomo_kafka.source.sites import Shard as ShardSpec
from matomo_kafka.source.sites import parse_shard, resolve_all_sites
from matomo_kafka.state.checkpoint_files import CheckpointStore

app = typer.Typer(
    name="matomo-kafka",
    help="Moves raw Matomo visits (Live.getLastVisitsDetails) into a Kafka topic.",
    add_completion=False,
    no_args_is_help=True,
    # Rich tracebacks print local variables: a token or password could leak through them.
    pretty_exceptions_enable=False,
)

#: Never markup: what it prints comes from Matomo and parm/ (ops/terminal.py).
stdout = plain_console()


class _TerminalRedactor(Redactor):
    """Masks the secrets, then escapes control characters (ops/terminal.py): every log line
    and error line passes here, and many quote Matomo's own messages."""

    def __call__(self, text: str) -> str:
        return escape_controls(super().__call__(text))


_redactor = _TerminalRedactor()

# Each option shared by commands is defined once below (flags, help, env var) and named in
# the signature of each command that takes it (run and follow share most of theirs): typer
# reads a command's options from its signature, in the order --help shows them.
ParmDir = Annotated[
    Path,
    typer.Option("--parm-dir", help="Directory holding wa7_conf.ini, wa7.env, logging.conf."),
]
#: --parm-dir's default, the same for every command.
DEFAULT_PARM_DIR = Path("parm")

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

AcceptNewTopic = Annotated[
    bool,
    typer.Option(
        "--accept-new-topic",
        help="KAFKA_TOPIC was deleted and created again: go on with the new topic (its id is "
        "recorded beside the checkpoints) instead of refusing (exit 2).",
    ),
]

SiteId = Annotated[int, typer.Option("--site", min=1, help="The Matomo idSite.")]
#: A range of days (audit, reconcile), parsed by parse_day.
FirstDay = Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")]
LastDay = Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD).")]

Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        envvar="MATOMO_SHARD",
        help="INDEX/COUNT: only the sites with crc32(idsite) % COUNT == INDEX, so COUNT "
        "instances share the sites (e.g. $(JOB_COMPLETION_INDEX)/4).",
    ),
]

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


def say(text: str) -> None:
    """A plain stdout line (no wrapping, no markup): what scripts and operators read."""
    print(text, flush=True)


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


def parse_day_range(first_text: str, last_text: str) -> tuple[date, date]:
    """--from and --to (audit, reconcile): two days, the first not after the last; exit 2
    otherwise."""
    first, last = parse_day("--from", first_text), parse_day("--to", last_text)
    if first > last:
        fail(f"--from {first} is after --to {last}", EXIT_CONFIG)
    return first, last


def check_summary_file(path: Path | None) -> None:
    """--summary-file (run, reconcile) in a directory that exists, checked before any work:
    a summary that cannot be written is known at once, not after the work."""
    if path is not None and not path.parent.is_dir():
        fail(f"--summary-file {path}: directory {path.parent} does not exist", EXIT_CONFIG)


def parse_run_date(value: str | None) -> date | None:
    if value is None or value.strip() == "":
        return None
    return parse_day("--run-date", value)


def parse_shard_option(value: str | None) -> ShardSpec | None:
    """--shard INDEX/COUNT (or MATOMO_SHARD); exit 2 when malformed."""
    if value is None or not value.strip():
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)


def stop_on_signals(stop: threading.Event, then: str) -> None:
    """First SIGINT/SIGTERM: sets `stop`: the command checkpoints the page in flight, then
    exits as `then` says. Second: exits at once (a rerun resumes from the checkpoints)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            print("matomo-kafka: second signal, exiting now (rerun resumes)", file=sys.stderr)
            os._exit(EXIT_INTERRUPTED)
        log.warning("signal %d: stopping after the page in flight, then %s", signum, then)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def tool_clock() -> Clock:
    """The system's clock, or for tests the one MATOMO_TEST_NOW sets (said in the log)."""
    try:
        clock, how = clock_from_environment()
    except ConfigError as exc:
        fail("; ".join(exc.problems), EXIT_CONFIG)
    if how is not None:
        log.warning("%s is set (tests only): the clock is %s", TEST_NOW, how)
    return clock


def parse_sites(value: str | None, settings: Settings) -> tuple[int, ...] | Literal["all"]:
    """--sites (ids or `all`), else MATOMO_ID_SITE; repeated ids are kept once."""
    if value is None:
        return settings.MATOMO_ID_SITE
    parts = [part.strip() for part in value.split(",") if part.strip()]
    try:
        return parse_site_selection(",".join(dict.fromkeys(parts)))
    except ValueError as exc:
        fail(f"--sites {value!r} {exc}", EXIT_CONFIG)


def sites_named_by(sites: str | None) -> str:
    """What chose the sites (--sites, else MATOMO_ID_SITE): the line about a site the token
    cannot view names what to change."""
    return "MATOMO_ID_SITE" if sites is None else "--sites"


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
    kafka_problems = kafka_check.problems(settings)
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


def resolve_sites(
    selection: tuple[int, ...] | Literal["all"], matomo: MatomoClient
) -> tuple[int, ...]:
    """The configured ids, or with `all` every site the token can view (one Matomo call)."""
    if selection != "all":
        return selection
    site_ids = resolve_all_sites(matomo)
    log.info("MATOMO_ID_SITE=all: the token can view %d site(s)", len(site_ids))
    return site_ids
