"""The mouth bank: choosing the person's own mouths smoothly, stitching them in without a seam, closed lips
without teeth, and the cached analysis of a video (reuse, invalidation, bounds, concurrent workers)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import mouth_quality
from heygem.cli.generate import generate_video
from heygem.config import MeshWarpConfig, load_config
from heygem.engines import meshwarp
from heygem.options import TaskOptions
from heygem.pipeline import analysis, compositing, mouthbank, samples, tracking
from heygem.pipeline.analysis import AnalysisCache
from heygem.pipeline.generate import tracker_settings
from heygem.pipeline.media import VideoReader, probe_video
from heygem.pipeline.mouthbank import BankBuilder, BankSettings, MouthBank, WantedMouth
from heygem.pipeline.mouthcues import MouthCues
from tests.conftest import ConfigFactory, shared_media
from tests.media import FPS, astronaut_video, ffmpeg, render

SETTINGS = BankSettings(max_entries=400, jump_cost=1.0, closed_gap=0.012)
TRACKER = tracking.TrackerSettings(0.5, 1.7, 192, 1.5, 6.0)


def geometry_bank(gaps: np.ndarray, widths: np.ndarray) -> MouthBank:
    """A bank of consecutive source frames with the given geometry and no images (selection only)."""
    count = len(gaps)
    return MouthBank(frames=np.arange(count), landmarks=np.zeros((count, 468, 2), np.float32),
                     gap=gaps.astype(np.float32), width=widths.astype(np.float32),
                     turn=np.zeros(count, np.float32), teeth=np.zeros(count, np.float32),
                     dark=np.zeros(count, np.float32),
                     reference=np.zeros((len(mouthbank.STABLE_POINTS), 2), np.float32),
                     origin=np.zeros(2, np.float32), patches=[])


def cuts(path: np.ndarray) -> int:
    """How often the chosen source frame is neither the previous one nor the one after it."""
    step = np.diff(path)
    return int(np.sum((step != 0) & (step != 1)))


def test_selection_plays_runs_of_footage_instead_of_flickering_between_frames() -> None:
    rng = np.random.default_rng(7)
    # Source footage: a talking mouth, syllables about every 8 frames, lips meeting between some of them.
    time = np.arange(300)
    gaps = np.clip(0.05 * np.sin(2 * np.pi * time / 8) + 0.035, 0, None) + rng.normal(0, 0.002, 300).clip(0)
    widths = 0.4 + 0.02 * np.sin(2 * np.pi * time / 23)
    bank = geometry_bank(gaps, widths)
    # Wanted: another speech, at another rhythm, with noise as real cues have.
    frames = 200
    wanted_gap = np.clip(0.05 * np.sin(2 * np.pi * np.arange(frames) / 11) + 0.03, 0, None)
    wanted_gap += rng.normal(0, 0.004, frames)
    wanted = WantedMouth(gap=wanted_gap.astype(np.float32), width=np.full(frames, 0.4, np.float32),
                         closed=wanted_gap <= 0.0, turn=np.zeros(frames), own=np.full(frames, -1))
    path = mouthbank.select_entries(bank, wanted, SETTINGS)
    greedy = np.argmin(mouthbank.selection_costs(bank, wanted, SETTINGS.closed_gap), axis=1)
    assert cuts(greedy) > 150, "frame by frame, the nearest mouth jumps all over the footage"
    assert cuts(path) < cuts(greedy) / 4
    # Still the wanted shapes: the gap error stays within a fifth of an open mouth's gap on most frames.
    assert np.median(np.abs(bank.gap[path] - wanted_gap)) < 0.02
    # Lips that must meet get footage frames where they meet.
    closed = wanted.closed
    assert closed.any() and np.all(bank.gap[path[closed]] < SETTINGS.closed_gap + 0.004)


def test_selection_keeps_the_frames_own_mouth_where_it_fits() -> None:
    gaps = np.tile([0.0, 0.02, 0.05, 0.08, 0.05, 0.02], 20)
    bank = geometry_bank(gaps, np.full(len(gaps), 0.4))
    own = np.arange(len(gaps))
    wanted = WantedMouth(gap=gaps.astype(np.float32), width=np.full(len(gaps), 0.4, np.float32),
                         closed=gaps == 0, turn=np.zeros(len(gaps)), own=own)
    assert np.array_equal(mouthbank.select_entries(bank, wanted, SETTINGS), own)


def test_a_width_beyond_the_footage_does_not_cost_the_opening() -> None:
    # Footage: open mouths of usual width, and one wide mouth that is nearly closed.
    gaps = np.array([0.08] * 19 + [0.02])
    widths = np.array([0.36] * 19 + [0.40])
    bank = geometry_bank(gaps, widths)
    # A wide open "ee", wider than any footage mouth: the warp widens; the bank must keep the opening.
    wanted = WantedMouth(gap=np.full(1, 0.08, np.float32), width=np.full(1, 0.44, np.float32),
                         closed=np.zeros(1, bool), turn=np.zeros(1), own=np.full(1, -1))
    chosen = mouthbank.select_entries(bank, wanted, SETTINGS)
    assert bank.gap[chosen[0]] == pytest.approx(0.08)


def test_lips_that_must_meet_cut_to_a_closed_footage_mouth_rather_than_stay_on_a_nearly_closed_one() -> None:
    # Footage: talking, its mouth nearly closing (gap 0.014, just above the closed threshold) between syllables,
    # and truly closed (0.005) only at its end. An open mouth pressed shut by the warp still reads as parted lips
    # (0.013-0.017 of the face width on the talking clip), so a closure must show one of the closed frames.
    gaps = np.array([0.06, 0.04, 0.014, 0.04, 0.06] * 8 + [0.005, 0.005])
    bank = geometry_bank(gaps, np.full(len(gaps), 0.4))
    own = np.arange(40)
    wanted_gap = gaps[:40].copy()
    wanted_gap[[12, 27]] = 0.0  # an m over the footage's near-closures
    wanted = WantedMouth(gap=wanted_gap.astype(np.float32), width=np.full(40, 0.4, np.float32),
                         closed=wanted_gap == 0, turn=np.zeros(40), own=own)
    path = mouthbank.select_entries(bank, wanted, BankSettings(max_entries=400, jump_cost=3.0, closed_gap=0.012))
    assert np.all(bank.gap[path[[12, 27]]] < 0.012), bank.gap[path[[12, 27]]]
    # Elsewhere the footage plays on (or runs into its closed frames just before a closure): four cuts in all.
    assert cuts(path) <= 4 and np.mean(path == own) > 0.85


def test_lips_that_must_meet_take_the_most_firmly_closed_footage_mouth() -> None:
    # Footage: talking, with two closed mouths, one barely (0.010, under the 0.012 threshold) and one firmly shut
    # (0.004); an m over the talking part cuts to one of them. Stitched over another frame's jaw, a closed mouth
    # reads a little more parted than filmed (the barely closed ones 0.012-0.016 on the talking clip: parted).
    gaps = np.array([0.06, 0.04, 0.03, 0.04, 0.06] * 4 + [0.010, 0.004])
    bank = geometry_bank(gaps, np.full(len(gaps), 0.4))
    wanted_gap = gaps[:20].copy()
    wanted_gap[[7, 8]] = 0.0
    wanted = WantedMouth(gap=wanted_gap.astype(np.float32), width=np.full(20, 0.4, np.float32),
                         closed=wanted_gap == 0, turn=np.zeros(20), own=np.arange(20))
    path = mouthbank.select_entries(bank, wanted, BankSettings(max_entries=400, jump_cost=3.0, closed_gap=0.012))
    assert bank.gap[path[[7, 8]]].tolist() == pytest.approx([0.004, 0.004]), bank.gap[path[[7, 8]]]


def test_lips_that_must_meet_are_shown_as_filmed_only_where_they_meet_in_the_footage() -> None:
    # Footage with closed (gap 0.005), half-open and open mouths; the wanted mouths are those, and a closure
    # over a slightly parted footage mouth (gap 0.015: within the tolerance of an open match).
    gaps = np.array([0.005, 0.04, 0.08, 0.015])
    bank = geometry_bank(gaps, np.full(len(gaps), 0.4))
    wanted = WantedMouth(gap=np.array([0.0, 0.04, 0.08, 0.0], np.float32), width=np.full(len(gaps), 0.4, np.float32),
                         closed=np.array([True, False, False, True]), turn=np.zeros(len(gaps)),
                         own=np.full(len(gaps), -1))
    fitting = meshwarp.fits_as_it_is(bank, np.arange(len(gaps)), wanted, warp_settings())
    assert fitting.tolist() == [True, True, True, False]


def tracked(frame: np.ndarray, times: int = 1) -> np.ndarray:
    """The frame's landmarks, tracked `times` times over (so smoothing settles on a still frame)."""
    tracker = tracking.FaceTracker(FPS, TRACKER)
    found = [tracker.track(frame) for _ in range(times)]
    tracker.close()
    points = found[-1]
    assert points is not None
    return points


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    frame = next(samples.moving_portrait_frames(1, FPS))
    return frame, tracked(frame, times=3)


