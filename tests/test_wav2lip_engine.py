"""The wav2lip engine through the shared pipeline, with stand-in models of the public signatures."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from heygem.cli import main
from heygem.config import Config
from heygem.engines.models import get_spec, model_path
from heygem.engines.registry import engine_availability, list_engines
from heygem.engines.wav2lip import Wav2LipEngine
from heygem.engines.wav2lip_face import crop_matrix, paste_lower_face
from heygem.errors import EngineUnavailableError, InputError
from heygem.options import TaskOptions
from heygem.pipeline.engine import FrameBatch, Job
from heygem.pipeline.media import VideoReader, probe_video, read_audio
from heygem.pipeline.tracking import (
    CHIN,
    JAW,
    LEFT_EYE_OUTER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_EYE_OUTER,
    FaceTracker,
    TrackerSettings,
)
from heygem.supervisor import TaskRequest, TaskState, TaskSupervisor
from tests.conftest import REPO_ROOT, ConfigFactory
from tests.media import FPS, SIZE, QuietReporter, speech_wav, video_with_faceless_gap
from tests.supervision import wait_final
from tests.wav2lip_standins import PAINT_BGR, image_model, write_standin

pytestmark = pytest.mark.slow

FRAMES = 30
FACELESS = 4  # the clip opens with frames without a face
SPEECH = ((0.3, 0.9),)  # voiced from 0.3 s to 0.9 s, silent around it: the stand-in's mouth bright, then dark
MODEL = get_spec("wav2lip_gan_96")


class RecordingReporter(QuietReporter):
    """What the supervisor would hear, kept in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def error(self, message: str) -> None:
        self.events.append(("error", message))

    def clear_error(self) -> None:
        self.events.append(("clear_error", None))

    def warn(self, message: str) -> None:
        self.events.append(("warn", message))

    def advance(self) -> None: ...

    def kinds(self, *names: str) -> list[tuple[str, Any]]:
        return [event for event in self.events if event[0] in names]


@dataclasses.dataclass(frozen=True)
class Clip:
    video: Path
    audio: Path
    frames: list[np.ndarray]  # as decoded from the video file
    landmarks: list[np.ndarray | None]


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    folder = tmp_path_factory.mktemp("wav2lip_clip")
    video = video_with_faceless_gap(folder / "portrait.mp4", FRAMES / FPS, gap=(0, FACELESS))
    audio = speech_wav(folder / "speech.wav", FRAMES / FPS, SPEECH, breath=False)
    info = probe_video(video)
    decoded = [frame for _, frame in VideoReader(info, (info.width, info.height)).frames()]
    tracker = FaceTracker(FPS, TrackerSettings(0.5, 1.7, 192, 1.5, 6.0))
    landmarks = [tracker.track(frame) for frame in decoded]
    tracker.close()
    return Clip(video, audio, decoded, landmarks)


def wav2lip_config(make_config: ConfigFactory, naming: str = "source_target", batch: int | str = "batch",
                   audio_first: bool = True, **wav2lip: Any) -> Config:
    config = make_config(models={"allow_unverified": True}, wav2lip={"device": "cpu", "batch_size": 8, **wav2lip})
    write_standin(model_path(MODEL, config), naming=naming, batch=batch, audio_first=audio_first)
    return config


def loaded_engine(config: Config) -> tuple[Wav2LipEngine, RecordingReporter]:
    engine, reporter = Wav2LipEngine(config), RecordingReporter()
    engine.load(reporter)
    return engine, reporter


def render_clip(engine: Wav2LipEngine, clip: Clip) -> list[np.ndarray]:
    """The engine's render hook over the whole clip, one pipeline batch."""
    features = engine.audio_features(read_audio(clip.audio, 60), FPS, FRAMES, TaskOptions())
    batch = FrameBatch(np.arange(FRAMES), [frame.copy() for frame in clip.frames], list(clip.landmarks))
    return engine.render(batch, features)


