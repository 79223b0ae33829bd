"""Small pictures of each task's video for the Tasks tab, made once per video and kept in memory."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import av
import cv2
from loguru import logger

WIDTH = 96
KEPT = 512


@functools.lru_cache(maxsize=KEPT)
def thumbnail_uri(video_path: str) -> str:
    """The first frame of a stored input video as a small JPEG data: URI; "" when it has none (then the list
    shows the names alone). The path is a task's own stored upload, checked when it was accepted."""
    path = Path(video_path)
    if not path.is_file():
        return ""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            image = frame.to_ndarray(format="bgr24")
    except (av.FFmpegError, StopIteration, IndexError, OSError, ValueError) as exc:
        logger.debug("no thumbnail of {}: {}", path.name, exc)
        return ""
    height = max(1, round(image.shape[0] * WIDTH / image.shape[1]))
    small = cv2.resize(image, (WIDTH, height), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii") if ok else ""