def warp_settings() -> MeshWarpConfig:
    return load_config(environ={}).meshwarp


def opened(frame: np.ndarray, points: np.ndarray, openness: float) -> np.ndarray:
    return render((frame, points), warp_settings(), openness)


def test_a_stitched_mouth_has_no_seam_and_takes_the_frames_lighting(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    frame, points = portrait
    # The bank's frame: the same face with its mouth closed, shot darker and shifted (other lighting, other pose).
    other = opened(frame, points, 0.0)
    other = np.clip(other.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)
    shift = np.float32([[1, 0, 6], [0, 1, -4]])
    other = cv2.warpAffine(other, shift, other.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    builder = BankBuilder(SETTINGS, 2)
    builder.add(0, frame, points)
    builder.add(1, other, tracked(other))
    bank = builder.bank()
    out = frame.copy()
    merged = mouthbank.stitch(out, points, bank, 1)
    assert merged is not None
    # The mouth is the bank's: closed where the frame's was open, as the mesh reads it back.
    assert tracking.mouth_opening(merged) < tracking.mouth_opening(points) - 0.08
    assert tracking.mouth_opening(tracked(out)) < tracking.mouth_opening(points) - 0.08
    # No seam: across the stitched region's edge the picture changes no faster than the frame itself does there.
    changed = np.abs(out.astype(np.int16) - frame.astype(np.int16)).max(axis=-1) > 2
    edge = cv2.dilate(changed.astype(np.uint8), np.ones((5, 5), np.uint8)) - cv2.erode(
        changed.astype(np.uint8), np.ones((5, 5), np.uint8))
    band = edge > 0

    def gradient(image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))

    assert gradient(out)[band].mean() <= gradient(frame)[band].mean() * 1.1 + 2
    # Lighting matched: the darker bank frame does not darken the skin around the mouth.
    assert abs(out[band].mean() - frame[band].mean()) < 4


def test_a_stitch_leaves_every_pixel_outside_its_mask_as_it_was(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    # The blend is OpenCV's weighted sum: where the mask is 0 the frame must come back to the last bit (and, where
    # it is 1, the bank's patch), not a level off from its rounding.
    frame, points = portrait
    other = cv2.warpAffine(opened(frame, points, 0.0), np.float32([[1, 0, 5], [0, 1, -3]]), frame.shape[1::-1],
                           borderMode=cv2.BORDER_REPLICATE)
    builder = BankBuilder(SETTINGS, 2)
    builder.add(0, frame, points)
    builder.add(1, other, tracked(other))
    bank = builder.bank()
    # The reference fit of every stitched frame, with its solver computed once per bank.
    fit = mouthbank.stable_affine(bank.reference, points[list(mouthbank.STABLE_POINTS)])
    assert np.allclose(bank.to_frame(points), fit, atol=1e-6)
    out = frame.copy()
    assert mouthbank.stitch(out, points, bank, 1) is not None
    face = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(points[list(tracking.JAW)]).astype(np.int32)), (1,))
    outside = cv2.dilate(face, np.ones((15, 15), np.uint8)) == 0
    assert np.array_equal(out[outside], frame[outside])
    assert np.any(out != frame)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    reversed_levels = np.ascontiguousarray(levels[::-1, ::-1])
    for alpha, expected in ((0.0, levels), (1.0, reversed_levels)):
        assert np.array_equal(compositing.blend(levels, reversed_levels, np.full((16, 16), alpha)), expected)


