"""Whether a path is a regular file, checked with stat() before anything opens it.

Special files are never opened: reading /dev/zero never ends, and opening a FIFO blocks until someone writes to it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

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
