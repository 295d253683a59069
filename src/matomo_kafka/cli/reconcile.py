"""`matomo-kafka reconcile`: makes a site's days in the topic equal to Matomo's raw log."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    FirstDay,
    LastDay,
    ParmDir,
    SiteId,
    app,
    check_summary_file,
    checkpoint_store,
    fail,
    load,
    matomo_client,
    parse_day_range,
    say,
    stdout,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    MatomoAuthError,
    MatomoKafkaError,
    MatomoResponseError,
    SiteAccessError,
)
from matomo_kafka.ops.reconcile import DayDiff, EraseBudget, SiteDiff, diff_site
from matomo_kafka.ops.summary import write_json_atomic


@app.command()
def reconcile(
    site: SiteId,
    first_text: FirstDay,
    last_text: LastDay,
    apply: Annotated[
        bool, typer.Option("--apply", help="Send what differs (without: a dry run).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Send more tombstones than MATOMO_MAX_ERASE.")
    ] = False,
    erase_purged_days: Annotated[
        bool,
        typer.Option(
            "--erase-purged-days",
            help="Tombstone the visits of days Matomo now lists empty (its retention purge).",
        ),
    ] = False,
    summary_file: Annotated[
        Path | None,
        typer.Option("--summary-file", help="Writes a JSON summary there, even on failure."),
    ] = None,
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
) -> None:
    """Per day, the topic's latest record per visit against Matomo's Live listing, compared by
    the digest of the message the tool would send today: missing, changed, erased, equal.

    Without --apply nothing is sent, exit 1 if any day differs. With --apply the missing and
    changed visits go as keyed records and the erased ones as tombstones (at most
    MATOMO_MAX_ERASE without --yes); a second --apply sends nothing. A day Matomo lists empty
    while the topic holds visits (purged by Matomo) is kept unless --erase-purged-days."""
    first, last = parse_day_range(first_text, last_text)
    check_summary_file(summary_file)
    settings = load(parm_dir)
    days = _days_allowed(settings, first, last)
    budget = EraseBudget(None if yes else settings.MATOMO_MAX_ERASE, erase_purged_days)
    mode = "apply" if apply else "dry run"
    say(f"reconcile site {site}, {first} to {last} ({days} day(s)), topic "
        f"{settings.KAFKA_TOPIC}, {mode}")  # fmt: skip
    record = _summary_head(settings, site, first, last, apply)
    try:
        result = _compare(settings, site, first, last, budget, apply)
    except MatomoKafkaError as exc:
        code = exc.exit_code
        if isinstance(exc, SiteAccessError | MatomoResponseError):
            code = EXIT_CONFIG  # the site (unknown, not viewable): nothing was read or sent
        _write(summary_file, {**record, "exit_code": code, "error": str(exc), "days": []})
        fail(str(exc), code)
    _print(settings, site, result, apply)
    code, problem = _outcome(result, apply)
    _write(summary_file, {**record, **_as_dict(result), "exit_code": code, "error": problem})
    if problem is not None:
        fail(problem, code)


def _days_allowed(settings: Settings, first: date, last: date) -> int:
    """The range's days; exit 2 over MATOMO_MAX_RECONCILE_DAYS, what one command may read."""
    days = (last - first).days + 1
    if days > settings.MATOMO_MAX_RECONCILE_DAYS:
        fail(f"--from {first} --to {last} is {days} days, more than "
             f"MATOMO_MAX_RECONCILE_DAYS={settings.MATOMO_MAX_RECONCILE_DAYS}: reconcile the "
             "range in several commands", EXIT_CONFIG)  # fmt: skip
    return days


