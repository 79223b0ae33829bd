"""Result files: whether one is a usable video (the supervisor keeps such a result even when a worker failed), and
whether the copy of a result that HeyGem's desktop client opens (placed by heygem.api.shared_result) is this
server's own, to be removed with its task."""

from __future__ import annotations

import os
from pathlib import Path

from heygem.supervisor.states import TaskRecord, TaskState


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


def is_hard_link_of(path: Path, result: Path) -> bool:
    """Whether `path` is `result` under another name (not through a symlink): the shared copy placed as a link."""
    try:
        found, original = os.lstat(path), os.stat(result)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (original.st_dev, original.st_ino)


def own_shared_copy(record: TaskRecord) -> Path | None:
    """The task's copy in the shared folder if this server placed it, else None: anything else under that name
    (what kept the copy from being placed, or a file put there later) belongs to someone else and stays."""
    if not record.shared_result_path or not record.result_path:
        return None
    shared = Path(record.shared_result_path)
    # A success placed it (maybe as a copy); a link of the result was placed by an attempt that did not record its end.
    if record.state is TaskState.SUCCEEDED or is_hard_link_of(shared, Path(record.result_path)):
        return shared
    return None
