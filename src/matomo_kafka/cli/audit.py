"""`matomo-kafka audit`: the visits in the topic against Matomo's, day by day."""

from __future__ import annotations

from rich.table import Table

from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    FirstDay,
    LastDay,
    ParmDir,
    SiteId,
    app,
    checkpoint_store,
    fail,
    load,
    matomo_client,
    parse_day_range,
    say,
    stdout,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import EXIT_CONFIG, EXIT_FAILED, MatomoKafkaError
from matomo_kafka.model import Cursor
from matomo_kafka.ops.audit import DayAudit, SiteAudit, audit_site
from matomo_kafka.ops.terminal import plain_console


@app.command()
def audit(
    site: SiteId,
    first_text: FirstDay,
    last_text: LastDay,
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
) -> None:
    """Compares, per day, the visits in the topic with Matomo's; exit 1 if any differ.

    Sent (read back from the topic, from the first record produced at or after the first
    day's start in the site's timezone minus 1 hour) against VisitsSummary.get nb_visits and a
    fresh Live listing; a visit missing from the topic, or one in it that Live does not list,
    is a mismatch. The comparison is `reconcile`'s: missing is what it would send, extra what
    it would erase; visits whose message changed since are noted."""
    first, last = parse_day_range(first_text, last_text)
    if (last - first).days >= 366:
        fail("audit at most 366 days at once", EXIT_CONFIG)
    settings = load(parm_dir, quiet=True)
    store = checkpoint_store(settings)
    try:
        cursor, known = store.load(site), True
    except MatomoKafkaError:  # unreadable: no day counts as not due
        cursor, known = None, False
    try:
        with matomo_client(settings) as matomo:
            audited = audit_site(settings, matomo, site, first, last)
    except MatomoKafkaError as exc:
        fail(str(exc), exc.exit_code)
    _print_audit(settings, site, audited, cursor, known)
    bad = [row for row in audited.rows if not row.ok and not _not_due(row, cursor, known)]
    if bad:
        missing = sum(row.missing for row in bad)
        extra = sum(row.extra for row in bad)
        fail(
            f"site {site}: {len(bad)} of {len(audited.rows)} day(s) differ: {missing} visit(s) "
            f"missing from the topic, {extra} extra",
            EXIT_FAILED,
        )


def _not_due(row: DayAudit, cursor: Cursor | None, known: bool) -> bool:
    """A day at or after the checkpoint (or any day of a site that never ran) whose visits
    are only missing, not extra: the next run sends them, it is no error (the checkpoint's
    day itself may be partly sent)."""
    pending = known and (cursor is None or row.day >= cursor.day)
    return pending and not row.ok and row.extra == 0


def _print_audit(
    settings: Settings, site: int, audited: SiteAudit, cursor: Cursor | None, known: bool
) -> None:
    """The table of days, how much of the topic was read, and notes on stale archives."""
    rows, read = audited.rows, audited.topic
    table = Table(title=f"matomo-kafka audit: site {site}, topic {settings.KAFKA_TOPIC}",
                  title_justify="left")  # fmt: skip
    columns = ("day", "sent", "distinct sent", "duplicates", "VisitsSummary", "Live", "missing",
               "extra", "ok")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("day", "ok") else "right")
    for row in rows:
        verdict = "ok" if row.ok else "NOT DUE" if _not_due(row, cursor, known) else "MISMATCH"
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
    wide = stdout if stdout.is_terminal else plain_console(width=200)
    wide.print(table)
    say(
        f"read {read.read:,} records of {read.total:,} in the topic's partitions (from the "
        f"first one produced at or after {read.since:%Y-%m-%d %H:%M} UTC)"
    )
    not_due = [row for row in rows if _not_due(row, cursor, known)]
    if not_due:
        say(
            f"{len(not_due)} day(s) not due yet (at or after the checkpoint, {where}): "
            f"{sum(row.missing for row in not_due)} visit(s) the next run sends, not an error"
        )
    for row in rows:
        if row.changed:
            say(
                f"note: {row.day}: {row.changed} visit(s) changed in Matomo since they were sent "
                "(more actions, anonymisation): `matomo-kafka reconcile --apply` updates them"
            )
        if row.summary_differs:
            say(
                f"note: {row.day}: VisitsSummary says {row.summary} visits, Live lists "
                f"{row.live} (Matomo's archive may be stale; Live is what the tool reads)"
            )
