"""A first render's analysis reads only parts of each decoded frame: the face mesh's crop is warped from the I420
planes, a bank entry converts only the lower face it keeps. What it gets is what the whole BGR frame gives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from heygem.pipeline import regions, samples, tracking
from heygem.pipeline.media import VideoReader, probe_video, to_bgr
from heygem.pipeline.mouthbank import BankBuilder, BankSettings
from tests.media import FPS, astronaut_video

TRACKER = tracking.TrackerSettings(0.5, 1.7, 192, 1.5, 6.0)


def as_planes(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)


@pytest.mark.parametrize(("height", "width"), [(720, 1280), (722, 1282), (96, 62), (63, 81)])
def test_a_part_of_a_frame_converts_and_warps_as_the_whole_frame(height: int, width: int) -> None:
    rng = np.random.default_rng(height)
    # I420 planes where the size allows them, else BGR (as VideoReader.compact_frames yields either).
    image = rng.integers(0, 256, (height * 3 // 2, width) if height % 2 == 0 and width % 2 == 0 else (height, width, 3),
                         np.uint8)
    whole = to_bgr(image)
    assert regions.frame_size(image) == (width, height)
    for _ in range(60):
        # A crop of any size anywhere, the frame's edges and beyond included; a turned and scaled lower face.
        centre, side = rng.uniform(-0.3, 1.3, 2) * (width, height), rng.uniform(10, 700)
        scale = 192 / side
        crop = np.array([[scale, 0, 96 - centre[0] * scale], [0, scale, 96 - centre[1] * scale]], np.float32)
        angle = rng.uniform(-0.3, 0.3)
        turned = np.array([[np.cos(angle) * 1.1, -np.sin(angle), rng.uniform(-width - 200, 200)],
                           [np.sin(angle), np.cos(angle) * 0.9, rng.uniform(-height - 200, 200)]])
        for matrix, size, border in ((crop, (192, 192), cv2.BORDER_CONSTANT), (turned, (70, 50), cv2.BORDER_REPLICATE)):
            part, x0, y0 = regions.bgr_region(image, regions.source_box(matrix, size))
            assert np.array_equal(part, whole[y0:y0 + part.shape[0], x0:x0 + part.shape[1]])
            assert part.shape[0] * part.shape[1] < whole.shape[0] * whole.shape[1] or min(width, height) < 100
            expected = cv2.warpAffine(whole, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border)
            warped = cv2.warpAffine(part, regions.warp_matrix_from(matrix, (x0, y0)), size,
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)
            assert np.array_equal(warped, expected)


def test_a_face_mesh_crop_from_the_planes_is_the_crop_from_the_bgr_frame_within_a_few_levels() -> None:
    frame = next(samples.moving_portrait_frames(1, FPS, (640, 360)))
    for side, centre in ((300, (320, 170)), (240, (20, 340))):  # the face, and a crop past the frame's corner
        scale = 192 / side
        matrix = np.array([[scale, 0, 96 - centre[0] * scale], [0, scale, 96 - centre[1] * scale]], np.float32)
        planes = as_planes(frame)
        from_bgr = regions.warp_rgb(to_bgr(planes), matrix, (192, 192))
        assert np.array_equal(from_bgr, cv2.cvtColor(cv2.warpAffine(to_bgr(planes), matrix, (192, 192)),
                                                     cv2.COLOR_BGR2RGB))
        difference = np.abs(regions.warp_rgb(planes, matrix, (192, 192)).astype(np.int16) - from_bgr)
        # Chroma interpolated from its own samples instead of repeated over 2x2 pixels: off only at colour edges
        # (the astronaut's badges; a crop half a pixel off would differ by 5.8 levels on average here, 45 at p99).
        assert difference.mean() < 2.5 and np.percentile(difference, 99) <= 24


def test_a_bank_entry_from_the_planes_is_the_entry_from_the_bgr_frame() -> None:
    frames = list(samples.moving_portrait_frames(3, FPS, (640, 360)))
    tracker = tracking.FaceTracker(FPS, TRACKER)
    try:
        points = [tracker.track(frame) for frame in frames]
    finally:
        tracker.close()
    settings = BankSettings(max_entries=10, jump_cost=1.0, closed_gap=0.012)
    from_planes, from_bgr = BankBuilder(settings, 3), BankBuilder(settings, 3)
    for index, (frame, found) in enumerate(zip(frames, points, strict=True)):
        assert found is not None
        planes = as_planes(frame)
        from_planes.add(index, planes, found)
        from_bgr.add(index, to_bgr(planes), found)
    for entry, expected in zip(from_planes.entries, from_bgr.entries, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(entry, expected, strict=True))


def test_the_tracker_converts_no_whole_frame_while_it_follows_the_face(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe_video(astronaut_video(tmp_path / "person.mp4", seconds=1.0, size=(256, 256)))
    decoded = list(VideoReader(info, (256, 256)).compact_frames())
    assert decoded[0][1].ndim == 2  # I420 planes
    whole: list[int] = []
    monkeypatch.setattr(tracking, "to_bgr", lambda image: whole.append(1) or to_bgr(image))
    tracker, again = tracking.FaceTracker(info.fps, TRACKER), tracking.FaceTracker(info.fps, TRACKER)
    try:
        from_planes = [tracker.track(planes) for _, planes in decoded]
        assert len(whole) == 1  # the first frame's face detection
        from_bgr = [again.track(to_bgr(planes)) for _, planes in decoded]
    finally:
        tracker.close()
        again.close()
    distance = np.array([np.linalg.norm(a - b, axis=1) for a, b in zip(from_planes, from_bgr, strict=True)])
    assert distance.mean() < 0.5 and distance.max() < 3
