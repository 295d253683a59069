"""The sent log of the re-scan window (MATOMO_RESCAN_DAYS): a torn record is ignored, old days
pruned."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from matomo_kafka.errors import CheckpointError
from matomo_kafka.model import Message
from matomo_kafka.state.sent_log import SentLog, digest


def test_sent_log_ignores_a_torn_record_and_prunes_old_days(tmp_path: Path) -> None:
    log = SentLog(str(tmp_path / "filterdate"))
    day, old = date(2024, 3, 2), date(2024, 2, 1)
    log.append(7, day, [Message(b"7:11", b"{}"), Message(b"7:12", b'{"a":1}')])
    log.append(7, day, [Message(b"7:12", b'{"a":2}')])  # a re-send: the last one wins
    with log.path(7, day).open("ab") as handle:
        handle.write(b"\x01\x02\x03")  # a crash in the middle of an append
    assert log.load(7, day) == {11: digest(b"{}"), 12: digest(b'{"a":2}')}
    log.append(7, day, [Message(b"7:13", b"[]")])  # the next append realigns the file
    assert log.load(7, day) == {11: digest(b"{}"), 12: digest(b'{"a":2}'), 13: digest(b"[]")}
    log.append(7, old, [Message(b"7:1", b"{}")])
    log.prune(7, date(2024, 3, 1))
    assert not log.path(7, old).exists() and log.path(7, day).exists()


def test_an_acknowledged_tombstone_forgets_the_visit(tmp_path: Path) -> None:
    """A tombstone is recorded as the visit's last record (format unchanged: 16 bytes) and
    `load` leaves the visit out; sent again later (Matomo lists it again), it is known again."""
    log = SentLog(str(tmp_path / "filterdate"))
    day = date(2024, 3, 2)
    log.append(7, day, [Message(b"7:11", b"{}"), Message(b"7:12", b"{}")])
    log.append(7, day, [Message(b"7:11", None)])
    assert log.load(7, day) == {12: digest(b"{}")}
    assert log.path(7, day).stat().st_size == 3 * 16
    log.append(7, day, [Message(b"7:11", b'{"b":1}')])
    assert log.load(7, day) == {11: digest(b'{"b":1}'), 12: digest(b"{}")}


def test_a_link_at_a_sent_log_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """Issue 27: followed, the link would let a re-scan read another file, or append to it."""
    log = SentLog(str(tmp_path / "filterdate"))
    day = date(2024, 3, 2)
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"not the tool's")
    log.directory(7).mkdir()
    log.path(7, day).symlink_to(target)
    for action in (lambda: log.load(7, day), lambda: log.append(7, day, [Message(b"7:1", b"{}")])):
        with pytest.raises(CheckpointError, match=f"^{log.path(7, day)} is a symbolic link: "):
            action()
    assert target.read_bytes() == b"not the tool's"
