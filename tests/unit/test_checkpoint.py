"""Checkpoint files: the seed's format, atomic writes, crash-safe order, loud failures."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matomo_kafka.errors import CheckpointError, LockedError
from matomo_kafka.model import Cursor
from matomo_kafka.ops.metrics import SuccessTimes
from matomo_kafka.state import checkpoint_files as checkpoint_module
from matomo_kafka.state.checkpoint_files import CheckpointStore


def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(str(tmp_path / "filterdate"), str(tmp_path / "last_filter_offset"))


@contextmanager
def crash_after(writes: int) -> Iterator[None]:
    """Checkpoint writes fail (as on a full disk, or a process killed) after `writes` of them:
    what a crash at that point leaves on disk."""
    real_write = checkpoint_module._write_atomic
    done = 0

    def crashing_write(path: Path, text: str) -> None:
        nonlocal done
        if done >= writes:
            raise OSError(28, "No space left on device")
        done += 1
        real_write(path, text)

    checkpoint_module._write_atomic = crashing_write
    try:
        yield
    finally:
        checkpoint_module._write_atomic = real_write


def test_reads_seed_files_as_written_by_producerMatomo(tmp_path: Path) -> None:
    (tmp_path / "filterdate6.txt").write_text("2024-03-10")  # no newline, as the seed wrote
    (tmp_path / "last_filter_offset6.txt").write_text("3000\n")
    assert store(tmp_path).load(6) == Cursor(date(2024, 3, 10), 3000)


def test_never_run_site(tmp_path: Path) -> None:
    assert store(tmp_path).load(15) is None


def test_day_without_offset_file_rereads_the_day(tmp_path: Path) -> None:
    (tmp_path / "filterdate6.txt").write_text("2024-03-10\n")
    assert store(tmp_path).load(6) == Cursor(date(2024, 3, 10), 0)


@pytest.mark.parametrize(
    ("day_text", "offset_text"),
    [("10/03/2024", "0"), ("2024-02-30", "0"), ("", "0"), ("2024-03-10", "-5"),
     ("2024-03-10", "12abc"), ("2024-03-10", "")],
)  # fmt: skip
def test_unreadable_checkpoint_is_an_error(tmp_path: Path, day_text: str, offset_text: str) -> None:
    (tmp_path / "filterdate6.txt").write_text(day_text)
    (tmp_path / "last_filter_offset6.txt").write_text(offset_text)
    with pytest.raises(CheckpointError, match="checkpoint"):
        store(tmp_path).load(6)


def test_save_round_trip_and_files(tmp_path: Path) -> None:
    s = store(tmp_path)
    first = Cursor(date(2024, 3, 1), 0)
    s.save(6, first)
    s.save(6, Cursor(date(2024, 3, 1), 1000))
    assert (tmp_path / "filterdate6.txt").read_text() == "2024-03-01\n"
    assert (tmp_path / "last_filter_offset6.txt").read_text() == "1000\n"
    s.save(6, Cursor(date(2024, 3, 2), 0))
    assert s.load(6) == Cursor(date(2024, 3, 2), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "filterdate6.boundary", "filterdate6.txt", "last_filter_offset6.txt"]  # fmt: skip


def test_crash_during_a_day_change_resumes_at_old_or_new_cursor(tmp_path: Path) -> None:
    """A day change is five writes (boundary, marker, offset 0, day, offset): a crash after
    any prefix of them resumes at the old cursor or at the new one, never elsewhere."""
    s = store(tmp_path)
    before = Cursor(date(2024, 3, 1), 1234)
    after = Cursor(date(2024, 3, 2), 0)
    for writes in range(5):
        s.save(6, before)
        assert s.load(6) == before
        with crash_after(writes), pytest.raises(CheckpointError, match="No space left"):
            s.save(6, after)
        resumed = s.load(6)
        assert resumed == (before if writes == 0 else after), writes


def test_boundary_round_trip(tmp_path: Path) -> None:
    s = store(tmp_path)
    start = Cursor(date(2024, 3, 1), 0)
    s.save(6, start)
    inside = Cursor(date(2024, 3, 1), 1000, 1_709_251_200, frozenset({7, 9}))
    s.save(6, inside)
    assert s.load(6) == inside
    assert (tmp_path / "last_filter_offset6.txt").read_text() == "1000\n"  # still the seed's


def test_crash_between_boundary_and_offset_uses_the_boundary(tmp_path: Path) -> None:
    """The boundary file is written first: a crash before the offset file resumes at it."""
    s = store(tmp_path)
    one = Cursor(date(2024, 3, 1), 1000, 1_709_251_200, frozenset({7}))
    s.save(6, one)
    two = Cursor(date(2024, 3, 1), 2000, 1_709_260_000, frozenset({8, 11}))
    with crash_after(1), pytest.raises(CheckpointError):
        s.save(6, two)
    assert (tmp_path / "last_filter_offset6.txt").read_text() == "1000\n"
    assert s.load(6) == two


def test_edited_seed_files_win_over_the_boundary(tmp_path: Path) -> None:
    """Someone moved the seed files (to replay part of a day): their offset, no boundary."""
    s = store(tmp_path)
    s.save(6, Cursor(date(2024, 3, 1), 0))
    s.save(6, Cursor(date(2024, 3, 1), 10, 1_709_251_200, frozenset({7})))
    (tmp_path / "last_filter_offset6.txt").write_text("4")
    assert s.load(6) == Cursor(date(2024, 3, 1), 4)


@pytest.mark.parametrize(
    "text",
    ["{", "[]", '{"day": "2024-03-01"}',
     '{"day": "2024-03-01", "offset": -1, "last_action": 5, "ids": []}',
     '{"day": "2024-03-01", "offset": 1, "last_action": "5", "ids": []}',
     '{"day": "2024-03-01", "offset": 1, "last_action": null, "ids": [3]}',
     '{"day": "2024-03-01", "offset": 1, "last_action": 5, "ids": [true]}'],
)  # fmt: skip
def test_unreadable_boundary_is_an_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "filterdate6.txt").write_text("2024-03-01")
    (tmp_path / "last_filter_offset6.txt").write_text("1")
    (tmp_path / "filterdate6.boundary").write_text(text)
    with pytest.raises(CheckpointError, match="boundary is unreadable; delete it"):
        store(tmp_path).load(6)


def test_seed_files_alone_only_resend(tmp_path: Path) -> None:
    """Without a marker (files as producerMatomo left them mid-change): (old day, 0)."""
    (tmp_path / "filterdate6.txt").write_text("2024-03-01")
    (tmp_path / "last_filter_offset6.txt").write_text("0")
    assert store(tmp_path).load(6) == Cursor(date(2024, 3, 1), 0)


def test_atomic_write_leaves_no_temp_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = store(tmp_path)
    s.save(6, Cursor(date(2024, 3, 1), 10))

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CheckpointError):
        s.save(6, Cursor(date(2024, 3, 1), 20))
    monkeypatch.undo()
    assert s.load(6) == Cursor(date(2024, 3, 1), 10)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_lock_is_exclusive_per_site(tmp_path: Path) -> None:
    s = store(tmp_path)
    with (
        s.lock([6, 15]),
        pytest.raises(LockedError, match="another matomo-kafka run"),
        store(tmp_path).lock([1, 15]),
    ):
        pass  # the second lock() raises before this line
    # All or nothing: the failed attempt released site 1 again.
    assert not _locked(tmp_path / "filterdate1.lock")
    with s.lock([6]), store(tmp_path).lock([1, 15]):  # other sites: shards run side by side
        assert _locked(tmp_path / "filterdate6.lock")
    assert not _locked(tmp_path / "filterdate6.lock")


def test_lock_more_adds_a_site_to_the_locks_held(tmp_path: Path) -> None:
    """follow takes on a site created while it runs: one more lock, released with the others;
    a site another process holds raises, and the locks held stay held."""
    s = store(tmp_path)
    (tmp_path / ".filterdate7.txt.abc.tmp").write_text("left by a killed write")
    with s.lock([6]) as held:
        s.lock_more(held, 7)
        assert _locked(tmp_path / "filterdate7.lock")
        assert not (tmp_path / ".filterdate7.txt.abc.tmp").exists()
        with store(tmp_path).lock([8]):
            with pytest.raises(LockedError) as refused:
                s.lock_more(held, 8)
            assert refused.value.holder == str(os.getpid())
        assert _locked(tmp_path / "filterdate6.lock") and _locked(tmp_path / "filterdate7.lock")
        assert not _locked(tmp_path / "filterdate8.lock")  # the other process let it go
        s.lock_more(held, 8)  # so it can be taken now
    for idsite in (6, 7, 8):
        assert not _locked(tmp_path / f"filterdate{idsite}.lock")


def _locked(path: Path) -> bool:
    with path.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(1, 30), st.integers(0, 7)),
                      min_size=1, max_size=12))  # fmt: skip
def test_crash_at_any_write_of_any_save_resumes_at_old_or_new_cursor(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[bool, int, int]]
) -> None:
    """Saves one after another, each maybe cut by a crash after some of its writes, and the
    next one continuing from what load() gives (as a resumed run does): load() always gives
    the cursor before the cut save or the one it was saving, never anything else."""
    s = store(tmp_path_factory.mktemp("crash"))
    current = Cursor(date(2024, 3, 1), 0)
    s.save(6, current)
    for new_day, visits, writes in steps:
        if new_day:
            target = Cursor(current.day + timedelta(days=1), 0)
        else:
            offset = current.offset + visits
            target = Cursor(current.day, offset, 1_709_251_200 + offset, frozenset({offset}))
        with crash_after(writes), contextlib.suppress(CheckpointError):
            s.save(6, target)
        resumed = s.load(6)
        assert resumed in (current, target), (current, target, writes)
        current = resumed


def test_lock_removes_temp_files_a_killed_run_left(tmp_path: Path) -> None:
    """A SIGKILL inside an atomic write leaves its temp file; the next run holding the site's
    lock removes those of its sites, and leaves other sites' (maybe being written) alone."""
    s = store(tmp_path)
    s.save(1, Cursor(date(2024, 3, 1), 10))
    left = [tmp_path / ".filterdate1.txt.k2j3.tmp", tmp_path / ".last_filter_offset1.txt.a.tmp",
            tmp_path / ".filterdate1.boundary.zz.tmp"]  # fmt: skip
    other = [tmp_path / ".filterdate12.txt.q.tmp", tmp_path / ".last_filter_offset2.txt.b.tmp"]
    for path in left + other:
        path.write_text("partial")
    with s.lock([1]):
        assert not any(path.exists() for path in left)
        assert all(path.exists() for path in other)
    assert s.load(1) == Cursor(date(2024, 3, 1), 10)


