"""Strips of consecutive mouth crops from rendered videos, one row per video, for looking at (PNG).

    python -m bench.mouth_strips OUT.png FIRST COUNT VIDEO [VIDEO ...]

The mouth box comes from tracking the first video's frames; every row crops the same box, so rows compare
like with like (the old engine's output against the new one's, say).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from heygem.config import load_config
from heygem.pipeline import tracking as lm
from heygem.pipeline.generate import tracker_settings
from heygem.pipeline.media import VideoReader, probe_video
from heygem.pipeline.tracking import FaceTracker

CROP = 96  # side of each crop in the strip, pixels


def frames_of(path: Path, first: int, count: int) -> list[np.ndarray]:
    info = probe_video(path)
    return [frame for _, frame in VideoReader(info, (info.width, info.height)).frames(0, first + count)][first:]


def mouth_boxes(frames: list[np.ndarray], fps: float) -> list[tuple[int, int, int]]:
    """(centre x, centre y, side) of a square around the mouth and chin of each frame."""
    tracker = FaceTracker(fps, tracker_settings(load_config(environ={}).media))
    boxes = []
    try:
        for frame in frames:
            points = tracker.track(frame)
            if points is None:
                boxes.append(boxes[-1] if boxes else (frame.shape[1] // 2, frame.shape[0] // 2, CROP))
                continue
            centre = (points[lm.UPPER_LIP_INNER] + points[lm.LOWER_LIP_INNER]) / 2
            boxes.append((int(centre[0]), int(centre[1]), int(0.6 * lm.face_size(points))))
    finally:
        tracker.close()
    return boxes


def crop(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    x, y, side = box
    half = side // 2
    padded = cv2.copyMakeBorder(frame, half, half, half, half, cv2.BORDER_REPLICATE)
    return cv2.resize(padded[y:y + side, x:x + side], (CROP, CROP), interpolation=cv2.INTER_AREA)


def main(argv: list[str]) -> None:
    out, first, count, videos = Path(argv[0]), int(argv[1]), int(argv[2]), [Path(v) for v in argv[3:]]
    reference = frames_of(videos[0], first, count)
    boxes = mouth_boxes(reference, probe_video(videos[0]).fps)
    rows = []
    for video in videos:
        frames = reference if video == videos[0] else frames_of(video, first, count)
        rows.append(np.concatenate([crop(frame, box) for frame, box in zip(frames, boxes, strict=False)], axis=1))
    cv2.imwrite(str(out), np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main(sys.argv[1:])
