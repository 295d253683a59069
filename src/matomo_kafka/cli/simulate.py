"""`matomo-kafka simulate`: serves the Matomo simulator (demos and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from matomo_kafka.cli.common import app, fail
from matomo_kafka.errors import EXIT_CONFIG

if TYPE_CHECKING:
    from matomo_kafka.simulator import SimConfig


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: Annotated[
        Path | None, typer.Option("--config", help="Simulator JSON (sites, visits, faults).")
    ] = None,
    token: Annotated[str, typer.Option(help="token_auth the simulator accepts.")] = "demo-token",
    sites: Annotated[
        str, typer.Option("--sites", help="id:timezone list, e.g. 1:UTC,2:Europe/Paris.")
    ] = "1:UTC,2:Europe/Paris",
    visits_per_day: Annotated[int, typer.Option(help="Visits per site and day.")] = 50,
    latency_ms: Annotated[int, typer.Option(help="Added latency per Live page.")] = 0,
    basic_auth: Annotated[
        str | None, typer.Option("--basic-auth", help="user:password a gateway would require.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")
    ] = None,
    matomo_version: Annotated[
        str,
        typer.Option(
            "--matomo-version", help="5.0.2 or 4.15.1: the version whose refusals to reproduce."
        ),
    ] = "5.0.2",
) -> None:
    """Serves a deterministic Matomo API simulator (demos and tests), over HTTP or HTTPS."""
    # Imported here: the simulator is big, and only this command needs it.
    from matomo_kafka.simulator import SimConfig, run_simulator

    tls = _tls_files(tls_cert, tls_key)
    if config is not None:
        try:
            sim_config = SimConfig.from_json(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"simulator config {config}: {exc}", EXIT_CONFIG)
    else:
        sim_config = _sim_config(token, sites, visits_per_day, latency_ms, basic_auth,
                                 matomo_version)  # fmt: skip
    scheme = "https" if tls else "http"
    print(f"matomo simulator on {scheme}://{host}:{port}/index.php", flush=True)
    run_simulator(sim_config, host, port, tls)


def _tls_files(tls_cert: Path | None, tls_key: Path | None) -> tuple[str, str] | None:
    """--tls-cert and --tls-key, checked by loading them (exit 2 if they cannot serve)."""
    import ssl

    from matomo_kafka.simulator import tls_context

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together", EXIT_CONFIG)
    if tls_cert is None or tls_key is None:
        return None
    tls = (str(tls_cert), str(tls_key))
    try:
        tls_context(*tls)
    except (OSError, ssl.SSLError) as exc:
        fail(f"--tls-cert/--tls-key cannot be used: {exc}", EXIT_CONFIG)
    return tls


def _sim_config(
    token: str,
    sites: str,
    visits_per_day: int,
    latency_ms: int,
    basic_auth: str | None,
    matomo_version: str,
) -> SimConfig:
    """The simulator's configuration from the command line (no --config)."""
    from matomo_kafka.simulator import MATOMO_VERSIONS, SimConfig, SimSite

    sim_sites = []
    for part in sites.split(","):
        idsite, _, tz = part.strip().partition(":")
        if not idsite.isdigit():
            fail(f"--sites {sites!r}: expected id:timezone pairs", EXIT_CONFIG)
        sim_sites.append(
            SimSite(idsite=int(idsite), name=f"Demo site {idsite}", timezone=tz or "UTC",
                    default_visits=visits_per_day, visits={})
        )  # fmt: skip
    gateway = None
    if basic_auth is not None:
        user, _, password = basic_auth.partition(":")
        gateway = (user, password)
    if matomo_version not in MATOMO_VERSIONS:
        fail(f"--matomo-version {matomo_version!r}: expected one of "
             f"{', '.join(MATOMO_VERSIONS)}", EXIT_CONFIG)  # fmt: skip
    return SimConfig(
        token=token, sites=sim_sites, latency_s=latency_ms / 1000, basic_auth=gateway,
        matomo_version=matomo_version,
    )  # fmt: skip