def closed_over(portrait: tuple[np.ndarray, np.ndarray], inside: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The portrait's mouth opened, `inside` painted between its lips, then closed by the warp; with the mask of
    its open lips (the band where the closed lips now meet, as wide as the opening was)."""
    frame, points = portrait
    open_frame = opened(frame, points, 0.5)
    open_points = tracked(open_frame)
    inner = np.concatenate([open_points[list(tracking.INNER_UPPER)], open_points[list(tracking.INNER_LOWER[::-1])]])
    cv2.fillPoly(open_frame, [np.round(inner).astype(np.int32)], inside)
    closed = opened(open_frame, open_points, 0.0)
    mouth = np.zeros(frame.shape[:2], np.uint8)
    outer = np.concatenate([open_points[list(tracking.OUTER_UPPER)], open_points[list(tracking.OUTER_LOWER[::-1])]])
    cv2.fillPoly(mouth, [np.round(outer).astype(np.int32)], 1)
    return closed, mouth > 0


def test_closed_lips_over_an_open_mouth_show_no_teeth(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    # An open mouth with white teeth filling the gap between the lips, as in a talking clip.
    closed, mouth = closed_over(portrait, (235, 240, 245))
    hsv = cv2.cvtColor(closed, cv2.COLOR_BGR2HSV)
    teeth = mouth & (hsv[..., 1] < 40) & (hsv[..., 2] > 200)
    assert teeth.sum() <= 3, f"{teeth.sum()} teeth-white pixels between closed lips"


def test_closed_lips_over_a_dark_open_mouth_meet_without_a_slit(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    # An open mouth with a near-black inside: closing it must not leave a dark slit between the lips, which a
    # viewer (and the face mesh) reads as parted lips.
    closed, mouth = closed_over(portrait, (18, 14, 22))
    value = cv2.cvtColor(closed, cv2.COLOR_BGR2HSV)[..., 2]
    lips = float(np.median(value[mouth]))
    dark = mouth & (value < 0.5 * lips)
    assert dark.sum() <= 3, f"{dark.sum()} dark pixels between closed lips (lips' value {lips})"


# A donor mouth's teeth and tongue in colours no face has, so the test can find them in the result.
DONOR_TEETH, DONOR_TONGUE = (250, 250, 150), (60, 50, 150)


def attached(frames: list[np.ndarray], landmarks: list[np.ndarray]) -> meshwarp.MeshWarpState:
    """The built-in engine's state for one output frame over a video of `frames` (analysed into a bank)."""
    builder = BankBuilder(SETTINGS, len(frames))
    for index, (frame, points) in enumerate(zip(frames, landmarks, strict=True)):
        builder.add(index, frame, points)
    still = np.zeros(1, np.float32)
    state = meshwarp.MeshWarpState(cues=MouthCues(still + 0.5, still, np.zeros(1, bool), np.zeros(1, bool)),
                                   intensity=1.0)
    engine = meshwarp.MeshWarpEngine(load_config(environ={}))
    return engine.attach_video(state, analysis.VideoAnalysis(landmarks=list(landmarks), bank=builder.bank()),
                               np.zeros(1, np.int64))


def painted_open_mouth(frame: np.ndarray, points: np.ndarray, openness: float, teeth_share: float,
                       teeth: tuple[int, int, int] = DONOR_TEETH,
                       tongue: tuple[int, int, int] = DONOR_TONGUE) -> tuple[np.ndarray, np.ndarray]:
    """The frame's mouth opened by the warp, the opening painted `teeth` in its upper `teeth_share` and `tongue`
    below; with its landmarks, the inner lips where the warp put them."""
    settings = warp_settings()
    wide = opened(frame, points, openness)
    mouth = meshwarp.MouthFrame.of(points)
    target = meshwarp.plan_mouth(mouth.local(points.astype(np.float64)), openness, 0.0, 1.0, settings)
    wide_points = points.copy()
    wide_points[list(tracking.INNER_UPPER)] = mouth.pixels(target.inner_upper)
    wide_points[list(tracking.INNER_LOWER)] = mouth.pixels(target.inner_lower)
    grid = meshwarp.local_grid(mouth, (0, 0, frame.shape[1], frame.shape[0]))
    upper, lower = meshwarp.lip_lines(grid[..., 0], target)
    corners = target.inner_upper[[0, -1], 0]
    inside = (grid[..., 1] > upper) & (grid[..., 1] < lower) & (grid[..., 0] > corners[0]) & (grid[..., 0] < corners[1])
    depth = (grid[..., 1] - upper) / np.maximum(lower - upper, 1e-3)
    wide[inside & (depth < teeth_share)] = teeth
    wide[inside & (depth >= teeth_share)] = tongue
    return wide, wide_points


def test_the_interior_comes_from_her_wide_open_mouth_that_shows_most_of_her_teeth(
        portrait: tuple[np.ndarray, np.ndarray]) -> None:
    frame, points = portrait
    # Her teeth as a small face in warm light shows them: lit less than her cheeks (0.85 of their luma).
    cheeks = np.round(points[[205, 425, 50, 280]]).astype(int)
    cheek_luma = float(np.median(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[cheeks[:, 1], cheeks[:, 0]]))
    teeth_luma = 0.85 * cheek_luma
    shaded_teeth = (round(0.95 * teeth_luma), round(teeth_luma), round(1.02 * teeth_luma))
    # Her footage: her widest mouth, a dark hole under a thin line of teeth (the head thrown back in a laugh);
    # a wide talking mouth, upper teeth over the tongue; a smile with closed teeth, all teeth but barely open.
    footage = [painted_open_mouth(frame, points, 0.7, 0.12, shaded_teeth, (14, 10, 18)),
               painted_open_mouth(frame, points, 0.6, 0.4, shaded_teeth),
               painted_open_mouth(frame, points, 0.3, 1.0, shaded_teeth)]
    builder = BankBuilder(SETTINGS, len(footage))
    for index, (image, image_points) in enumerate(footage):
        builder.add(index, image, image_points)
    bank = builder.bank()
    assert bank.gap[2] < 0.75 * bank.gap[0] <= bank.gap[1] < bank.gap[0]
    # Her teeth count as teeth, shaded as they are.
    assert bank.teeth[1] >= 0.3 and bank.teeth[2] >= 0.8, bank.teeth
    # The wide talking mouth fills openings: her own teeth, not the dark hole (nor the smile, whose closed teeth
    # leave nothing for an opening wider than its own but a painted shadow between them).
    assert mouthbank.interior_donor(bank, SETTINGS.closed_gap) == 1


def test_an_open_mouth_is_taken_from_footage_that_shows_her_teeth() -> None:
    # Footage: two open mouths of the same shape, one showing her teeth, one not (the tongue in the way, the head
    # turned), and a closed one.
    bank = dataclasses.replace(geometry_bank(np.array([0.08, 0.08, 0.004]), np.full(3, 0.4)),
                               teeth=np.array([0.0, 0.6, 0.0], np.float32))
    wanted = WantedMouth(gap=np.array([0.08, 0.0, 0.08], np.float32), width=np.full(3, 0.4, np.float32),
                         closed=np.array([False, True, False]), turn=np.zeros(3), own=np.full(3, -1))
    path = mouthbank.select_entries(bank, wanted, SETTINGS)
    assert path.tolist() == [1, 2, 1]


def coloured(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.array(colour, np.int16)).max(axis=-1) <= tolerance


def test_a_wider_opening_shows_the_persons_own_teeth_hanging_from_the_upper_lip(
        portrait: tuple[np.ndarray, np.ndarray]) -> None:
    frame, points = portrait
    # The footage: the mouth nearly closed (the frame shown), and once open with known teeth and tongue (the donor).
    closed = opened(frame, points, 0.05)
    closed_points = tracked(closed)
    wide, wide_points = painted_open_mouth(frame, points, 0.6, 0.5)
    state = attached([closed, wide], [closed_points, wide_points])
    out = closed.copy()
    meshwarp.render_mouth(out, closed_points, 0.9, 0.0, state, warp_settings())
    # Only around the mouth (the tongue's colour is not unlike a shadow in her hair).
    lips = closed_points[list(tracking.OUTER_UPPER + tracking.OUTER_LOWER)]
    (x0, y0), (x1, y1) = np.floor(lips.min(axis=0) - 10).astype(int), np.ceil(lips.max(axis=0) + 30).astype(int)
    box = np.zeros(out.shape[:2], bool)
    box[y0:y1, x0:x1] = True
    teeth, tongue = coloured(out, DONOR_TEETH) & box, coloured(out, DONOR_TONGUE) & box
    # The opening shows the footage's own teeth (not a painted cavity, not a synthetic band) under the upper lip,
    # and its tongue above the lower lip.
    donor_teeth = coloured(wide, DONOR_TEETH) & box
    assert teeth.sum() >= 0.5 * donor_teeth.sum(), f"{teeth.sum()} of the footage's {donor_teeth.sum()} teeth pixels"
    assert tongue.sum() >= 30, f"{tongue.sum()} pixels of the footage's tongue in the opening"
    teeth_rows, tongue_rows = np.nonzero(teeth)[0], np.nonzero(tongue)[0]
    assert np.percentile(teeth_rows, 90) < np.median(tongue_rows)
    # Upper teeth are not stretched with the opening: they are as tall as in the donor (in face units), however
    # wide the mouth opens.
    donor_height = np.ptp(np.nonzero(donor_teeth)[0])
    wider = closed.copy()
    meshwarp.render_mouth(wider, closed_points, 1.2, 0.0, state, warp_settings())
    assert abs(np.ptp(np.nonzero(coloured(wider, DONOR_TEETH) & box)[0]) - donor_height) <= 3
    # No seam where the footage's teeth give way to the shadow of an opening wider than its own: down the middle
    # of the opening, from the teeth to the tongue, no row steps by more than half the contrast between them.
    column = int(np.median(np.nonzero(teeth)[1]))
    rows = np.arange(int(teeth_rows.min()), int(tongue_rows.max()) + 1)
    luma = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[rows, column - 2:column + 3].mean(axis=1)
    contrast = float(luma.max() - luma.min())
    assert np.abs(np.diff(luma)).max() <= 0.5 * contrast
    # A closed mouth shows none of it: closing renders exactly as without the footage's open mouth.
    shut, shut_without = closed.copy(), closed.copy()
    meshwarp.render_mouth(shut, closed_points, 0.0, 0.0, state, warp_settings())
    meshwarp.render_mouth(shut_without, closed_points, 0.0, 0.0, dataclasses.replace(state, donor=None),
                          warp_settings())
    assert np.array_equal(shut, shut_without) and not (coloured(shut, DONOR_TEETH) & box).any()


def test_a_near_still_smile_opens_onto_her_own_teeth(portrait: tuple[np.ndarray, np.ndarray]) -> None:
    # The demo: a near-still portrait, so the bank holds one mouth, a smile showing her teeth.
    frames = list(samples.moving_portrait_frames(3, FPS))
    state = attached(frames, [tracked(frame, times=3) for frame in frames])
    frame, points = portrait
    own = mouth_quality.interior_shares(frame, points)
    assert own is not None
    shares = {}
    for openness in (0.5, 0.8):
        out = frame.copy()
        meshwarp.render_mouth(out, points, openness, 0.0, state, warp_settings())
        shares[openness] = mouth_quality.interior_shares(out, tracked(out))
    # As the bench measures it (bench.mouth_quality): a talking opening is as much her teeth as the goal asks
    # (the old warp opened a dark hole under a thin line of them), a wide one still shows her upper teeth, and
    # neither is a near-black hole.
    assert shares[0.5] is not None and shares[0.8] is not None
    assert shares[0.5][1] >= 0.7 * own[1], f"teeth share {shares[0.5][1]:.2f}, her own {own[1]:.2f}"
    assert shares[0.8][1] >= 0.1, f"teeth share {shares[0.8][1]:.2f} of a wide opening"
    assert max(shares[0.5][0], shares[0.8][0]) <= own[0] + 0.1


def small_video(path: Path, seconds: float = 0.4) -> Path:
    return astronaut_video(path, seconds=seconds, size=(256, 256))


def test_the_analysis_of_a_video_is_computed_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = analysis.analyse_video

    def counted(*args: object) -> analysis.VideoAnalysis:
        calls.append(args[0].path)  # type: ignore[attr-defined]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "analyse_video", counted)
    video = probe_video(small_video(tmp_path / "person.mp4"))
    cache = AnalysisCache(tmp_path / "analysis", 100)
    first = cache.analysis(video, (256, 256), TRACKER, SETTINGS)
    again = AnalysisCache(tmp_path / "analysis", 100).analysis(video, (256, 256), TRACKER, SETTINGS)
    assert len(calls) == 1 and not first.cached and again.cached
    assert len(again.landmarks) == len(first.landmarks) == video.frame_count
    assert all(a is not None and b is not None and np.array_equal(a, b)
               for a, b in zip(first.landmarks, again.landmarks, strict=True))
    assert len(again.bank) == len(first.bank) > 0 and again.bank.patches == first.bank.patches
    # Another processing size is another analysis; so is a new version of the analysis code.
    cache.analysis(video, (128, 128), TRACKER, SETTINGS)
    assert len(calls) == 2
    monkeypatch.setattr(analysis, "ANALYSIS_VERSION", analysis.ANALYSIS_VERSION + 1)
    assert not cache.analysis(video, (256, 256), TRACKER, SETTINGS).cached
    assert len(calls) == 3


def test_different_content_under_the_same_name_is_analysed_anew(tmp_path: Path) -> None:
    path = small_video(tmp_path / "person.mp4")
    cache = AnalysisCache(tmp_path / "analysis", 100)
    assert not cache.analysis(probe_video(path), (256, 256), TRACKER, SETTINGS).cached
    small_video(path, seconds=0.28)
    assert not cache.analysis(probe_video(path), (256, 256), TRACKER, SETTINGS).cached


def test_the_cache_stays_within_its_size_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    videos = [probe_video(small_video(tmp_path / f"person{index}.mp4", 0.2 + 0.04 * index)) for index in range(3)]
    folder = tmp_path / "analysis"
    cache = AnalysisCache(folder, 100)
    for video in videos:
        cache.analysis(video, (256, 256), TRACKER, SETTINGS)
    sizes = sorted(path.stat().st_size for path in folder.glob("*.npz"))
    # Room for two analyses: using the first again makes the second the least recently used.
    bounded = AnalysisCache(folder, (sizes[-1] + sizes[-2] + 1) / 2**20)
    first_key = analysis.analysis_key(videos[0], (256, 256), TRACKER, SETTINGS)
    assert bounded.analysis(videos[0], (256, 256), TRACKER, SETTINGS).cached
    bounded.analysis(videos[2], (256, 256), TRACKER, SETTINGS)
    bounded.analysis(videos[0], (256, 256), TRACKER, SETTINGS)
    bounded._evict(keep=folder / f"{first_key}.npz")
    left = {path.stem for path in folder.glob("*.npz")}
    assert first_key in left and len(left) <= 2
    assert sum(path.stat().st_size for path in folder.glob("*.npz")) <= bounded.max_bytes


@pytest.mark.slow
def test_concurrent_workers_analyse_a_video_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = analysis.analyse_video

    def counted(*args: object) -> analysis.VideoAnalysis:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "analyse_video", counted)
    video = probe_video(small_video(tmp_path / "person.mp4"))
    results: list[analysis.VideoAnalysis] = []
    workers = [threading.Thread(target=lambda: results.append(
        AnalysisCache(tmp_path / "analysis", 100).analysis(video, (256, 256), TRACKER, SETTINGS))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(calls) == 1 and len(results) == 3 and sum(result.cached for result in results) == 2
    assert not list((tmp_path / "analysis").glob(".partial-*"))


def mouth_figures(path: Path, points: list[np.ndarray | None], frames: range) -> tuple[list[int], list[float]]:
    """Per frame: teeth-white pixels around the lips (at the source's mouth); the change from the previous frame
    inside the mouth box (mean absolute difference)."""
    info = probe_video(path)
    teeth, change = [], []
    previous = None
    for index, frame in VideoReader(info, (info.width, info.height)).frames(frames.start, frames.stop):
        face = points[index]
        assert face is not None
        outer = np.concatenate([face[list(tracking.OUTER_UPPER)], face[list(tracking.OUTER_LOWER[::-1])]])
        mask = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
        hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
        teeth.append(int(((mask > 0) & (hsv[..., 1] < 45) & (hsv[..., 2] > 180)).sum()))
        x0, y0 = np.floor(outer.min(axis=0)).astype(int) - 10
        x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 10
        crop = frame[max(y0, 0):y1 + 30, max(x0, 0):x1].astype(np.float32)
        if previous is not None and previous.shape == crop.shape:
            change.append(float(np.abs(crop - previous).mean()))
        previous = crop
    return teeth, change


@pytest.mark.slow
def test_real_clip_gets_the_persons_own_mouth_and_reuses_the_analysis(tmp_path: Path,
                                                                      make_config: ConfigFactory) -> None:
    video = shared_media("video_talking_medium_skin.mp4")
    speeches = [tmp_path / "one.wav", tmp_path / "two.wav"]
    for source, target in zip(("speech_en_1.wav", "speech_en_2.wav"), speeches, strict=True):
        ffmpeg("-i", str(shared_media(source)), "-t", "2.4", str(target))
    config = make_config()
    first = generate_video(config, speeches[0], video, tmp_path / "one.mp4", None, TaskOptions())
    second = generate_video(config, speeches[1], video, tmp_path / "two.mp4", None, TaskOptions())
    assert first["video_analysis"] == "computed" and second["video_analysis"] == "cached"
    assert first["mouth_bank_frames"] == second["mouth_bank_frames"] >= 100
    # Where the lips are shut in the result, no teeth show between them (the old warp left a white line).
    info = probe_video(video)
    tracker = tracking.FaceTracker(info.fps, tracker_settings(config.media))
    result = probe_video(tmp_path / "one.mp4")
    closed = []
    try:
        for index, frame in VideoReader(result, (result.width, result.height)).frames():
            points = tracker.track(frame)
            if points is not None and mouthbank.mouth_geometry(points)[0] < 0.012:
                closed.append(index)
    finally:
        tracker.close()
    source_points = AnalysisCache(config.paths.analysis_dir, 100).analysis(
        info, (info.width, info.height), tracker_settings(config.media), SETTINGS).landmarks
    teeth, change = mouth_figures(tmp_path / "one.mp4", source_points, range(60))
    _, source_change = mouth_figures(video, source_points, range(60))
    assert len(closed) >= 3 and max(teeth[index] for index in closed) <= 10
    # The mouth changes from frame to frame about as much as the person's own mouth does in the footage.
    assert np.mean(change) <= 1.45 * np.mean(source_change)