def _summary_head(
    settings: Settings, site: int, first: date, last: date, apply: bool
) -> dict[str, Any]:
    """What the summary file says of the command whatever comes of it."""
    return {
        "command": "reconcile", "site": site, "from": first.isoformat(), "to": last.isoformat(),
        "apply": apply, "topic": settings.KAFKA_TOPIC,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def _compare(
    settings: Settings, site: int, first: date, last: date, budget: EraseBudget, apply: bool
) -> SiteDiff:
    """The days compared, each said as it is done; with --apply under the site's lock (no
    run of the site meanwhile) and what differs sent."""
    lock = checkpoint_store(settings).lock([site]) if apply else nullcontext()
    with lock, matomo_client(settings) as matomo:
        return diff_site(settings, matomo, site, first, last, budget, apply, _day_line(apply))


def _day_line(apply: bool) -> Callable[[DayDiff], None]:
    """Says a day's comparison as soon as it is done (with --apply: the records sent)."""

    def progress(row: DayDiff) -> None:
        sent = f", {row.sent} record(s) sent" if apply else ""
        say(f"  {row.day}: {row.live} in Matomo: {row.missing} missing, {row.changed} changed, "
            f"{row.erased} erased, {row.equal} equal: {row.verdict}{sent}")  # fmt: skip

    return progress


def _outcome(result: SiteDiff, apply: bool) -> tuple[int, str | None]:
    """The exit code and the one line that says why it is not 0."""
    rows = result.rows
    if result.error is not None:
        code = result.error.exit_code if isinstance(result.error, MatomoAuthError) else EXIT_FAILED
        left = f"{result.left[0]} to {result.left[-1]}" if result.left else "none"
        return code, (f"{result.error}; {len(rows)} day(s) reconciled, not reconciled: {left} "
                      "(run it again for those)")  # fmt: skip
    withheld = sum(row.withheld for row in rows)
    if withheld:
        return EXIT_FAILED, (
            f"{withheld} visit(s) erased in Matomo are more than MATOMO_MAX_ERASE allows in "
            "one command: none sent for their days; check the dry run, then add --yes"
        )
    differ = [row for row in rows if row.differs]
    if not apply and differ:
        return EXIT_FAILED, (
            f"{len(differ)} of {len(rows)} day(s) differ: {sum(r.missing for r in differ)} "
            f"missing, {sum(r.changed for r in differ)} changed, "
            f"{sum(r.to_erase for r in differ)} erased (--apply sends them)"
        )
    return 0, None


def _as_dict(result: SiteDiff) -> dict[str, Any]:
    rows = result.rows
    return {
        "days": [row.as_dict() for row in rows],
        "not_reconciled": [day.isoformat() for day in result.left],
        "totals": {
            "missing": sum(r.missing for r in rows), "changed": sum(r.changed for r in rows),
            "erased": sum(r.to_erase for r in rows), "equal": sum(r.equal for r in rows),
            "purged_days": [r.day.isoformat() for r in rows if r.purged],
            "withheld": sum(r.withheld for r in rows), "sent": sum(r.sent for r in rows),
        },
        "topic_read": {"records": result.topic.read, "total": result.topic.total,
                       "since": result.topic.since.isoformat()},
    }  # fmt: skip


def _write(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        say(f"cannot write the summary file {path}: {exc.strerror or exc}")


def _print(settings: Settings, site: int, result: SiteDiff, apply: bool) -> None:
    table = Table(title=f"matomo-kafka reconcile: site {site}, topic {settings.KAFKA_TOPIC}",
                  title_justify="left")  # fmt: skip
    for column in ("day", "Matomo", "missing", "changed", "erased", "equal", "sent", "verdict"):
        table.add_column(column, justify="left" if column in ("day", "verdict") else "right")
    for row in result.rows:
        table.add_row(
            str(row.day), str(row.live), str(row.missing), str(row.changed), str(row.erased),
            str(row.equal), str(row.sent), row.verdict,
        )  # fmt: skip
    for day in result.left:
        table.add_row(str(day), "-", "-", "-", "-", "-", "-", "not reconciled")
    table.caption = (
        "missing = in Matomo, no value in the topic; changed = the topic's newest message "
        "differs from today's; erased = in the topic, no longer in Matomo"
        + ("" if apply else "; dry run: nothing sent")
    )
    wide = stdout if stdout.is_terminal else Console(highlight=False, width=200)
    wide.print(table)
    read = result.topic
    say(f"read {read.read:,} records of {read.total:,} in the topic's partitions (from the "
        f"first one produced at or after {read.since:%Y-%m-%d %H:%M} UTC)")  # fmt: skip
    purged = [row for row in result.rows if row.purged]
    if purged:
        say(f"purged by Matomo (listed empty now, visits in the topic, kept): "
            f"{', '.join(str(row.day) for row in purged)}; --erase-purged-days would erase "
            f"their {sum(row.erased for row in purged)} visit(s)")  # fmt: skip
