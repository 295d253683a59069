"""What was sent, per site and day, for the re-scan window (MATOMO_RESCAN_DAYS).

A re-scan re-reads days already sent and re-sends only the visits that are new (late tracking:
queued tracking processed late, log imports, back-dated hits) or changed (a visit that got more
actions). To know which, while the window is on, each visit sent is recorded once Kafka has
acknowledged it: its idVisit and an 8-byte BLAKE2b digest of the message sent, 16 bytes
appended to `<FILE_PATH_FILTERDATE><idsite>.sent/<YYYY-MM-DD>.bin`; days that no later run
will re-scan are pruned after each re-scan.

The record is an optimisation, never a source of loss: a visit missing from it (a crash before
the append, a deleted file, a first re-scan) is simply re-sent, as an update of the same key.
So appends are not fsynced, a torn last record is ignored, and repeated records are harmless
(the last one wins).

An erased visit (its tombstone acknowledged by Kafka) is forgotten by appending its idVisit
with the digest ERASED (eight zero bytes): `load` leaves it out, so it is neither tombstoned
again nor taken for sent. The file format is unchanged: code that predates tombstones reads
such a record as a visit sent with another digest (re-sent if Matomo lists it again).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from matomo_kafka.errors import CheckpointError
from matomo_kafka.model import Message
from matomo_kafka.state import no_follow

_RECORD = struct.Struct("<Q8s")


#: The digest recorded for a visit whose tombstone Kafka acknowledged: forgotten by `load`.
#: (A real digest equal to it, one chance in 2**64, would make its visit be re-sent once.)
ERASED = bytes(8)


def digest(value: bytes | None) -> bytes:
    """What is recorded of a message sent: 8 bytes of BLAKE2b, or ERASED for a tombstone."""
    if value is None:
        return ERASED
    return hashlib.blake2b(value, digest_size=8).digest()


def visit_id(message: Message) -> int:
    """The idVisit of a message keyed `<idSite>:<idVisit>`."""
    return int(message.key.rpartition(b":")[2])


@dataclass
class Changes:
    """Messages of a fresh listing against what was sent: never sent (or tombstoned), sent
    with another content, sent as they are."""

    inserts: list[Message] = field(default_factory=list)
    updates: list[Message] = field(default_factory=list)
    unchanged: int = 0


def changes_since(messages: Iterable[Message], sent: Mapping[int, bytes | None]) -> Changes:
    """Sorts messages by what `sent` (idVisit -> digest of what was sent, None for a
    tombstone) holds of them: the re-scan's and `reconcile`'s one comparison."""
    changes = Changes()
    for message in messages:
        before = sent.get(visit_id(message))
        if before is None:
            changes.inserts.append(message)
        elif before != digest(message.value):
            changes.updates.append(message)
        else:
            changes.unchanged += 1
    return changes


class SentLog:
    """Per-day records of the visits sent, beside the checkpoint files."""

    def __init__(self, filterdate_prefix: str) -> None:
        self.filterdate_prefix = filterdate_prefix

    def directory(self, idsite: int) -> Path:
        return Path(f"{self.filterdate_prefix}{idsite}.sent")

    def path(self, idsite: int, day: date) -> Path:
        return self.directory(idsite) / f"{day.isoformat()}.bin"

    def load(self, idsite: int, day: date) -> dict[int, bytes]:
        """idVisit -> digest of what was last sent for it (empty: nothing recorded); erased
        visits are left out."""
        path = self.path(idsite, day)
        try:
            data = no_follow.read_bytes(path)
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
        if data is None:
            return {}
        whole = len(data) - len(data) % _RECORD.size  # a torn last record is ignored
        known = dict(_RECORD.iter_unpack(data[:whole]))
        return {idvisit: sent for idvisit, sent in known.items() if sent != ERASED}

    def append(self, idsite: int, day: date, messages: Iterable[Message]) -> None:
        records = b"".join(_RECORD.pack(visit_id(m), digest(m.value)) for m in messages)
        path = self.path(idsite, day)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = no_follow.open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "ab") as handle:
                torn = handle.tell() % _RECORD.size
                if torn:  # a crash cut the last append: drop its piece, keep the rest aligned
                    handle.truncate(handle.tell() - torn)
                handle.write(records)
        except OSError as exc:
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None

    def prune(self, idsite: int, keep_from: date) -> None:
        """Forgets the days before `keep_from`: no later run will re-scan them."""
        directory = self.directory(idsite)
        if not directory.is_dir():
            return
        for path in directory.glob("*.bin"):
            try:
                day = date.fromisoformat(path.stem)
            except ValueError:
                continue  # not ours: left alone
            if day < keep_from:
                path.unlink(missing_ok=True)
