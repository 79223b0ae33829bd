"""The mouth bench's pixel and landmark measures (bench/mouth_quality.py) on painted frames with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.mouth_quality import (
    INNER_OUTLINE,
    closed_bright_share,
    closure_figures,
    inner_gap,
    interior_shares,
    lip_width,
    width_ratio,
)
from heygem.pipeline import tracking as lm
from heygem.pipeline.phones import Phone

SKIN = (120, 150, 190)  # BGR, luma about 157


def face(gap: float) -> np.ndarray:
    """468 landmarks of a 200 px wide face whose inner lips (an ellipse 80 px wide) open `gap` pixels."""
    points = np.zeros((lm.LANDMARK_COUNT, 2), np.float32)
    points[lm.FACE_LEFT], points[lm.FACE_RIGHT] = (100, 150), (300, 150)
    points[205], points[425] = (140, 160), (260, 160)  # cheeks
    points[lm.MOUTH_LEFT], points[lm.MOUTH_RIGHT] = (155, 220), (245, 220)
    angles = np.linspace(np.pi, 3 * np.pi, len(INNER_OUTLINE), endpoint=False)  # left corner, over the top, back
    outline = np.stack([200 + 40 * np.cos(angles), 220 + gap / 2 * np.sin(angles)], axis=1)
    points[list(INNER_OUTLINE)] = outline
    points[lm.UPPER_LIP_INNER], points[lm.LOWER_LIP_INNER] = (200, 220 - gap / 2), (200, 220 + gap / 2)
    return points


def painted(points: np.ndarray, inside: tuple[int, int, int]) -> np.ndarray:
    """Skin, red lips 90 x 40 px around the mouth, and `inside` between the inner lips."""
    frame = np.full((400, 400, 3), SKIN, np.uint8)
    cv2.ellipse(frame, (200, 220), (45, 20), 0, 0, 360, (80, 70, 150), -1)
    cv2.fillPoly(frame, [np.round(points[list(INNER_OUTLINE)]).astype(np.int32)], inside)
    return frame


def test_gap_and_width_are_relative_to_the_face() -> None:
    assert inner_gap(face(20)) == pytest.approx(0.1)
    assert lip_width(face(20)) == pytest.approx(0.45)


def test_a_painted_dark_hole_and_teeth_read_as_such() -> None:
    points = face(30)
    dark, teeth = interior_shares(painted(points, (10, 10, 12)), points) or (None, None)
    assert dark == pytest.approx(1.0) and teeth == 0.0
    dark, teeth = interior_shares(painted(points, (215, 225, 230)), points) or (None, None)
    assert dark == 0.0 and teeth == pytest.approx(1.0)
    # Teeth are lit less than the cheeks: 80 % of the skin's luma still counts as teeth.
    dim = tuple(int(0.8 * channel) for channel in SKIN)
    assert interior_shares(painted(points, dim), points) == (0.0, pytest.approx(1.0))


def test_teeth_left_between_closed_lips_show_as_bright_pixels() -> None:
    points = face(3)
    lips_only = painted(points, (80, 70, 150))
    with_teeth = painted(points, (230, 235, 240))
    assert closed_bright_share(lips_only, points) == 0.0
    assert closed_bright_share(with_teeth, points) > 0.1


def test_pale_lips_on_a_pale_face_are_not_teeth() -> None:
    points = face(3)
    frame = np.full((400, 400, 3), (200, 215, 235), np.uint8)  # pale skin, luma about 220
    cv2.ellipse(frame, (200, 220), (45, 20), 0, 0, 360, (165, 160, 240), -1)  # pale pink lips, luma about 190
    assert closed_bright_share(frame, points) == 0.0
    cv2.fillPoly(frame, [np.round(points[list(INNER_OUTLINE)]).astype(np.int32)], (225, 232, 238))
    assert closed_bright_share(frame, points) > 0.1


def test_closures_count_when_the_gap_falls_to_a_quarter_of_the_open_vowels() -> None:
    fps = 25.0
    gaps = np.full(50, 0.1)
    phones = [Phone("AA", 0.0, 0.4), Phone("M", 0.4, 0.48), Phone("AA", 0.48, 0.8), Phone("P", 0.8, 0.86),
              Phone("AA", 0.86, 1.2), Phone("B", 1.2, 1.26), Phone("AA", 1.26, 1.6)]
    gaps[9] = 0.01  # a frame early for the M (frames 10-11): anticipation counts
    gaps[20:22] = 0.04  # the P only narrows
    gaps[30] = 0.02  # the B: 0.2 x the open vowels
    figures = closure_figures(gaps, phones, fps)
    assert figures == {"open_vowel_gap": 0.1, "closures": 3, "closures_met": pytest.approx(2 / 3, abs=0.001),
                       "vowels": 4, "vowels_closed": 0}
    gaps[36] = 0.02  # the middle of the last "ah" (1.43 s) shut: a false closure
    assert closure_figures(gaps, phones, fps)["vowels_closed"] == 1


def test_oo_narrower_than_ee_reads_below_one() -> None:
    widths = np.full(30, 0.45)
    widths[5], widths[20] = 0.36, 0.48
    phones = [Phone("UW", 0.16, 0.24), Phone("IY", 0.76, 0.84)]
    assert width_ratio(widths, phones, 25.0) == pytest.approx(0.75)
