"""`matomo-kafka follow`: a long-running service that brings each site up to now minus a visit's
length and the settle delay every MATOMO_FOLLOW_INTERVAL (the loop: follow.py). With
MATOMO_ID_SITE=all the sites are listed at start, then again before each cycle (follow.py)."""

from __future__ import annotations

import threading
from typing import Literal

from matomo_kafka import __version__
from matomo_kafka.cli.common import (
    DEFAULT_PARM_DIR,
    AcceptNewTopic,
    ParmDir,
    Quiet,
    Shard,
    Sites,
    Verbose,
    app,
    checkpoint_store,
    fail,
    load,
    log,
    matomo_client,
    parse_shard_option,
    parse_sites,
    resolve_sites,
    stop_on_signals,
    tool_clock,
)
from matomo_kafka.clock import Clock
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import MatomoAuthError, MatomoKafkaError
from matomo_kafka.follow import Follower, Listing, backoff, stale_after
from matomo_kafka.ops.follow_metrics import FollowMetrics
from matomo_kafka.ops.health import Health, HealthServer
from matomo_kafka.ops.metrics import textfile_path
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient
from matomo_kafka.source.sites import Shard as ShardSpec
from matomo_kafka.state.checkpoint_files import CheckpointLock, CheckpointStore


@app.command()
def follow(
    parm_dir: ParmDir = DEFAULT_PARM_DIR,
    sites: Sites = None,
    shard: Shard = None,
    accept_new_topic: AcceptNewTopic = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Runs as a service: every MATOMO_FOLLOW_INTERVAL, each site's visits that ended
    (MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES ago) into Kafka; SIGTERM stops it (exit 0)."""
    shard_spec = parse_shard_option(shard)
    settings = load(parm_dir, verbose, quiet, warn=True)
    clock = tool_clock()
    selection = parse_sites(sites, settings)
    if settings.METRICS_PUSHGATEWAY:
        log.warning(
            "METRICS_PUSHGATEWAY is for batch runs: follow serves its metrics at /metrics on "
            "MATOMO_HEALTH_PORT (and METRICS_TEXTFILE), and pushes nothing"
        )
    stop = threading.Event()
    stop_on_signals(stop, "exit 0")
    store = checkpoint_store(settings)
    with matomo_client(settings) as matomo:
        site_ids = _resolve(selection, matomo, stop, settings.MATOMO_FOLLOW_INTERVAL)
        if site_ids is None:
            log.info("follow: stopped before the first cycle")
            return
        if shard_spec is not None:
            site_ids = shard_spec.select(site_ids)
        relisted = selection == "all"
        log.info(
            "matomo-kafka %s follow: sites %s%s%s, topic %s, cluster %s, every %gs up to now - "
            "%ds (MATOMO_VISIT_LENGTH + MATOMO_SETTLE_MINUTES)",
            __version__, ",".join(map(str, site_ids)) or "none",
            f" (shard {shard_spec})" if shard_spec else "",
            " (all: listed again before each cycle)" if relisted else "", settings.KAFKA_TOPIC,
            settings.CLUSTERID, settings.MATOMO_FOLLOW_INTERVAL, settings.follow_margin_seconds,
        )  # fmt: skip
        if not site_ids:
            log.warning("shard %s has no site of %s: nothing to do%s", shard_spec, selection,
                        " until Matomo lists one" if relisted else "")  # fmt: skip
        textfile = settings.METRICS_TEXTFILE
        if textfile is not None:
            textfile = textfile_path(textfile, None if shard_spec is None else str(shard_spec))
        try:
            with store.lock(site_ids) as lock:  # for the service's life: a run refuses (exit 3)
                listing = _listing(relisted, shard_spec, lock, site_ids)
                fatal = _serve(settings, matomo, store, site_ids, stop, clock, textfile, listing,
                               accept_new_topic)  # fmt: skip
        except MatomoKafkaError as exc:  # the lock (exit 3), the health port (exit 2)
            fail(str(exc), exc.exit_code)
    if fatal is not None:
        fail(str(fatal), fatal.exit_code)
    log.info("follow: stopped; every site checkpointed after its last acknowledged page")


def _resolve(
    selection: tuple[int, ...] | Literal["all"],
    matomo: MatomoClient,
    stop: threading.Event,
    interval: float,
) -> tuple[int, ...] | None:
    """The sites (MATOMO_ID_SITE=all: Matomo lists them), asked again with back-off while
    Matomo cannot answer: a service waits for it. A refused token stops at once (exit 1);
    None: stopped by a signal meanwhile."""
    failures = 0
    while not stop.is_set():
        try:
            return resolve_sites(selection, matomo)
        except MatomoAuthError as exc:
            fail(str(exc), exc.exit_code)
        except MatomoKafkaError as exc:
            failures += 1
            wait = backoff(interval, failures)
            log.warning("follow: cannot list the sites (%s); tried again in %.0fs", exc, wait)
            stop.wait(wait)
    return None


def _listing(
    relisted: bool, shard: ShardSpec | None, lock: CheckpointLock, site_ids: tuple[int, ...]
) -> Listing | None:
    """MATOMO_ID_SITE=all: what the follower needs to list the sites again (None: an
    explicit list, followed as it is)."""
    return Listing(shard, lock, set(site_ids)) if relisted else None


def _serve(
    settings: Settings,
    matomo: MatomoClient,
    store: CheckpointStore,
    site_ids: tuple[int, ...],
    stop: threading.Event,
    clock: Clock,
    textfile: str | None,
    listing: Listing | None,
    accept_new_topic: bool = False,
) -> MatomoKafkaError | None:
    """The health endpoint and the cycles, under the sites' locks, until a signal (None) or
    a failure no retry can fix (returned)."""
    health = Health(stale_after(settings))
    metrics = FollowMetrics(clock, textfile)
    metrics.watch(lambda: health.ready()[0], matomo.gate)
    server = None
    if settings.MATOMO_HEALTH_PORT is not None:
        server = HealthServer(health, metrics.registry, settings.MATOMO_HEALTH_PORT,
                              settings.MATOMO_HEALTH_BIND).start()  # fmt: skip
    sink = KafkaSink.from_settings(settings)
    follower: Follower | None = None
    try:
        follower = Follower(settings, matomo, sink, store, site_ids, stop, clock, health, metrics,
                            listing)  # fmt: skip
        follower.topic_guard.accept_new = accept_new_topic
        return follower.run()
    finally:
        if follower is not None:
            follower.close()
        sink.close()
        if server is not None:
            server.close()
