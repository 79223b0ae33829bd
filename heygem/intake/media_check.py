"""Whether a speech or video file belongs in its slot, judged by its content (never its name), within the limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from heygem.config import ServerConfig
from heygem.errors import InputError
from heygem.pipeline.media import probe_audio, probe_video

Slot = Literal["audio", "video"]

SLOT_NAMES: dict[Slot, str] = {"audio": "speech", "video": "video"}


def check_media(path: Path, slot: Slot, limits: ServerConfig) -> float:
    """Refuse, with one plain sentence, a file that does not fit `slot` or the limits; returns its duration (s)."""
    label = SLOT_NAMES[slot]
    size_mb = path.stat().st_size / 1e6
    if size_mb > limits.max_upload_mb:
        raise InputError(f"the {label} file is {size_mb:.0f} MB; the limit is {limits.max_upload_mb:g} MB")
    duration_s = video_duration_s(path) if slot == "video" else probe_audio(path).duration
    if duration_s <= 0:
        raise InputError(f"the {label} file has no playable length")
    if duration_s > limits.max_media_duration_s:
        raise InputError(f"the {label} file lasts {duration_s:.0f} s; the limit is {limits.max_media_duration_s:g} s")
    return duration_s


def video_duration_s(path: Path) -> float:
    try:
        info = probe_video(path)
    except InputError:
        if is_audio(path):
            raise InputError("this is an audio file, but the video slot needs a video of a person facing the "
                             "camera; put the speech in the speech slot") from None
        raise
    if len(info.frame_times) < 2:
        raise InputError("this is a still image; the video slot needs a video of a person facing the camera")
    return info.duration


def is_audio(path: Path) -> bool:
    try:
        probe_audio(path)
    except InputError:
        return False
    return True
