"""The built-in engine's parts: speech to mouth cues, and the mouth warp on single frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heygem.config import MeshWarpConfig, load_config
from heygem.engines.meshwarp import CoarseGrid, MeshWarpEngine, MouthFrame, region_of_interest
from heygem.engines.registry import DEFAULT_ENGINE, resolve_engine
from heygem.options import TaskOptions
from heygem.pipeline import samples, tracking
from heygem.pipeline.media import SAMPLE_RATE
from heygem.pipeline.mouthcues import CueSettings, mouth_cues
from tests.media import BREATH_AT, BURSTS, FPS, render


@pytest.fixture(scope="module")
def settings() -> MeshWarpConfig:
    return load_config(environ={}).meshwarp


def cue_settings(settings: MeshWarpConfig, **changes: float) -> CueSettings:
    values = {name: getattr(settings, name) for name in CueSettings.__dataclass_fields__}
    return CueSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return samples.speech_like_audio(5.0, BURSTS, breath_at=BREATH_AT)


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """One still frame of the portrait and its landmarks (tracked over a few frames so smoothing settles)."""
    frame = next(samples.moving_portrait_frames(1, FPS))
    tracker = tracking.FaceTracker(FPS, tracking.TrackerSettings(0.5, 1.7, 192, 1.5, 6.0))
    points = None
    for _ in range(3):
        points = tracker.track(frame)
    tracker.close()
    assert points is not None
    return frame, points


def frame_indices(spans: tuple[tuple[float, float], ...], margin: float) -> np.ndarray:
    return np.concatenate([np.arange(round((a + margin) * FPS), round((b - margin) * FPS)) for a, b in spans])


def test_default_engine_is_meshwarp_on_cpu() -> None:
    engine = resolve_engine(DEFAULT_ENGINE)
    assert engine is MeshWarpEngine
    assert engine.name == "meshwarp" and engine.device == "cpu" and engine.gpu_memory_gb == 0


def test_cues_open_in_speech_and_close_in_silence(speech: np.ndarray, settings: MeshWarpConfig) -> None:
    cues = mouth_cues(speech, FPS, 125, cue_settings(settings))
    assert cues.openness.shape == cues.shape.shape == (125,)
    assert np.mean(cues.openness[frame_indices(BURSTS, 0.1)]) > 0.35
    silences = ((0.0, 0.4), (1.4, 2.0), (2.6, 3.2), (4.4, 5.0))
    assert np.max(cues.openness[frame_indices(silences, 0.16)]) < 0.01
    assert np.all((cues.shape >= -1) & (cues.shape <= 1))
    assert np.ptp(cues.shape[frame_indices(BURSTS, 0.1)]) > 0.5, "vowels change: shape must move"


def test_silence_and_breath_keep_the_mouth_closed(settings: MeshWarpConfig) -> None:
    quiet = samples.speech_like_audio(3.0, (), breath_at=1.0)
    assert np.max(mouth_cues(quiet, FPS, 75, cue_settings(settings)).openness) == 0.0
    silent = np.zeros(3 * SAMPLE_RATE, np.float32)
    assert np.max(mouth_cues(silent, FPS, 75, cue_settings(settings)).openness) == 0.0


def test_mouth_opens_fast_closes_slower_and_leads(settings: MeshWarpConfig) -> None:
    audio = samples.speech_like_audio(3.0, ((1.0, 2.0),))
    base = cue_settings(settings, lead_ms=0.0)
    openness = mouth_cues(audio, 100.0, 300, base).openness  # 10 ms frames for timing resolution
    open_frames = np.flatnonzero(openness > 0.05)
    rise = open_frames[0]
    fall = open_frames[-1]
    assert abs(rise - 100) <= 4, "opens when the voice starts"
    assert fall - 200 >= 2, "closes after the voice stops, not before"
    led = mouth_cues(audio, 100.0, 300, cue_settings(settings, lead_ms=60.0)).openness
    assert np.flatnonzero(led > 0.05)[0] == pytest.approx(rise - 6, abs=1)


def measured(frame: np.ndarray) -> np.ndarray:
    tracker = tracking.FaceTracker(FPS, tracking.TrackerSettings(0.5, 1.7, 192, 1.5, 6.0))
    points = tracker.track(frame)
    tracker.close()
    assert points is not None
    return points


def test_target_opening_replaces_the_input_mouth(face: tuple[np.ndarray, np.ndarray],
                                                 settings: MeshWarpConfig) -> None:
    source_opening = tracking.mouth_opening(face[1])
    wide = tracking.mouth_opening(measured(render(face, settings, 0.9)))
    closed = tracking.mouth_opening(measured(render(face, settings, 0.0)))
    # The mesh counts the synthesised upper teeth partly as lip, so it reads less than the drawn opening.
    assert wide > source_opening + 0.03
    assert closed < source_opening - 0.08
    assert wide > closed + 0.12


def test_rounded_vowels_narrow_the_mouth(face: tuple[np.ndarray, np.ndarray], settings: MeshWarpConfig) -> None:
    def width(frame: np.ndarray) -> float:
        points = measured(frame)
        return float(np.linalg.norm(points[tracking.MOUTH_RIGHT] - points[tracking.MOUTH_LEFT]))

    # Read back by the mesh, as a viewer (and bench.mouth_quality) sees it: "oo" clearly narrower than "ee".
    rounded, spread = width(render(face, settings, 0.4, shape=-1.0)), width(render(face, settings, 0.4, shape=1.0))
    assert rounded / spread <= 0.92, (rounded, spread)


def test_nothing_outside_the_lower_face_changes(face: tuple[np.ndarray, np.ndarray],
                                                settings: MeshWarpConfig) -> None:
    frame, points = face
    out = render(face, settings, 1.0)
    mouth = MouthFrame.of(points)
    roi = region_of_interest(mouth, mouth.local(points.astype(np.float64)), frame.shape)
    assert roi is not None
    x0, y0, x1, y1 = roi
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside])
    # Above the nose tip nothing changes even inside the box (a few pixels of margin for the coarse fields).
    top = int(points[tracking.NOSE_TIP, 1] - 0.25 * mouth.scale)
    assert np.array_equal(out[:top], frame[:top])
    assert not np.array_equal(out[y0:y1, x0:x1], frame[y0:y1, x0:x1])


def test_rendering_is_deterministic_and_smooth_over_small_changes(face: tuple[np.ndarray, np.ndarray],
                                                                 settings: MeshWarpConfig) -> None:
    first, again = render(face, settings, 0.5), render(face, settings, 0.5)
    assert np.array_equal(first, again)
    nearby = render(face, settings, 0.52)
    # A 2 % change of openness moves few pixels by much: no flicker from tiny cue changes.
    assert np.mean(np.abs(first.astype(int) - nearby.astype(int)) > 30) < 0.002


def test_fields_upsampled_over_the_whole_box_match_those_of_a_part() -> None:
    # warp_region upsamples its coarse fields over the whole box with one resize and near the lips with an affine
    # warp of just that part: both must put the grid's samples at the same pixels.
    grid = CoarseGrid((40, 30, 257, 191), 31, 23)
    values = np.random.default_rng(0).normal(size=(23, 31, 2)).astype(np.float32)
    values = cv2.GaussianBlur(values, (5, 5), 1.5)  # smooth, as the displacement fields are
    part = (90, 70, 180, 140)
    whole = grid.upsample_whole(values)[part[1] - 30:part[3] - 30, part[0] - 40:part[2] - 40]
    assert whole.shape == (70, 90, 2)
    # The affine warp interpolates in 32nds of a cell.
    assert np.abs(whole - grid.upsample(values, part)).max() < np.abs(values).max() / 16


def test_intensity_comes_from_the_task_or_else_the_config() -> None:
    # The range is TaskOptions' to check (tests/test_options.py), the default filled once at submit
    # (TaskOptions.resolve); the engine takes the resolved value.
    audio = np.zeros(SAMPLE_RATE, np.float32)
    config = load_config(environ={}, overrides={"meshwarp": {"mouth_intensity": 1.4}})
    engine = MeshWarpEngine(config)
    for given, intensity in ((TaskOptions(mouth_intensity=0.5), 0.5), (TaskOptions(), 1.4)):
        assert engine.audio_features(audio, FPS, 25, given.resolve(config.option_defaults)).intensity == intensity
