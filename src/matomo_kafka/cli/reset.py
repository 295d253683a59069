"""`matomo-kafka reset`: moves a site's checkpoint on purpose."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Annotated

import typer

from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    ParmDir,
    SiteId,
    _redactor,
    app,
    checkpoint_store,
    fail,
    load,
    log,
    parse_day,
    say,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import EXIT_CONFIG, MatomoKafkaError
from matomo_kafka.ops.reset import apply_reset, describe, plan_reset, write_checkpoint


def _note_unlisted_site(settings: Settings, idsite: int) -> None:
    """A site outside an explicit MATOMO_ID_SITE is accepted (a backfill runs with `run
    --sites N` while the daily run keeps N out), but said: it may be a typo."""
    if settings.MATOMO_ID_SITE != "all" and idsite not in settings.MATOMO_ID_SITE:
        listed = ",".join(map(str, settings.MATOMO_ID_SITE))
        say(f"note: site {idsite} is not in MATOMO_ID_SITE ({listed}): only a run with "
            f"--sites {idsite} (a backfill) reads it")  # fmt: skip


@app.command()
def reset(
    site: SiteId,
    day_text: Annotated[
        str, typer.Option("--date", help="New checkpoint day (YYYY-MM-DD), offset 0.")
    ],
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Moves a site's checkpoint on purpose to (DATE, offset 0): the next run reads from DATE.

    Refused (exit 3) while a run holds the site's lock; asks for confirmation unless --yes
    (without a terminal and without --yes it refuses, exit 2)."""
    new_day = parse_day("--date", day_text)
    settings = load(parm_dir, quiet=True)
    _note_unlisted_site(settings, site)
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
            move = f"checkpoint {old} -> {new}"
            if not yes and not sys.stdin.isatty():  # refused before saying anything moved
                fail(f"no terminal to confirm the reset: pass --yes (site {site}: {move} not "
                     "done, checkpoint unchanged)", EXIT_CONFIG)  # fmt: skip
            say(f"site {site}: {move}" if yes else f"site {site}: would move the {move}")
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
                if not typer.confirm("Move the checkpoint?", default=False):
                    fail("reset cancelled, checkpoint unchanged", EXIT_CONFIG)
                say(f"site {site}: {move}")
            if settings.exactly_once:  # the state topic is what runs start from
                write_checkpoint(settings, site, plan.new)
                say(f"site {site}: checkpoint written to the state topic {settings.state_topic}")
            apply_reset(store, plan)
            log.warning("site %d: checkpoint reset from %s to %s", site, old, new)
            say(f"site {site}: checkpoint moved ({store.date_path(site)}, "
                f"{store.offset_path(site)})")  # fmt: skip
    except MatomoKafkaError as exc:
        fail(str(exc), exc.exit_code)
