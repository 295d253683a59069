"""A Matomo 5.0.2 (or 4.15.1) HTTP API simulator for tests, benchmarks and the demo: `config`
(sites, faults, settings), `visits` (deterministic visits), `api` (the API's methods and
errors), `privacy` (PrivacyManager: erasure, anonymisation, purge), `server` (HTTP and
HTTPS). See `api` for what it reproduces of a real Matomo."""

from matomo_kafka.simulator.api import MatomoSimulator, run_simulator
from matomo_kafka.simulator.config import (
    MATOMO_VERSION,
    MATOMO_VERSIONS,
    Fault,
    FaultKind,
    SimConfig,
    SimSite,
)
from matomo_kafka.simulator.server import tls_context

__all__ = [
    "MATOMO_VERSION",
    "MATOMO_VERSIONS",
    "Fault",
    "FaultKind",
    "MatomoSimulator",
    "SimConfig",
    "SimSite",
    "run_simulator",
    "tls_context",
]
