"""Result files: whether one is a usable video (the supervisor keeps such a result even when a worker failed), and
the copy of a result that HeyGem's desktop client opens in the folder it shares with the service."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def is_valid_video(path: Path) -> bool:
    """True when the file opens and its video stream decodes a first frame."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return False
            next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, OSError, ValueError):
        return False
    return True


def remove_legacy_partials(results_dir: Path) -> None:
    """Version 0.1 let a result grow in results/ as a hidden .<code>-r.partial.mp4, which a crash left there to be
    served; results now grow in the task's work folder, and any such leftover is removed at start."""
    for path in results_dir.glob(".*.partial.*"):
        path.unlink(missing_ok=True)


def place_shared_copy(result: Path, target: Path) -> None:
    """Put the finished `result` at `target` as well: a hard link where the file system allows it (instant, no
    extra space), else a copy. It is made under a hidden name beside `target` and renamed onto it, so a client
    never opens a partial file, and whatever was at `target` (a symlink included) is replaced, never followed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(result, temporary)
        except OSError:  # another file system (EXDEV), or one without hard links: a copy does the same job
            shutil.copyfile(result, temporary)
        os.replace(temporary, target)
    finally:
        # Left behind only when the rename failed, or did nothing: target was already a link to the result.
        temporary.unlink(missing_ok=True)
