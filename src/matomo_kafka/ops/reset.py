"""`matomo-kafka reset`: moves a site's checkpoint on purpose, to (day, offset 0).

Used to re-send days (a consumer lost data, a backfill after a Matomo log import) or to skip
days. It takes the site's checkpoint lock, so it is refused while a run works on the site,
and writes the seed's two files in the same crash-safe order as a run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from matomo_kafka.config.settings import Settings
from matomo_kafka.errors import CheckpointError, MatomoKafkaError
from matomo_kafka.model import Cursor
from matomo_kafka.sink.transactions import Transactions
from matomo_kafka.state.checkpoint_files import CheckpointStore
from matomo_kafka.state.state_topic import encode, state_key


@dataclass(frozen=True)
class ResetPlan:
    idsite: int
    old: Cursor | None
    unreadable: str | None  # why the current checkpoint could not be read
    new: Cursor

    @property
    def changes(self) -> bool:
        return self.unreadable is not None or self.old != self.new

    def describe_old(self, start_date: date) -> str:
        if self.unreadable is not None:
            return "unreadable"
        if self.old is None:
            return f"none (would start at START_DATE {start_date})"
        return describe(self.old)


def describe(cursor: Cursor) -> str:
    return f"{cursor.day} offset {cursor.offset}"


def plan_reset(store: CheckpointStore, idsite: int, day: date) -> ResetPlan:
    """What the reset would change; an unreadable checkpoint can be reset (that is a fix)."""
    try:
        old, unreadable = store.load(idsite), None
    except MatomoKafkaError as exc:
        old, unreadable = None, str(exc)
    return ResetPlan(idsite, old, unreadable, Cursor(day, 0))


def apply_reset(store: CheckpointStore, plan: ResetPlan) -> None:
    """Writes (day, 0): offset first when the day changes, as the run does."""
    store.save(plan.idsite, plan.new)


def write_checkpoint(settings: Settings, idsite: int, cursor: Cursor, by: str = "reset") -> int:
    """Writes a site's checkpoint to the state topic in a transaction of its own (`reset`),
    after claiming the site: fences any instance working on it. Returns the record's seq."""
    transactions = Transactions(settings, by, producers=1)
    try:
        transactions.claim((idsite,))
        try:
            previous = transactions.state.latest(idsite, since=transactions.claimed_at)
        except CheckpointError:
            previous = None  # an invalid checkpoint is what a reset repairs
        seq = (previous.seq if previous else 0) + 1
        value = encode(settings, idsite, cursor, seq, by, transactions.owner.prefix)
        with transactions.producer() as sink:
            sink.commit([], state_key(idsite), value, site=idsite)
        return seq
    finally:
        transactions.close()
