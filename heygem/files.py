"""Whether a path is a regular file: checked with stat() before anything opens it, or, for the files the server
serves from its own folders, on the file opened without blocking (open_regular_file).

Special files are never read: reading /dev/zero never ends, and opening a FIFO blocks until someone writes to it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from heygem.errors import InputError

SPECIAL_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def is_regular_file(path: Path | str) -> bool:
    """True for a regular file (symlinks followed); False for anything else, including unusable paths."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular_file(path: Path) -> BinaryIO | None:
    """`path` opened for reading if it is a regular file; None if it is anything else, a link, or gone.

    For files this server serves from its own folders, where nothing makes links: the last component is never
    followed (O_NOFOLLOW), a FIFO does not block the open (O_NONBLOCK) and is then refused, and the check is made on
    the open file (fstat), so nothing swapped in after it is read. The open file stays whole if its name is removed
    meanwhile (a task deleted while one of its files is being served). Blocking: call it off the event loop.
    """
    try:
        opened = open(path, "rb", opener=open_without_blocking)  # noqa: SIM115 (returned open: the caller closes it)
    except (OSError, ValueError):  # missing, a link (ELOOP), a folder, unreadable, or a NUL byte in the name
        return None
    if stat.S_ISREG(os.fstat(opened.fileno()).st_mode):
        return opened
    opened.close()
    return None


def open_without_blocking(path: str, flags: int) -> int:
    """open()'s opener for open_regular_file."""
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW)


def require_regular_file(path: Path, label: str, shown: str) -> None:
    """An InputError like '<label> not found: <shown>' unless `path` is a regular file."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{label} not found: {shown}") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InputError(f"{label} has a name too long for the file system: {shown}") from None
        raise InputError(f"{label} cannot be read ({exc.strerror}): {shown}") from None
    except ValueError:  # a NUL byte in the path
        raise InputError(f"{label} has an unusable path: {shown}") from None
    if not stat.S_ISREG(mode):
        kind = SPECIAL_KINDS.get(stat.S_IFMT(mode), "a special file")
        raise InputError(f"{label} is {kind}, not a regular file: {shown}")
