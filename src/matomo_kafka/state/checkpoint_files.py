"""The seed's checkpoint files, read as they are and written so a crash never skips data.

Per site two files hold the cursor: `<FILE_PATH_FILTERDATE><idsite>.txt` the day being read
(YYYY-MM-DD) and `<FILE_PATH_LAST_OFFSET><idsite>.txt` how many visits of that day Kafka has
already acknowledged. Each write is atomic (temp file, fsync, rename, fsync of the directory).
When the day changes, a marker `<FILE_PATH_FILTERDATE><idsite>.next` holding the new cursor is
written first, then the offset is reset to 0 *before* the new day is written, then the new
offset, then the marker goes: a crash at any point either finds the marker (and resumes at the
new cursor, which Kafka already acknowledged) or the old cursor; never (new day, old offset),
which would skip visits. Without the marker (producerMatomo's own files) the order alone
still guarantees a re-send, never a skip.

Keyset paging (paging.py) also needs the page boundary: the last action time of the last visit
sent and the ids sent at that second. It goes to `<FILE_PATH_FILTERDATE><idsite>.boundary`
with the cursor it belongs to and the cursor the seed files held before, written *before* the
seed files. It is used when the seed files hold its cursor, or still hold the previous one (a
crash between the writes: the boundary is already acknowledged); any other content of the seed
files is someone's edit, which wins: the day resumes at their offset without a boundary.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from pathlib import Path
from types import TracebackType

import orjson

from matomo_kafka.errors import CheckpointError, LockedError
from matomo_kafka.model import Cursor
from matomo_kafka.state import no_follow

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Beyond this an offset can only be a corrupted file (Matomo's busiest sites log far fewer).
MAX_VISITS_PER_DAY = 1_000_000_000


#: More ids than this at one second can only be a corrupted boundary file.
MAX_BOUNDARY_IDS = 10_000_000


class CheckpointStore:
    """Reads and writes the per-site cursor in the seed's two-file format."""

    def __init__(self, filterdate_prefix: str, offset_prefix: str) -> None:
        self.filterdate_prefix = filterdate_prefix
        self.offset_prefix = offset_prefix

    def date_path(self, idsite: int) -> Path:
        return Path(f"{self.filterdate_prefix}{idsite}.txt")

    def offset_path(self, idsite: int) -> Path:
        return Path(f"{self.offset_prefix}{idsite}.txt")

    def marker_path(self, idsite: int) -> Path:
        return Path(f"{self.filterdate_prefix}{idsite}.next")

    def boundary_path(self, idsite: int) -> Path:
        return Path(f"{self.filterdate_prefix}{idsite}.boundary")

    def load(self, idsite: int) -> Cursor | None:
        """The site's cursor, or None when it has never run. Unreadable files raise."""
        marker = self._read_marker(idsite)
        # A marker: a day change was interrupted; its target is acknowledged.
        cursor = marker if marker is not None else self._load_files(idsite)
        if cursor is None:
            return None
        found = self._read_boundary(idsite)
        if found is not None:
            boundary, previous = found
            if _position(boundary) == _position(cursor) or previous == _position(cursor):
                return boundary
        return cursor

    def _read_boundary(self, idsite: int) -> tuple[Cursor, tuple[str, int] | None] | None:
        """The boundary file's cursor and the (day, offset) the seed files held before it."""
        path = self.boundary_path(idsite)
        text = _read(path)
        if text is None:
            return None
        try:
            body = orjson.loads(text)
            day = date.fromisoformat(body["day"])
            offset, last_action, ids = body["offset"], body["last_action"], body["ids"]
            previous = body.get("previous")
            if not (
                _is_count(offset)
                and (last_action is None or _is_count(last_action))
                and isinstance(ids, list)
                and len(ids) <= MAX_BOUNDARY_IDS
                and all(_is_count(i) for i in ids)
                and (last_action is not None or not ids)
            ):
                raise ValueError
            if previous is not None:
                previous = (date.fromisoformat(previous[0]).isoformat(), previous[1])
                if not _is_count(previous[1]):
                    raise ValueError
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(
                f"checkpoint {path} is unreadable; delete it (the day then resumes at the "
                "offset of the other checkpoint files)"
            ) from None
        return Cursor(day, offset, last_action, frozenset(ids)), previous

    def _read_marker(self, idsite: int) -> Cursor | None:
        text = _read(self.marker_path(idsite))
        if text is None:
            return None
        day_text, _, offset_text = text.partition(" ")
        try:
            return Cursor(date.fromisoformat(day_text), int(offset_text))
        except ValueError:
            raise CheckpointError(
                f"checkpoint {self.marker_path(idsite)} is unreadable; delete it (the day "
                "change it records is then re-done: re-sending, never skipping)"
            ) from None

    def _load_files(self, idsite: int) -> Cursor | None:
        date_path = self.date_path(idsite)
        day_text = _read(date_path)
        if day_text is None:
            return None
        if not _DAY_RE.match(day_text):
            raise CheckpointError(
                f"checkpoint {date_path} does not hold a YYYY-MM-DD day; "
                "fix or delete it (deleting restarts the site from START_DATE)"
            )
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise CheckpointError(f"checkpoint {date_path} holds an invalid day") from None
        if day > date.today() + timedelta(days=2):  # no timezone is two days ahead
            raise CheckpointError(
                f"checkpoint {date_path} holds {day}, a day in the future; fix it or use "
                "`matomo-kafka reset`"
            )
        offset_path = self.offset_path(idsite)
        offset_text = _read(offset_path)
        if offset_text is None:
            # Only the seed could leave a day without an offset: re-reading the day is safe.
            return Cursor(day, 0)
        # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
        if not (offset_text.isascii() and offset_text.isdigit()):
            raise CheckpointError(
                f"checkpoint {offset_path} does not hold a number of visits; "
                "fix it (0 re-sends the whole day)"
            )
        if int(offset_text) > MAX_VISITS_PER_DAY:
            raise CheckpointError(
                f"checkpoint {offset_path} holds more visits than a day can hold (over "
                f"{MAX_VISITS_PER_DAY:,}); fix it (0 re-sends the whole day)"
            )
        return Cursor(day, int(offset_text))

    def save(self, idsite: int, cursor: Cursor) -> None:
        """Moves the site's cursor forward, in the crash-safe order described above. What the
        files hold now is read back first rather than assumed: after a crash between the
        writes, the cursor a run resumed from (the boundary file's) is ahead of the seed files."""
        marker = self.marker_path(idsite)
        held = self._held(idsite)
        try:
            # First: the seed files written next are what it is checked against (see load).
            _write_atomic(self.boundary_path(idsite), _boundary_text(cursor, held))
            if held is None or held[0] != cursor.day.isoformat() or marker.exists():
                # The seed's two files cannot change together: a marker holding the new
                # cursor (already acknowledged) is written first, so a crash anywhere in
                # between resumes at the new cursor instead of re-sending the whole day.
                _write_atomic(marker, f"{cursor.day.isoformat()} {cursor.offset}")
                if self.offset_path(idsite).exists():
                    _write_atomic(self.offset_path(idsite), "0")
                _write_atomic(self.date_path(idsite), cursor.day.isoformat())
                _write_atomic(self.offset_path(idsite), str(cursor.offset))
                marker.unlink()
            elif held[1] != cursor.offset:
                _write_atomic(self.offset_path(idsite), str(cursor.offset))
        except OSError as exc:
            where = exc.filename or self.date_path(idsite)
            raise CheckpointError(
                f"cannot write the checkpoint of site {idsite} ({where}): {exc.strerror or exc}"
            ) from None

    def _held(self, idsite: int) -> tuple[str, int] | None:
        """(day, offset) the marker or the seed files hold now; None if absent or unreadable
        (they are then rewritten whole)."""
        try:
            cursor = self._read_marker(idsite) or self._load_files(idsite)
        except CheckpointError:
            return None
        return None if cursor is None else _position(cursor)

    def lock_path(self, idsite: int) -> Path:
        return Path(f"{self.filterdate_prefix}{idsite}.lock")

    def lock(self, sites: Iterable[int]) -> CheckpointLock:
        """Locks every given site's checkpoint up front: all of them, or none (LockedError).
        Per-site locks let shards of one site list run at once on shared checkpoint files.
        Once locked, the temp files a killed run left beside them are removed."""
        ids = sorted(set(sites))
        return CheckpointLock(
            [self.lock_path(idsite) for idsite in ids], lambda: self.remove_temp_files(ids)
        )

    def lock_more(self, held: CheckpointLock, idsite: int) -> None:
        """Adds one site to locks already held, until they are released: `follow` taking on a
        site created in Matomo while it runs. LockedError if another process holds it (the
        locks held stay held); once locked, its temp files are removed, as by `lock`."""
        held.add(self.lock_path(idsite))
        self.remove_temp_files([idsite])

    def remove_temp_files(self, sites: Iterable[int]) -> int:
        """Removes the temp files of interrupted atomic writes (never read: a write either
        renamed its temp file or left it). Only while holding the sites' locks, so no running
        write of another process can lose its file."""
        prefixes: dict[Path, set[str]] = {}  # each directory listed once, not once a file
        for idsite in sites:
            for path in (self.boundary_path(idsite), self.marker_path(idsite),
                         self.date_path(idsite), self.offset_path(idsite)):  # fmt: skip
                prefixes.setdefault(path.parent, set()).add(f".{path.name}.")
        removed = 0
        for directory, names in prefixes.items():
            try:
                entries = [entry.name for entry in os.scandir(directory)]
            except OSError:
                continue
            for name in entries:
                # "." + a checkpoint file's name + "." + mkstemp's random part + ".tmp"
                if name.endswith(".tmp") and any(
                    name[: i + 1] in names for i, c in enumerate(name[:-5]) if c == "."
                ):
                    with contextlib.suppress(OSError):
                        (directory / name).unlink()
                        removed += 1
        return removed


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _position(cursor: Cursor) -> tuple[str, int]:
    return cursor.day.isoformat(), cursor.offset


