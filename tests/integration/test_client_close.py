"""A Matomo client closed while a request is in flight on another thread (the run failed or
was stopped) ends that request quietly: no retry, no warning, no sign of strain, so nothing is
printed after the run's last line."""

from __future__ import annotations

import logging
import threading
import time
from datetime import date

import pytest

from matomo_kafka.errors import MatomoError, TransientMatomoError
from matomo_kafka.simulator import Fault, MatomoSimulator, SimConfig, SimSite
from matomo_kafka.source.client import MatomoClient, RetryPolicy

pytestmark = [pytest.mark.simulator]

TOKEN = "close-token-0a1b2c3d4e5f"


def test_a_request_in_flight_when_the_client_closes_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = SimSite(idsite=1, name="s", timezone="UTC", default_visits=5, visits={})
    slow = Fault(kind="delay", method="Live.getLastVisitsDetails", delay_s=1.0, times=-1)
    config = SimConfig(token=TOKEN, sites=[site], faults=[slow])
    strains: list[str] = []
    outcome: list[BaseException] = []
    with MatomoSimulator(config).start() as sim:
        client = MatomoClient(sim.url, TOKEN, retry=RetryPolicy(5, 0.01, 0.05))
        client.on_strain = strains.append

        def read() -> None:
            try:
                client.visits_page(1, date(2024, 3, 1), 10, 0)
            except BaseException as exc:
                outcome.append(exc)

        caplog.set_level(logging.INFO, logger="matomo_kafka")
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)  # the request waits for the simulator's delay
        client.close()
        reader.join(10)
    assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], MatomoError), outcome
    assert not isinstance(outcome[0], TransientMatomoError)
    assert client.retries_done == 0 and strains == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
