"""Whether a speech or video file belongs in its slot, judged by its content (never its name), within the limits.

Probing opens a file with libavformat, which decodes a few frames to learn its streams: each probe holds up to
about 85 MB (measured; frames up to media.max_input_side, see heygem.pipeline.media_formats), so at most
server.max_concurrent_probes run at once, whichever route the file came through; the others wait their turn.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Literal

from heygem.config import Config
from heygem.errors import InputError
from heygem.pipeline.media import probe_audio, probe_video

Slot = Literal["audio", "video"]

SLOT_NAMES: dict[Slot, str] = {"audio": "speech", "video": "video"}


def check_media(path: Path, slot: Slot, config: Config) -> float:
    """Refuse, with one plain sentence, a file that does not fit `slot` or the limits; returns its duration (s)."""
    limits = config.server
    label = SLOT_NAMES[slot]
    size_mb = path.stat().st_size / 1e6
    if size_mb > limits.max_upload_mb:
        raise InputError(f"the {label} file is {size_mb:.0f} MB; the limit is {limits.max_upload_mb:g} MB")
    max_side = config.media.max_input_side
    with probe_slots(limits.max_concurrent_probes):
        duration_s = video_duration_s(path, max_side) if slot == "video" else probe_audio(path, max_side).duration
    if duration_s <= 0:
        raise InputError(f"the {label} file has no playable length")
    if duration_s > limits.max_media_duration_s:
        raise InputError(f"the {label} file lasts {duration_s:.0f} s; the limit is {limits.max_media_duration_s:g} s")
    return duration_s


@functools.cache
def probe_slots(count: int) -> threading.BoundedSemaphore:
    """The one semaphore of this process that lets `count` probes run at once."""
    return threading.BoundedSemaphore(count)


def video_duration_s(path: Path, max_side: int) -> float:
    try:
        info = probe_video(path, max_side)
    except InputError:
        if is_audio(path, max_side):
            raise InputError("this is an audio file, but the video slot needs a video of a person facing the "
                             "camera; put the speech in the speech slot") from None
        raise
    if len(info.frame_times) < 2:
        raise InputError("this is a still image; the video slot needs a video of a person facing the camera")
    return info.duration


def is_audio(path: Path, max_side: int) -> bool:
    try:
        probe_audio(path, max_side)
    except InputError:
        return False
    return True
