"""`matomo-kafka check`: the configuration, Matomo (version, sites, rights) and Kafka (topic)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from matomo_kafka.cli.common import (
    ParmDir,
    Sites,
    _redactor,
    app,
    fail,
    load,
    matomo_client,
    parse_sites,
    resolve_sites,
    stdout,
)
from matomo_kafka.errors import EXIT_FAILED, MatomoKafkaError
from matomo_kafka.ops.terminal import plain
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.days import last_closed_day, site_timezone
from matomo_kafka.source.sites import LOG_DISABLED_MESSAGE


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
