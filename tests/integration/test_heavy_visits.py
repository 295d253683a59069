"""Heavy visits (a single-page app's hundred actions a visit) in a real run (simulator over
HTTP, real broker): pages ask for fewer visits, so what is fetched and not yet delivered
stays under MATOMO_MAX_BUFFER_MB; every visit is delivered once, and the checkpoints are the
seed's files, resumed from an offset the seed wrote."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from matomo_kafka.config.load import load_settings
from matomo_kafka.pipeline import Pipeline
from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient, RequestGate
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.kafka import read_topic
from support.parm import TOKEN, base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

DAY_1, DAY_2 = "2024-03-01", "2024-03-02"
BUFFER_MB = 8  # pages of an eighth of it: 1 MB, fewer than the floor of 50 visits of 48 KB
RESUMED_AT = 120  # the seed's checkpoint of site 1: visits of DAY_1 already sent


class LimitsSeen(httpx.HTTPTransport):
    """Records the filter_limit of each Live request, in the order they were sent."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.limits: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = {k: v[0] for k, v in parse_qs(request.read().decode()).items()}
        if params.get("method") == "Live.getLastVisitsDetails":
            with self.lock:
                self.limits.append(int(params["filter_limit"]))
        return super().handle_request(request)


def test_heavy_visits_come_in_small_pages_every_one_once_with_seed_checkpoints(
    tmp_path: Path, topic: str, sim_factory: Callable[..., MatomoSimulator]
) -> None:
    sites = [
        SimSite(idsite=1, name="spa", timezone="UTC", visits={DAY_1: 260, DAY_2: 30},
                actions_per_visit=101),
        SimSite(idsite=2, name="bot", timezone="Europe/Paris", visits={DAY_1: 70},
                actions_per_visit=101),
    ]  # fmt: skip
    simulator = sim_factory(sites)
    values = base_values(tmp_path, simulator.url, topic, MATOMO_FILTER_LIMIT="1000",
                         MATOMO_MAX_CONCURRENCY="2", MATOMO_MAX_BUFFER_MB=str(BUFFER_MB),
                         MATOMO_TIMEOUT="30")  # fmt: skip
    settings = load_settings(write_parm(tmp_path / "parm", **values), environ={})
    store = CheckpointStore(settings.FILE_PATH_FILTERDATE, settings.FILE_PATH_LAST_OFFSET)
    # Where producerMatomo left site 1: its two plain files, no boundary.
    store.date_path(1).parent.mkdir(parents=True, exist_ok=True)
    store.date_path(1).write_text(DAY_1)
    store.offset_path(1).write_text(str(RESUMED_AT))
    seen = LimitsSeen()
    sink = KafkaSink.from_settings(settings)
    try:
        sink.check_topic()
        with MatomoClient(simulator.url, TOKEN, gate=RequestGate(2), transport=seen) as api:
            pipeline = Pipeline(settings, api, sink, store, run_date=date(2024, 3, 3))
            report = pipeline.run((1, 2))
    finally:
        sink.close()
    assert report.ok, [(s.idsite, s.status, s.error) for s in report.sites]
    # A visit is ~48 KB: pages of the floor's 50 visits (2.4 MB), never the configured 1000.
    assert seen.limits and set(seen.limits) == {50}, seen.limits
    assert pipeline.peak_buffered_bytes <= BUFFER_MB * 2**20 + 2 * 50 * 60_000
    expected = Counter(
        [f"1:{v['idVisit']}" for v in simulator.expected_visits(1, DAY_1)[RESUMED_AT:]]
        + [f"1:{v['idVisit']}" for v in simulator.expected_visits(1, DAY_2)]
        + [f"2:{v['idVisit']}" for v in simulator.expected_visits(2, DAY_1)]
    )
    assert Counter(record.key for record in read_topic(topic)) == expected  # each one once
    for idsite in (1, 2):  # the seed's format: the next day, offset 0, as plain text
        assert store.date_path(idsite).read_text().strip() == "2024-03-03"
        assert store.offset_path(idsite).read_text().strip() == "0"