# -- issue 27: never through a symbolic link, never quoting what a file holds --------------------

#: What an env file planted behind a link, or copied over a checkpoint, would show.
ENV_FILE_TEXT = 'MATOMO_API_TOKEN="tok-0123456789abcdef0123456789"\nSALAGE="salt-9f8e7d6c5b4a"\n'


def _secret_file(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "wa7.env"
    target.parent.mkdir(exist_ok=True)
    target.write_text(ENV_FILE_TEXT)
    return target


def _shows_nothing_of_it(message: str) -> None:
    for line in ENV_FILE_TEXT.splitlines():
        for piece in (line[:8], line[-8:], line[10:18], line[20:28]):
            assert piece not in message, message


@pytest.mark.parametrize("kind", ["date", "offset", "marker", "boundary"])
def test_a_link_at_a_checkpoint_path_is_refused_on_load_and_save(tmp_path: Path, kind: str) -> None:
    checkpoints = store(tmp_path)
    checkpoints.save(6, Cursor(date(2024, 3, 10), 40))
    paths = {"date": checkpoints.date_path, "offset": checkpoints.offset_path,
             "marker": checkpoints.marker_path, "boundary": checkpoints.boundary_path}  # fmt: skip
    link = paths[kind](6)
    target = _secret_file(tmp_path)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    for action in (lambda: checkpoints.load(6),
                   lambda: checkpoints.save(6, Cursor(date(2024, 3, 11), 0))):  # fmt: skip
        with pytest.raises(CheckpointError) as refused:
            action()
        message = str(refused.value)
        assert message.startswith(f"{link} is a symbolic link: refused"), message
        assert "\n" not in message
        _shows_nothing_of_it(message)
    assert link.is_symlink() and target.read_text() == ENV_FILE_TEXT
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_link_at_a_lock_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    target = _secret_file(tmp_path)
    checkpoints.lock_path(6).symlink_to(target)
    with pytest.raises(CheckpointError, match="is a symbolic link: refused"):
        checkpoints.lock([5, 6]).__enter__()
    assert target.read_text() == ENV_FILE_TEXT  # followed, it was truncated to a pid
    with checkpoints.lock([5]):  # the other site's lock was released with the refusal
        pass


@pytest.mark.parametrize("name", ["filterdate6.txt", "last_filter_offset6.txt"])
def test_a_corrupt_checkpoint_error_quotes_nothing_of_the_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "filterdate6.txt").write_text("2024-03-10")
    (tmp_path / "last_filter_offset6.txt").write_text("40")
    (tmp_path / name).write_text(ENV_FILE_TEXT)  # an env file copied over a checkpoint
    with pytest.raises(CheckpointError) as refused:
        store(tmp_path).load(6)
    assert str(tmp_path / name) in str(refused.value)
    _shows_nothing_of_it(str(refused.value))


