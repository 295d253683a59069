"""The run's own files (checkpoints, their locks, the sent log) opened without following a
symbolic link at their path (O_NOFOLLOW).

They live in a directory others may write to (a shared volume, /tmp in a test): a link
planted at a checkpoint's path would make the tool read another file (and quote it in an
error) or append to, lock or truncate it. A link there is refused with one line naming the
path, never followed; links in the directories above are the installation's choice and are
followed as usual. Errors never show what a file holds.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from matomo_kafka.errors import CheckpointError

#: Flags added to every open: no link followed, no descriptor inherited by a child process.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC


def link_refused(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a symbolic link: refused (the tool never reads or writes through a link "
        "at its own files' paths); replace it by the file itself, or remove it"
    )


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open without following a link at `path` (CheckpointError); other OSError as is."""
    try:
        return os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise link_refused(path) from None
        raise


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None when there is no file. Only a regular file is read (a FIFO
    would block, a device never end)."""
    try:
        fd = open_fd(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path} is not a regular file: refused; remove it")
        return handle.read()


def refuse_link(path: Path) -> None:
    """Before a rename over `path`: a link there is refused rather than silently replaced
    (someone put it there for a reason the tool cannot know)."""
    if path.is_symlink():
        raise link_refused(path)
