"""`matomo-kafka status`: each site's checkpoint and the days left, without any network call."""

from __future__ import annotations

from datetime import UTC

from rich.table import Table

from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    ParmDir,
    RunDate,
    Sites,
    _redactor,
    app,
    checkpoint_store,
    fail,
    load,
    parse_run_date,
    parse_sites,
    stdout,
)
from matomo_kafka.errors import EXIT_FAILED, MatomoKafkaError
from matomo_kafka.ops.terminal import plain
from matomo_kafka.source.days import days_behind, last_closed_day
from matomo_kafka.source.sites import sites_with_checkpoints


@app.command()
def status(
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
    run_date: RunDate = None,
    sites: Sites = None,
) -> None:
    """Shows each site's checkpoint (day, offset) and the days left, without any network call."""
    day = parse_run_date(run_date)
    settings = load(parm_dir, quiet=True)
    selection = parse_sites(sites, settings)  # --sites: a backfill outside MATOMO_ID_SITE
    store = checkpoint_store(settings)
    last_day = last_closed_day(UTC, day)
    table = Table(title=f"checkpoints (days behind counted to {last_day}, UTC)",
                  title_justify="left")  # fmt: skip
    for column in ("site", "day", "offset", "behind", "files"):
        table.add_column(column)
    broken = 0
    site_ids = selection
    if site_ids == "all":  # no network call here: the sites that have a checkpoint
        site_ids = sites_with_checkpoints(store)
        named = "MATOMO_ID_SITE=all" if sites is None else "--sites all"
        table.caption = f"{named}: the {len(site_ids)} site(s) with a checkpoint file"
    for idsite in site_ids:
        try:
            cursor = store.load(idsite)
        except MatomoKafkaError as exc:
            broken += 1
            table.add_row(str(idsite), "unreadable", "-", "-", plain(_redactor(str(exc))))
            continue
        files = plain(f"{store.date_path(idsite)}, {store.offset_path(idsite)}")
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
