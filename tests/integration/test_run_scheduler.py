"""The page scheduler in a real run (simulator over HTTP, real broker): Matomo slots go to
whatever site has pages to read, never more requests in flight than MATOMO_MAX_CONCURRENCY,
few requests wasted, and every visit delivered once per run.

Requests in flight are counted by the HTTP transport the Matomo client uses, so the counts
are what the server would see."""

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
from matomo_kafka.model import Cursor
from matomo_kafka.pipeline import Pipeline
from matomo_kafka.simulator import MatomoSimulator, SimSite
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.source.client import MatomoClient, RequestGate
from matomo_kafka.state.checkpoint_files import CheckpointStore
from support.kafka import read_records, read_topic
from support.parm import TOKEN, base_values, write_parm

pytestmark = [pytest.mark.kafka, pytest.mark.simulator]

LIMIT = 10
BIG_DAY = "2024-03-01"


class CountingTransport(httpx.HTTPTransport):
    """Counts Live requests in flight: in all, and per (site, day)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.methods: Counter[str] = Counter()
        self.total = self.peak_total = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = {k: v[0] for k, v in parse_qs(request.read().decode()).items()}
        with self.lock:
            self.methods[params.get("method", "")] += 1
        if params.get("method") != "Live.getLastVisitsDetails":
            return super().handle_request(request)
        key = (params["idSite"], params["date"])
        with self.lock:
            self.requests[key] += 1
            self.in_flight[key] += 1
            self.total += 1
            self.peak[key] = max(self.peak[key], self.in_flight[key])
            self.peak_total = max(self.peak_total, self.total)
        try:
            response = super().handle_request(request)
            response.read()
            return response
        finally:
            with self.lock:
                self.in_flight[key] -= 1
                self.total -= 1


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_big_day_gets_every_slot_once_the_small_sites_are_done(
    delivery: str, tmp_path: Path, topic: str, sim_factory: Callable[..., MatomoSimulator]
) -> None:
    """Site 1 has one day of 12 full pages, site 2 two small days: with 2 slots, site 1's big
    day is read 2 pages at a time (the per-site workers of earlier versions read it one page
    after the other once site 2 was done), and at most 3 requests past its end are wasted."""
    sites = [
        SimSite(idsite=1, name="big", timezone="UTC", default_visits=0,
                visits={BIG_DAY: 12 * LIMIT + 3, "2024-03-02": 4}),
        SimSite(idsite=2, name="small", timezone="Europe/Paris", default_visits=0,
                visits={BIG_DAY: 3, "2024-03-02": 5}),
    ]  # fmt: skip
    simulator = sim_factory(sites, latency_s=0.1)
    values = base_values(tmp_path, simulator.url, topic, MATOMO_MAX_CONCURRENCY="2",
                         DELIVERY=delivery, KAFKA_STATE_TOPIC=f"{topic}.state")  # fmt: skip
    settings = load_settings(write_parm(tmp_path / "parm", **values), environ={})
    counting = CountingTransport()
    store = CheckpointStore(settings.FILE_PATH_FILTERDATE, settings.FILE_PATH_LAST_OFFSET)
    sink = KafkaSink.from_settings(settings)
    try:
        sink.check_topic()
        with MatomoClient(simulator.url, TOKEN, gate=RequestGate(2), transport=counting) as api:
            pipeline = Pipeline(settings, api, sink, store, run_date=date(2024, 3, 3))
            report = pipeline.run((1, 2))
    finally:
        sink.close()
    assert report.ok, [(s.idsite, s.status, s.error) for s in report.sites]
    assert counting.peak_total <= 2
    assert pipeline.peak_buffered <= 4 * 2  # pages fetched and not yet delivered: 4 x the slots
    assert counting.peak[("1", BIG_DAY)] == 2
    # 12 full pages, the short one, and at most 2 x 2 - 1 read ahead past the day's end.
    assert counting.requests[("1", BIG_DAY)] <= 13 + 3
    for idsite in (1, 2):
        assert store.load(idsite) == Cursor(date(2024, 3, 3), 0)
    keys = (
        [key for key, _ in read_records(topic)]
        if delivery == "exactly_once"
        else [record.key for record in read_topic(topic)]
    )
    expected = {f"{site.idsite}:{visit['idVisit']}" for site in sites
                for day in (BIG_DAY, "2024-03-02")
                for visit in simulator.expected_visits(site.idsite, day)}  # fmt: skip
    assert Counter(keys) == Counter(expected)  # every visit, once


def test_many_sites_keep_memory_bounded_and_every_slot_busy(
    tmp_path: Path, topic: str, sim_factory: Callable[..., MatomoSimulator]
) -> None:
    """Sixteen sites of four days of 1-3 pages, 4 slots: pages fetched and not yet delivered
    stay under 4 x the slots (sites open at once each asking for 4 requests ahead would make
    32), and the 4 slots are used."""
    days = {f"2024-03-0{d}": (d % 3) * LIMIT + 5 for d in range(1, 5)}
    sites = [
        SimSite(idsite=i, name=f"s{i}", timezone="UTC", default_visits=0, visits=days)
        for i in range(1, 17)
    ]
    simulator = sim_factory(sites, latency_s=0.02)
    values = base_values(tmp_path, simulator.url, topic, MATOMO_MAX_CONCURRENCY="4",
                         MATOMO_ID_SITE=",".join(str(i) for i in range(1, 17)))  # fmt: skip
    settings = load_settings(write_parm(tmp_path / "parm", **values), environ={})
    counting = CountingTransport()
    store = CheckpointStore(settings.FILE_PATH_FILTERDATE, settings.FILE_PATH_LAST_OFFSET)
    sink = KafkaSink.from_settings(settings)
    try:
        sink.check_topic()
        with MatomoClient(simulator.url, TOKEN, gate=RequestGate(4), transport=counting) as api:
            pipeline = Pipeline(settings, api, sink, store, run_date=date(2024, 3, 5))
            report = pipeline.run(tuple(range(1, 17)))
    finally:
        sink.close()
    assert report.ok, [(s.idsite, s.status, s.error) for s in report.sites]
    assert 0 < pipeline.peak_buffered <= 4 * 4
    assert counting.peak_total == 4
    # Besides Live pages: the version, every site's timezone in one request, and the 16 sites'
    # dimensions and goals in one bulk request (up to 50 sites a request).
    assert {m: n for m, n in counting.methods.items() if m != "Live.getLastVisitsDetails"} == {
        "API.getMatomoVersion": 1,
        "SitesManager.getSitesWithAtLeastViewAccess": 1,
        "API.getBulkRequest": 1,
    }
    assert len(read_topic(topic)) == 16 * sum(days.values())
