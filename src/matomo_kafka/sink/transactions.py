"""DELIVERY=exactly_once: one process's transactional producers and its claim on its sites.

Kafka fences by transactional id only. Versions before this one gave every site its own id
(a producer, its threads and connections, and an `init_transactions` per site and run, or per
site and cycle of `follow`). Here, as in Kafka Connect's exactly-once sources (KIP-618), a
process has a few producers whatever its number of sites: MATOMO_MAX_CONCURRENCY of them,
ids `matomo-kafka.<KAFKA_TOPIC>.pool-<token>.<k>`, the token new at each start (`Owner`).
Which ids may write a site's checkpoint is recorded in the state topic (a claim, key
`claim.<idsite>`), and a site changes owner only this way (`Transactions.claim`):

1. `init_transactions` of the topic's one claims id (`matomo-kafka.<KAFKA_TOPIC>.claims`):
   claims are serialised by it; a claim still open elsewhere is ended (committed or aborted)
   before this returns, and any other claimer's later commit fails as fenced;
2. the state topic is read to its end: every claim committed before step 1;
3. the ids of each site's latest owner are fenced (`init_transactions` of each, then
   dropped): Kafka ends that owner's transaction in flight and refuses its later ones. A
   site whose latest checkpoint a version before claims wrote has its own id fenced instead;
4. one transaction of the claims id writes a claim for every site (fails if another claimer
   started meanwhile: steps 1 to 4 are then tried again);
5. the state topic is read to its end again: each site's checkpoint, as its last owner
   committed it, is where the site resumes.

Why a zombie cannot write then: claim commits are totally ordered (step 1 and 4), each
claimer read the previous committed claim after its step 1 and fenced that claim's owner
before committing its own (by induction every owner but the latest is fenced), and a
process never initialises its ids again once they could have been fenced (a new start has a
new token). docs/exactly-once.md says it at length.

A process claims a site once in its life (`follow`: at start, and when a new site joins);
its cursors are kept here between cycles, so a cycle that sends nothing makes no Kafka call.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from matomo_kafka.config.kafka_clients import (
    claims_transactional_id,
    pool_prefix,
    transactional_id,
)
from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import FencedError, KafkaDeliveryError, MatomoKafkaError
from matomo_kafka.model import Cursor
from matomo_kafka.sink.producer import TransactionalSink
from matomo_kafka.state.state_topic import (
    Owner,
    StateReader,
    claim_key,
    encode_claim,
    ensure_state_topic,
)

log = logging.getLogger(__name__)

#: Seconds the state topic may take to be read to its end before the owners of the sites
#: claimed are fenced on what could be read (their open transaction ends with it).
STATE_PATIENCE = 0.5

#: Claims tried in a row while other instances claim at the same time.
CLAIM_ATTEMPTS = 8

#: Producers fencing ids at once.
FENCE_WORKERS = 32


class Transactions:
    """The process's transactional producers (a pool of `producers`), the state topic's
    reader, the sites it claimed and where each stands. Thread-safe for deliveries; `claim`
    runs on the pipeline's thread. `broken` once a transaction failed: `follow` starts over
    with a new one (new ids, every site claimed again, fencing these)."""

    def __init__(self, settings: Settings, by: str, producers: int | None = None) -> None:
        self.settings = settings
        self.by = by
        count = producers or settings.MATOMO_MAX_CONCURRENCY
        self.owner = Owner(pool_prefix(settings.KAFKA_TOPIC, uuid.uuid4().hex[:12]), count)
        self.state = StateReader(settings, ensure_state_topic(settings))
        self.broken = False
        self.claimed_at = float("-inf")  # monotonic: the end of the last claim's fencing
        self._claimed: set[int] = set()
        self._fenced: set[str] = set()  # owner prefixes and site ids fenced already
        self._pool: list[TransactionalSink] = []
        self._starting: Future[None] | None = None  # the pool's init_transactions
        self._claimer: TransactionalSink | None = None  # the claims' id, initialised early
        self._idle: queue.SimpleQueue[TransactionalSink] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cursor: dict[int, Cursor] = {}  # where each site stands (committed or not)
        self._committed: dict[int, Cursor] = {}  # its latest checkpoint in the state topic
        self._seq: dict[int, int] = {}

    # -- claiming -------------------------------------------------------------------------

    def claimed(self, idsite: int) -> bool:
        return idsite in self._claimed

    def claim(self, sites: Sequence[int]) -> None:
        """Takes the sites not claimed yet (none: no Kafka call). Raises KafkaDeliveryError
        (or CheckpointError for an invalid claim record); `broken` then."""
        new = tuple(dict.fromkeys(idsite for idsite in sites if idsite not in self._claimed))
        if not new:
            return
        try:
            starting = self.start_producers()
            try:
                self._claim(new, starting.result)
            finally:
                starting.result()
        except MatomoKafkaError:
            self.broken = True
            raise
        self._claimed.update(new)
        log.info(
            "exactly-once: %d site(s) claimed for the transactional ids %s.0..%d",
            len(new), self.owner.prefix, self.owner.producers - 1,
        )  # fmt: skip

    def _claim(self, new: tuple[int, ...], pool_ready: Callable[[], object]) -> None:
        """Steps 1 to 5 (module docstring). `pool_ready` waits for this process's own
        producers' `init_transactions`: done before the claim is committed, since once it
        is, another claimer may fence those ids, and a later init would undo that."""
        records = [
            (claim_key(idsite), encode_claim(self.settings, idsite, self.owner, self.by))
            for idsite in new
        ]
        claims_id = claims_transactional_id(self.settings.KAFKA_TOPIC)
        pool_ready()  # and the claims' id initialised with it (step 1 before step 2)
        for attempt in range(1, CLAIM_ATTEMPTS + 1):
            claimer, self._claimer = self._claimer, None  # initialised with the pool, if any
            try:
                if claimer is None:
                    claimer = TransactionalSink(self.settings, new[0], claims_id)
                    claimer.init()  # 1: ends a claim in flight elsewhere, fences later ones
                claimer.idsite = new[0]
                read_at = time.monotonic()
                if not self.state.read_to_end(STATE_PATIENCE):  # 2
                    # A transaction still open holds the read back: fencing the owners of the
                    # claims read so far ends it if one of them left it (a claim is committed
                    # before its owner writes anything).
                    self._fence_owners(new)
                    read_at = time.monotonic()
                    self.state.read_to_end(None)
                fenced = self._fence_owners(new)  # 3
                pool_ready()
                claimer.commit_state(records)  # 4
                # 5: ExactlyOnce's reads of the checkpoints start after the last fencing; if
                # it fenced nobody, the read of step 2 came after it and serves.
                self.claimed_at = time.monotonic() if fenced else read_at
                return
            except FencedError:
                if attempt == CLAIM_ATTEMPTS:
                    raise KafkaDeliveryError(
                        f"exactly-once: could not claim site(s) {_sites(new)}: other instances "
                        f"claimed sites at the same time {CLAIM_ATTEMPTS} times in a row "
                        f"(transactional.id {claims_id!r})"
                    ) from None
                log.info("exactly-once: another instance claimed sites meanwhile: claiming "
                         "again")  # fmt: skip
                time.sleep(random.uniform(0.05, 0.25) * attempt)
            finally:
                if claimer is not None:
                    claimer.close()

    def _fence_owners(self, sites: tuple[int, ...]) -> bool:
        """Fences the latest owner of each site (its ids), or, for a site whose latest
        checkpoint came from a version before claims, the site's own id. False: none was
        left to fence."""
        targets: dict[str, tuple[int, list[str]]] = {}
        for idsite in sites:
            owner = self.state.owner(idsite)
            if owner is not None:
                if owner.prefix != self.owner.prefix:
                    targets.setdefault(owner.prefix, (idsite, owner.ids()))
            elif self.state.legacy(idsite):
                own = transactional_id(self.settings.KAFKA_TOPIC, idsite)
                targets.setdefault(own, (idsite, [own]))
        targets = {key: value for key, value in targets.items() if key not in self._fenced}
        if not targets:
            return False
        jobs = [(idsite, txn_id) for idsite, ids in targets.values() for txn_id in ids]
        log.debug("exactly-once: fencing %d transactional id(s) of %d earlier owner(s)",
                  len(jobs), len(targets))  # fmt: skip
        self._run_all(jobs, self._fence_one)
        self._fenced.update(targets)
        return True

    def _fence_one(self, idsite: int, txn_id: str) -> None:
        sink = TransactionalSink(self.settings, idsite, txn_id)
        try:
            sink.init()
        finally:
            sink.close()

    def start_producers(self) -> Future[None]:
        """Starts the pool's `init_transactions` (once), in the background: its ids are new,
        nobody fences them before this process's claim names them."""
        if self._starting is None:
            starting: Future[None] = Future()
            self._starting = starting

            def start() -> None:
                try:
                    self._start_pool()
                    starting.set_result(None)
                except BaseException as exc:  # raised by claim()
                    starting.set_exception(exc)

            threading.Thread(target=start, name="kafka-pool", daemon=True).start()
        return self._starting

    def _start_pool(self) -> None:
        """The pool's producers, and the claims' id for the first claim (step 1 may come
        before the claim: the read comes after it), all initialised at once: an
        `init_transactions` alone sometimes waits for librdkafka's 500 ms timer."""
        sinks = [TransactionalSink(self.settings, 0, txn_id) for txn_id in self.owner.ids()]
        self._pool = sinks  # closed by close(), whatever happens below
        claims_id = claims_transactional_id(self.settings.KAFKA_TOPIC)
        claimer = self._claimer = TransactionalSink(self.settings, 0, claims_id)
        self._run_all([(sink, None) for sink in [*sinks, claimer]], lambda sink, _: sink.init())
        for sink in sinks:
            self._idle.put(sink)

    @staticmethod
    def _run_all(jobs: Sequence[tuple[Any, Any]], work: Callable[[Any, Any], None]) -> None:
        """Runs the jobs in parallel (FENCE_WORKERS at most); raises the first failure."""
        with ThreadPoolExecutor(max(1, min(FENCE_WORKERS, len(jobs))), "kafka-fence") as pool:
            for future in [pool.submit(work, *job) for job in jobs]:
                future.result()

    # -- delivering -----------------------------------------------------------------------

    @contextlib.contextmanager
    def producer(self) -> Iterator[TransactionalSink]:
        """A producer of the pool for one transaction; a failure marks `broken`."""
        sink = self._idle.get()
        try:
            yield sink
        except BaseException:
            self.broken = True
            raise
        finally:
            self._idle.put(sink)

    def known(self, idsite: int) -> tuple[Cursor, Cursor | None, int] | None:
        """Where the site stands, its latest committed checkpoint and seq, once resumed."""
        with self._lock:
            cursor = self._cursor.get(idsite)
            if cursor is None:
                return None
            return cursor, self._committed.get(idsite), self._seq.get(idsite, 0)

    def resumed(self, idsite: int, cursor: Cursor, committed: Cursor | None, seq: int) -> None:
        with self._lock:
            self._cursor[idsite], self._seq[idsite] = cursor, seq
            if committed is not None:
                self._committed[idsite] = committed

    def committed(self, idsite: int, cursor: Cursor, seq: int) -> None:
        with self._lock:
            self._cursor[idsite] = self._committed[idsite] = cursor
            self._seq[idsite] = seq

    def moved(self, idsite: int, cursor: Cursor) -> None:
        """The site moved with nothing to send: kept here until its next commit."""
        with self._lock:
            self._cursor[idsite] = cursor

    def close(self) -> None:
        if self._starting is not None:
            with contextlib.suppress(MatomoKafkaError):
                self._starting.result()  # the pool is complete: every producer is closed
        for sink in self._pool:
            sink.close()
        self._pool = []
        if self._claimer is not None:
            self._claimer.close()
            self._claimer = None
        self.state.close()


def _sites(sites: Sequence[int]) -> str:
    shown = ",".join(map(str, sites[:10]))
    return shown + (f" and {len(sites) - 10} more" if len(sites) > 10 else "")