def test_a_fifo_at_a_checkpoint_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "filterdate6.txt")
    with pytest.raises(CheckpointError, match="is not a regular file"):
        store(tmp_path).load(6)


def test_a_lock_held_by_a_file_of_other_content_does_not_quote_it(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    path = checkpoints.lock_path(6)
    path.write_text(ENV_FILE_TEXT)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(LockedError) as held:
            checkpoints.lock([6]).__enter__()
        assert held.value.holder == ""
        assert "another matomo-kafka run (pid another process)" in str(held.value)
        _shows_nothing_of_it(str(held.value))
    finally:
        os.close(fd)


def test_the_last_success_file_is_never_written_through_a_link(tmp_path: Path) -> None:
    """`<FILE_PATH_FILTERDATE><idsite>.success` and its temp file (a name anyone can guess):
    a link at either is refused (an error logged, as for any metrics failure), not followed."""
    checkpoints = store(tmp_path)
    times = SuccessTimes(checkpoints)
    moment = datetime(2024, 3, 10, 12, tzinfo=UTC)
    times.write(6, moment)
    assert times.read(6) == moment.timestamp()
    target = _secret_file(tmp_path)
    temp = times.path(6).with_name(f".{times.path(6).name}.{os.getpid()}.tmp")
    temp.symlink_to(target)
    times.write(6, moment + timedelta(days=1))
    assert target.read_text() == ENV_FILE_TEXT
    temp.unlink(missing_ok=True)  # the refused write removed the link at its temp name
    times.path(6).unlink()
    times.path(6).symlink_to(target)
    assert times.read(6) is None
    times.write(6, moment)
    assert target.read_text() == ENV_FILE_TEXT and times.path(6).is_symlink()