def mouth_box(landmarks: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns between the mouth corners, from just above the lips to the chin."""
    left, right = landmarks[MOUTH_LEFT], landmarks[MOUTH_RIGHT]
    top = int(min(left[1], right[1])) - 2
    return slice(top, int(landmarks[CHIN][1]) - 4), slice(int(left[0]) + 2, int(right[0]) - 2)


def above_eyes(landmarks: np.ndarray) -> slice:
    return slice(0, int(landmarks[LEFT_EYE_OUTER][1]) - 4)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_pipeline_changes_lower_face_only(make_config: ConfigFactory, clip: Clip, tmp_path: Path) -> None:
    config = wav2lip_config(make_config)
    engine, reporter = loaded_engine(config)
    job = Job("w2l", clip.audio, clip.video, tmp_path / "out.mp4", tmp_path / "work",
              TaskOptions().resolve(config.option_defaults), config)
    report = engine.run(job, reporter)

    assert report["device"] == "cpu" and report["model_state"] == "unverified" and report["frames"] == FRAMES
    assert report["frames_without_face"] == FACELESS
    assert any("unverified" in message for _, message in reporter.kinds("warn"))
    info = probe_video(job.result_path)
    assert (info.width, info.height) == SIZE and info.frame_count == FRAMES and info.has_audio
    output = [frame for _, frame in VideoReader(info, SIZE).frames()]
    cv2.imwrite(str(tmp_path / "frame.png"), np.hstack([clip.frames[12], output[12], output[27]]))

    # "Unchanged" allows for one more H.264 generation: flat grey shifts by about 3 levels per encode.
    for index in range(FACELESS):
        assert mean_difference(output[index], clip.frames[index]) < 4.0
    loud, quiet = 12, 27  # 0.48 s (speech) and 1.08 s (silence)
    for index in (loud, quiet):
        points = clip.landmarks[index]
        assert points is not None
        rows, columns = mouth_box(points)
        assert mean_difference(output[index][rows, columns], clip.frames[index][rows, columns]) > 25
        assert mean_difference(output[index][above_eyes(points)], clip.frames[index][above_eyes(points)]) < 4.0
        assert mean_difference(output[index][:, :40], clip.frames[index][:, :40]) < 4.0
    loud_rows, loud_columns = mouth_box(clip.landmarks[loud])  # type: ignore[arg-type]
    quiet_rows, quiet_columns = mouth_box(clip.landmarks[quiet])  # type: ignore[arg-type]
    green = int(np.argmax(PAINT_BGR))
    loud_green = output[loud][loud_rows, loud_columns, green].mean()
    assert loud_green > output[quiet][quiet_rows, quiet_columns, green].mean() + 40


@pytest.mark.parametrize(("naming", "batch", "audio_first"), [
    ("mel_video", "batch", True), ("sequences", "n", False), ("source_target", 1, True)])
def test_other_exports_render_identically(make_config: ConfigFactory, clip: Clip, naming: str, batch: Any,
                                          audio_first: bool) -> None:
    reference_engine, _ = loaded_engine(wav2lip_config(make_config))
    expected = render_clip(reference_engine, clip)
    engine, _ = loaded_engine(wav2lip_config(make_config, naming=naming, batch=batch, audio_first=audio_first))
    assert engine.io is not None and engine.io.fixed_batch == (batch if isinstance(batch, int) else None)
    rendered = render_clip(engine, clip)
    for got, want in zip(rendered, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_out_of_memory_halves_batch_and_recovers(make_config: ConfigFactory, clip: Clip) -> None:
    # An 8 MB arena holds the stand-in's tensors for 16 crops but not for 26.
    engine, reporter = loaded_engine(wav2lip_config(make_config, batch_size=64, memory_limit_gb=8 / 1024))
    rendered = render_clip(engine, clip)
    assert len(rendered) == FRAMES
    events = reporter.kinds("error", "clear_error")
    assert events[0][0] == "error" and "out of memory at batch 26" in events[0][1]
    assert events[-1] == ("clear_error", None)
    assert engine.batch_size <= 13 and engine.oom_halvings >= 1


def test_missing_corrupt_and_unverified_models(make_config: ConfigFactory) -> None:
    config = make_config(wav2lip={"device": "cpu"})
    availability = engine_availability("wav2lip", config)
    assert not availability.available and str(model_path(MODEL, config)) in availability.reason
    with pytest.raises(EngineUnavailableError, match="missing"):
        Wav2LipEngine(config).load(RecordingReporter())
    write_standin(model_path(MODEL, config))
    availability = list_engines(config)["wav2lip"]
    assert not availability.available and "HEYGEM_MODELS__ALLOW_UNVERIFIED=1" in availability.reason
    assert list_engines(config)["meshwarp"].available
    lenient = make_config(models={"allow_unverified": True}, wav2lip={"device": "cpu"})
    assert engine_availability("wav2lip", lenient).available
    model_path(MODEL, lenient).write_bytes(b"truncated download")
    assert "not a readable ONNX" in engine_availability("wav2lip", lenient).reason


def test_wrong_model_or_device_settings_are_unavailable(make_config: ConfigFactory) -> None:
    checkpoint = make_config(wav2lip={"model": "wav2lip_gan_pth"})
    assert "convert it to wav2lip_gan_96" in engine_availability("wav2lip", checkpoint).reason
    gpu_only = wav2lip_config(make_config, require_gpu=True)
    assert "no CUDA provider" in engine_availability("wav2lip", gpu_only).reason
    engine, reporter = loaded_engine(wav2lip_config(make_config, device="cuda"))
    assert engine.actual_device == "cpu"
    assert any("running on CPU" in message and "no CUDA provider" in message for _, message in reporter.kinds("warn"))
    other = make_config(models={"allow_unverified": True}, wav2lip={"device": "cpu"})
    model_path(MODEL, other).write_bytes(image_model())
    with pytest.raises(EngineUnavailableError, match=r"not a Wav2Lip export: inputs image\[1, 3, 96, 96\]"):
        Wav2LipEngine(other).load(RecordingReporter())


def test_supervised_task_succeeds_and_a_missing_model_is_refused(make_config: ConfigFactory, clip: Clip) -> None:
    config = wav2lip_config(make_config, device="auto")
    supervisor = TaskSupervisor(config).start()
    try:
        record = wait_final(supervisor, supervisor.submit(TaskRequest(clip.audio, clip.video, engine="wav2lip")), 120)
        assert record.state is TaskState.SUCCEEDED, record.message
        assert record.report["device"] == "cpu" and record.report["frames"] == FRAMES
        assert "unverified" in record.warning
        model_path(MODEL, config).unlink()
        with pytest.raises(InputError, match=r"engine 'wav2lip' is unavailable: model wav2lip_gan_96 is missing"):
            supervisor.submit(TaskRequest(clip.audio, clip.video, engine="wav2lip"))
    finally:
        supervisor.shutdown()


def test_paste_back_touches_only_the_lower_face(clip: Clip) -> None:
    frame, points = clip.frames[12], clip.landmarks[12]
    assert points is not None
    tilted = cv2.getRotationMatrix2D((SIZE[0] / 2, SIZE[1] / 2), 15, 1.0)
    frame = cv2.warpAffine(frame, tilted, SIZE, borderMode=cv2.BORDER_REPLICATE)
    points = points @ tilted[:, :2].T + tilted[:, 2]
    matrix = crop_matrix(points, 96, 1.1)
    eyes = np.array([points[LEFT_EYE_OUTER], points[RIGHT_EYE_OUTER]]) @ matrix[:, :2].T + matrix[:, 2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.5  # the crop is levelled
    assert 20 < eyes[0, 1] < 40 and 0 < eyes[0, 0] < eyes[1, 0] < 96

    painted = np.full((96, 96, 3), (255, 0, 255), np.uint8)
    pasted = paste_lower_face(frame, painted, matrix, points, 0.04)
    changed = np.abs(pasted.astype(int) - frame.astype(int)).sum(axis=2) > 0
    inside = np.zeros(changed.shape, np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(points[list(JAW)].astype(np.int32)), 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8))  # rounding of the outline's corners
    assert not (changed & (inside == 0)).any()
    mouth = ((points[MOUTH_LEFT] + points[MOUTH_RIGHT]) / 2).astype(int)
    assert np.abs(pasted[mouth[1], mouth[0]].astype(int) - (255, 0, 255)).max() < 10
    eyes_and_above = np.zeros(changed.shape, bool)
    eyes_and_above[: int(points[[LEFT_EYE_OUTER, RIGHT_EYE_OUTER], 1].max()) + 2] = True
    assert not (changed & eyes_and_above).any()


def test_generate_command_with_a_placed_model(clip: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    out = tmp_path / "result.mp4"
    command = ["generate", "--engine", "wav2lip", "--audio", str(clip.audio), "--video", str(clip.video),
               "--out", str(out)]
    monkeypatch.setenv("HEYGEM_MODELS__DIR", str(models))
    monkeypatch.setenv("HEYGEM_PATHS__DATA_DIR", str(tmp_path / "data"))
    assert main(command) == 2
    assert f"model wav2lip_gan_96 is missing: place wav2lip_gan_96.onnx at {models}" in capsys.readouterr().err

    write_standin(models / MODEL.file_name)
    environment = {**os.environ, "HEYGEM_MODELS__ALLOW_UNVERIFIED": "1"}
    finished = subprocess.run([sys.executable, "-m", "heygem", *command], env=environment, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "unverified" in finished.stderr and f"{FRAMES} frames" in finished.stderr
    info = probe_video(out)
    assert info.frame_count == FRAMES and info.has_audio
