"""What a run did, for schedulers: `run --summary-file PATH` writes it as JSON, atomically,
whatever the outcome (config error, lock held, site failures, interruption).

The same per-site rows feed the Prometheus metrics (metrics.py).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from matomo_kafka.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    MatomoKafkaError,
)
from matomo_kafka.model import Cursor, SiteReport
from matomo_kafka.source.days import days_behind, last_closed_day
from matomo_kafka.state.checkpoint_files import CheckpointStore

#: The overall outcome of a run, by exit code.
OUTCOMES = {
    EXIT_OK: "ok",
    EXIT_FAILED: "failed",
    EXIT_CONFIG: "invalid",
    EXIT_LOCKED: "locked",
    EXIT_INTERRUPTED: "interrupted",
}


@dataclass
class SiteOutcome:
    """One site's line of the summary and of the metrics."""

    idsite: int
    outcome: str
    visits_sent: int
    pages: int
    days_completed: int
    seconds: float
    checkpoint: Cursor | None
    last_closed_day: date | None
    days_behind: int | None
    error: str | None
    error_kind: str | None
    rescanned_days: int = 0
    rescan_new: int = 0
    rescan_changed: int = 0
    pages_split: int = 0  # asked for again smaller after hitting Matomo's limits
    tombstones: int = 0  # visits erased in Matomo, tombstoned by the re-scan
    erase_withheld: int = 0  # erased visits not tombstoned (over MATOMO_MAX_ERASE)
    purged_days: list[date] = field(default_factory=list)  # listed empty now: not erased

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.idsite,
            "outcome": self.outcome,
            "visits_sent": self.visits_sent,
            "pages": self.pages,
            "days_completed": self.days_completed,
            "seconds": round(self.seconds, 3),
            "checkpoint": None
            if self.checkpoint is None
            else {"day": self.checkpoint.day.isoformat(), "offset": self.checkpoint.offset},
            "last_closed_day": self.last_closed_day.isoformat() if self.last_closed_day else None,
            "days_behind": self.days_behind,
            "error": self.error,
            "error_kind": self.error_kind,
            "rescan": {
                "days": self.rescanned_days,
                "new": self.rescan_new,
                "changed": self.rescan_changed,
            },
            "pages_split": self.pages_split,
            "erasures": {
                "tombstones": self.tombstones,
                "withheld": self.erase_withheld,
                "purged_days": [day.isoformat() for day in self.purged_days],
            },
        }


@dataclass
class RunRecord:
    """Everything the summary and the metrics say about one `run` command."""

    version: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    run_date: date | None = None
    clusterid: str | None = None
    topic: str | None = None
    shard: str | None = None
    site_selection: str | None = None
    sites: list[SiteOutcome] = field(default_factory=list)
    matomo_retries: int = 0
    #: Matomo requests in flight the run allowed itself: the fewest (after backing off from
    #: a struggling server) and at the end; None when no site was read.
    matomo_concurrency_lowest: int | None = None
    matomo_concurrency_last: int | None = None
    #: MATOMO_MAX_CONCURRENCY, what the two above are measured against (metrics only).
    matomo_concurrency_max: int | None = None
    exit_code: int = EXIT_OK
    error: str | None = None
    error_kind: str | None = None
    #: Warnings about parm/ found by the run (a COLONNE_ANNOMYSE entry that matched nothing).
    warnings: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return OUTCOMES.get(self.exit_code, "failed")

    @property
    def seconds(self) -> float:
        end = self.finished or datetime.now(UTC)
        return (end - self.started).total_seconds()

    def fail(self, exit_code: int, message: str, kind: str | None = None) -> None:
        """Records the (first) failure that decides the exit code."""
        if self.exit_code == EXIT_OK:
            self.exit_code, self.error, self.error_kind = exit_code, message, kind

    def as_dict(self) -> dict[str, Any]:
        sites = [site.as_dict() for site in self.sites]
        by_outcome: dict[str, int] = {}
        for site in self.sites:
            by_outcome[site.outcome] = by_outcome.get(site.outcome, 0) + 1
        return {
            "tool": "matomo-kafka",
            "version": self.version,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": self.error,
            "error_kind": self.error_kind,
            "started_at": _iso(self.started),
            "finished_at": _iso(self.finished) if self.finished else None,
            "seconds": round(self.seconds, 3),
            "run_date": self.run_date.isoformat() if self.run_date else None,
            "clusterid": self.clusterid,
            "topic": self.topic,
            "shard": self.shard,
            "site_selection": self.site_selection,
            "totals": {
                "sites": len(self.sites),
                "sites_by_outcome": by_outcome,
                "visits_sent": sum(site.visits_sent for site in self.sites),
                "pages": sum(site.pages for site in self.sites),
                "days_completed": sum(site.days_completed for site in self.sites),
                "matomo_retries": self.matomo_retries,
                "pages_split": sum(site.pages_split for site in self.sites),
                "matomo_concurrency": {
                    "lowest": self.matomo_concurrency_lowest,
                    "last": self.matomo_concurrency_last,
                },
            },
            "warnings": self.warnings,
            "sites": sites,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def site_outcomes(
    reports: list[SiteReport],
    store: CheckpointStore,
    start_date: date,
    run_date: date | None,
) -> list[SiteOutcome]:
    """Per-site rows. A site that stopped before reading its first day (site info refused,
    run stopped earlier) has no cursor in its report: its checkpoint is read from the files
    and its days behind counted to the last closed day in UTC, as `status` does."""
    rows: list[SiteOutcome] = []
    for site in reports:
        cursor, last, unreadable = site.cursor, site.last_closed, False
        if cursor is None:
            try:
                cursor = store.load(site.idsite)
            except MatomoKafkaError:
                unreadable = True
        if last is None:
            last = last_closed_day(UTC, run_date)
        next_day = cursor.day if cursor is not None else start_date
        behind = None if unreadable else days_behind(next_day, last)
        rows.append(
            SiteOutcome(
                idsite=site.idsite,
                outcome=site.status,
                visits_sent=site.visits,
                pages=site.pages,
                days_completed=site.days_done,
                seconds=site.seconds,
                checkpoint=cursor,
                last_closed_day=last,
                days_behind=behind,
                error=site.error,
                error_kind=site.error_kind,
                rescanned_days=site.rescanned_days,
                rescan_new=site.rescan_new,
                rescan_changed=site.rescan_changed,
                pages_split=site.pages_split,
                tombstones=site.rescan_erased,
                erase_withheld=site.erase_withheld,
                purged_days=list(site.purged_days),
            )
        )
    return rows


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Temp file in the same directory, fsync, rename: readers never see half a file."""
    data = orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n"
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
