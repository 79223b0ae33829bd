"""Face tracking: which face is chosen, smoothing, small faces."""

from __future__ import annotations

import cv2
import numpy as np

from heygem.pipeline import samples, tracking
from heygem.pipeline.tracking import FaceTracker, OneEuroFilter, TrackerSettings, choose_face

SETTINGS = TrackerSettings(min_confidence=0.5, crop_scale=1.7, mesh_size=192, smooth_min_cutoff=1.5,
                           smooth_beta=6.0)


def test_the_largest_most_central_face_is_chosen_then_kept() -> None:
    small_central = (450.0, 250.0, 100.0, 100.0)
    large_side = (20.0, 200.0, 220.0, 220.0)
    duplicate = (30.0, 210.0, 200.0, 200.0)
    assert choose_face([small_central, large_side, duplicate], (1000, 600), None) == large_side
    # Once a face is followed it stays chosen, even when a larger one appears elsewhere.
    followed = (500.0, 300.0, 170.0)
    assert choose_face([small_central, large_side], (1000, 600), followed) == small_central


def test_one_euro_filter_steadies_noise_but_follows_motion() -> None:
    rng = np.random.default_rng(1)
    still = OneEuroFilter(25.0, 1.5, 6.0)
    noisy = [np.array([100.0, 100.0]) + rng.normal(0, 1.0, 2) for _ in range(100)]
    smoothed = np.array([still(point, scale=100.0) for point in noisy])
    assert np.std(smoothed[20:], axis=0).max() < 0.5 * np.std(np.array(noisy)[20:], axis=0).max()
    moving = OneEuroFilter(25.0, 1.5, 6.0)
    ramp = [np.array([100.0 + 8 * index, 100.0]) for index in range(40)]
    lag = ramp[-1][0] - [moving(point, scale=100.0) for point in ramp][-1][0]
    assert lag < 8, "a fast move must not trail by more than a frame's worth"


def test_two_faces_one_tracked_and_small_faces_found() -> None:
    portrait = samples.portrait()
    # A big portrait on the left and a small one on the right of a wide frame; the small face is ~50 px wide,
    # too small for the detector on the whole frame: it is found on a tile.
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100:612, 60:572] = portrait
    frame[300:556, 960:1216] = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    tracker = FaceTracker(25.0, SETTINGS)
    points = [tracker.track(frame) for _ in range(5)]
    tracker.close()
    assert all(p is not None for p in points)
    assert all(60 < p[tracking.NOSE_TIP, 0] < 572 for p in points if p is not None), "the larger face is followed"

    alone = np.full((720, 1280, 3), 90, np.uint8)
    alone[300:556, 960:1216] = frame[300:556, 960:1216]
    tracker = FaceTracker(25.0, SETTINGS)
    found = tracker.track(alone)
    tracker.close()
    assert found is not None and 960 < found[tracking.NOSE_TIP, 0] < 1216
