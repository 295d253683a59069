"""`matomo-kafka check`: the configuration, Matomo (version, sites, rights) and Kafka (topic)."""

from __future__ import annotations

from datetime import date
from typing import Protocol

from rich.table import Table

from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    ParmDir,
    Sites,
    _redactor,
    app,
    fail,
    load,
    matomo_client,
    parse_sites,
    resolve_sites,
    sites_named_by,
    stdout,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import EXIT_FAILED, MatomoKafkaError
from matomo_kafka.ops.terminal import plain
from matomo_kafka.pipeline import not_viewable
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.days import last_closed_day, site_timezone
from matomo_kafka.source.responses import Visit
from matomo_kafka.source.sites import LOG_DISABLED_MESSAGE
from matomo_kafka.state.topic_id import (
    read_topic_id,
    recorded_topic_id,
    topic_changed,
    topic_id_path,
)
from matomo_kafka.transform.visits import (
    SiteTransform,
    parse_dimensions,
    parse_goals,
    unmatched_columns,
)


class _Record(Protocol):
    """Adds a row to check's table: `result` says ok or FAIL from `ok` unless given."""

    def __call__(self, name: str, ok: bool, detail: str, result: str | None = None) -> None: ...


#: Visits of the last closed day `check` tries COLONNE_ANNOMYSE on (one Live page).
COLUMN_SAMPLE = 100


def _columns(
    settings: Settings, matomo: MatomoClient, idsite: int, visits: list[Visit], day: date
) -> tuple[str, str]:
    """(detail, result) of COLONNE_ANNOMYSE against real visits of the site: each entry
    must reach a field of at least one (a typo, a renamed dimension, a scope left out
    would pseudonymise nothing)."""
    if not visits:
        return f"no visit on {day} to try COLONNE_ANNOMYSE on", "unknown"
    transform = SiteTransform.build(
        idsite,
        parse_dimensions(matomo.custom_dimensions(idsite), idsite),
        parse_goals(matomo.goals(idsite), idsite),
        settings.COLONNE_ANNOMYSE,
        "check",  # the pseudonyms are thrown away: only which fields exist matters
    )
    for visit in visits:
        transform.apply(visit)
    unmatched = unmatched_columns([(transform, len(visits))])
    lines = list(transform.notes) + [entry.line for entry in unmatched]
    if lines:
        return "; ".join(line.removeprefix("COLONNE_ANNOMYSE: ") for line in lines), "warn"
    return f"every COLONNE_ANNOMYSE entry found in {len(visits)} visit(s) of {day}", "ok"


@app.command()
def check(
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
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
        table.add_row(name, result or ("ok" if ok else "FAIL"), plain(_redactor(detail)))

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
        viewable = _viewable(matomo, site_ids)
        for idsite in site_ids:
            if viewable is not None and idsite not in viewable:
                record(f"site {idsite}", False, str(not_viewable(idsite, sites_named_by(sites))))
                continue
            _check_site(settings, matomo, idsite, record)
    _check_kafka(settings, record)
    stdout.print(table)
    if failures:
        fail(f"{failures} check(s) failed", EXIT_FAILED)


def _viewable(matomo: MatomoClient, site_ids: tuple[int, ...]) -> set[int] | None:
    """The sites the token can view, in one request; None when there is no site to check or
    Matomo does not say (each site's own request then says what is wrong)."""
    if not site_ids:
        return None
    try:
        return set(matomo.sites_view_info())
    except MatomoKafkaError:
        return None


def _check_site(settings: Settings, matomo: MatomoClient, idsite: int, record: _Record) -> None:
    """A site's timezone, its visits log read (one page of its last closed day), and
    COLONNE_ANNOMYSE tried on those visits; a disabled log is what a run skips, not a
    failure, unless MATOMO_STRICT_SITES."""
    try:
        info = matomo.site(idsite)
        tz = site_timezone(info.timezone)
        yesterday = last_closed_day(tz, None)
        visits = matomo.visits_page(idsite, yesterday, COLUMN_SAMPLE, 0)
        detail = f"{info.name!r}, {info.timezone}, visits log readable"
        record(f"site {idsite}", True, detail)
        if settings.COLONNE_ANNOMYSE:
            found = _columns(settings, matomo, idsite, visits, yesterday)
            record(f"site {idsite} columns", True, *found)
    except (MatomoKafkaError, ValueError) as exc:
        if LOG_DISABLED_MESSAGE in str(exc) and not settings.MATOMO_STRICT_SITES:
            record(f"site {idsite}", True, f"run skips it: {exc}", "disabled")
        else:
            record(f"site {idsite}", False, str(exc))


def _check_kafka(settings: Settings, record: _Record) -> None:
    """The topic (its partitions) and its id against the one beside the checkpoints."""
    sink = KafkaSink.from_settings(settings)
    try:
        partitions = sink.check_topic()
        record("kafka", True, f"topic {settings.KAFKA_TOPIC} ({partitions} partitions)")
        _check_topic_id(settings, record)
    except MatomoKafkaError as exc:
        record("kafka", False, str(exc))


def _check_topic_id(settings: Settings, record: _Record) -> None:
    """The topic's id against the one recorded beside the checkpoints (nothing written)."""
    prefix, topic = settings.FILE_PATH_FILTERDATE, settings.KAFKA_TOPIC
    recorded, current = recorded_topic_id(prefix, topic), read_topic_id(settings)
    if current is None:
        record("topic id", True, "the broker gives none: not compared")
    elif recorded is None:
        record("topic id", True, f"{current}, recorded by the next run that checkpoints")
    elif recorded != current:
        problem = topic_changed(topic, topic_id_path(prefix, topic), recorded, current)
        record("topic id", False, str(problem))
    else:
        record("topic id", True, f"{current}, the one the checkpoints were written against")
