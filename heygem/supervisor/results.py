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