def _boundary_text(cursor: Cursor, previous: tuple[str, int] | None) -> str:
    return orjson.dumps(
        {
            "day": cursor.day.isoformat(),
            "offset": cursor.offset,
            "last_action": cursor.last_action,
            "ids": sorted(cursor.ids),
            "previous": None if previous is None else list(previous),
        }
    ).decode()


def _read(path: Path) -> str | None:
    """The file's text, None if absent; never through a link. Errors never quote it."""
    try:
        data = no_follow.read_bytes(path)
        return None if data is None else data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"checkpoint {path} is not UTF-8 text; fix or delete it") from None
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read: {exc.strerror or type(exc).__name__}"
        ) from None


def _write_atomic(path: Path, text: str) -> None:
    """temp file in the same directory, fsync, rename over, fsync the directory."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        no_follow.refuse_link(path)  # a rename would replace a link: refused instead
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointLock:
    """Exclusive flocks beside the checkpoint files; the kernel frees them even on SIGKILL."""

    def __init__(self, paths: list[Path], on_locked: Callable[[], object] | None = None) -> None:
        self.paths = paths
        self.on_locked = on_locked
        self._fds: list[int] = []

    def __enter__(self) -> CheckpointLock:
        try:
            for path in self.paths:
                self._fds.append(_lock_one(path))
            if self.on_locked is not None:
                self.on_locked()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def add(self, path: Path) -> None:
        """One more file locked, released with the others (only while they are held)."""
        self._fds.append(_lock_one(path))
        self.paths.append(path)

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _lock_one(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = no_follow.open_fd(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise CheckpointError(f"cannot create the lock file {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        holder = holder if holder.isascii() and holder.isdigit() else ""  # a pid, or unsaid
        os.close(fd)
        raise LockedError(
            f"another matomo-kafka run (pid {holder or 'another process'}) holds {path}: it is "
            "working on the same checkpoint files; this run does nothing",
            holder,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
