"""A Matomo 5.0.2 (or 4.15.1) HTTP API simulator for tests, benchmarks and the demo: `config`
(sites, faults, settings), `matomo` (MatomoSimulator: its state, clock and control from
Python; its docstring says what it reproduces of a real Matomo), `api` (the API's front door:
auth, faults, the method table, bulk requests), `modules/` (one file per Matomo API module:
Live, VisitsSummary, SitesManager, CustomDimensions, Goals, PrivacyManager), `errors`
(Matomo's failure answers), `days` (which visits of a day are served), `visits/`
(deterministic visits, by what a visit is made of), `load` (workers and stats), `server`
(HTTP and HTTPS)."""

from matomo_kafka.simulator.config import (
    MATOMO_VERSION,
    MATOMO_VERSIONS,
    Fault,
    FaultKind,
    SimConfig,
    SimSite,
)
from matomo_kafka.simulator.matomo import MatomoSimulator, run_simulator
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
