"""Whether a result file is a usable video: the supervisor keeps such a result even when a worker failed."""

from __future__ import annotations

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
