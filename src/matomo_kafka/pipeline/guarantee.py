"""Which delivery does a run hand its pages to, and how is it set up? At-least-once on the
run's producer; or exactly-once: the run's transactional producers, made while Matomo answers
the list of sites, then its sites claimed (sink/transactions.py) before anything is sent."""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import Future

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import MatomoKafkaError
from matomo_kafka.sink.delivery import AtLeastOnce, Delivery, ExactlyOnce, Record
from matomo_kafka.sink.producer import KafkaSink
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.state.checkpoint_files import CheckpointStore

#: The loop's logger, one for the whole package (log lines name it).
log = logging.getLogger("matomo_kafka.pipeline")


class DeliveryStart:
    """The delivery of one run (or `follow` cycle). `transactions`: `follow`'s producers and
    claims, kept across its cycles (None: the run makes its own and closes them at its end)."""

    def __init__(
        self,
        settings: Settings,
        sink: KafkaSink,
        store: CheckpointStore,
        record: Record,
        slots: int,
        budget: int,
        transactions: Transactions | None,
        by: str,
        once_level: int,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.store = store
        self.record = record
        self.slots = slots
        self.budget = budget  # the pages a site can have fetched ahead (the scheduler's)
        self.transactions = transactions
        self.by = by  # "run" or "follow"
        self.once_level = once_level
        self._early: Future[Transactions] | None = None
        self._claimed = False  # exactly-once: open() took over the run's transactions

    def early(self, sites: tuple[int, ...]) -> None:
        """Exactly-once `run`: its transactions made (the state topic checked, the reader
        and the producers started: nothing fenced, nothing claimed) while Matomo answers the
        list of sites, instead of after it."""
        if not self.settings.exactly_once or self.transactions is not None or not sites:
            return
        future: Future[Transactions] = Future()

        def make() -> None:
            try:
                transactions = Transactions(self.settings, "run")
                transactions.start_producers()
                future.set_result(transactions)
            except BaseException as exc:  # handed to open(), which raises it
                future.set_exception(exc)

        threading.Thread(target=make, name="kafka-start", daemon=True).start()
        self._early = future

    def abandon(self) -> None:
        """The run fails before its delivery took its early transactions: they are closed."""
        if self._early is not None and not self._claimed:
            with contextlib.suppress(MatomoKafkaError):
                self._early.result().close()

    def open(self, sites: tuple[int, ...]) -> Delivery:
        """At-least-once on the run's producer; or exactly-once: a few transactional
        producers for all the sites, which are claimed first (sink/transactions.py: fencing
        their earlier owners, which ends the transactions a dead instance left open). The
        state topic (created compacted if missing) is read after the claim. `follow` keeps
        its transactions across cycles: only sites new to it are claimed, once."""
        if not self.settings.exactly_once:
            return AtLeastOnce(self.settings, self.sink, self.store, self.record, self.slots)
        owns = self.transactions is None
        if self.transactions is not None:
            transactions = self.transactions
        elif self._early is not None:
            transactions = self._early.result()
        else:
            transactions = Transactions(self.settings, self.by)
        self._claimed = True  # closed here on failure, by the delivery otherwise
        try:
            transactions.claim(sites)
        except MatomoKafkaError:
            if owns:
                transactions.close()
            raise
        log.log(
            self.once_level,
            "exactly-once: state topic %s, transactional ids %s.<0..%d>",
            self.settings.state_topic, transactions.owner.prefix,
            transactions.owner.producers - 1,
        )  # fmt: skip
        # Up to the pages a site can have fetched ahead (the scheduler's budget), in one go.
        return ExactlyOnce(self.settings, self.store, transactions, self.record, self.budget,
                           self.by, owns)  # fmt: skip
