"""What makes a render with the person's own mouth fast: the speech analysed beside the video, the video decoded
once on a first render, no tracking on a second one; and the same result as the plain order gives."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from heygem.cli.generate import generate_video
from heygem.engines.meshwarp import MeshWarpEngine
from heygem.errors import InputError
from heygem.options import TaskOptions
from heygem.pipeline import analysis, media, phone_decoder, phones, tracking
from heygem.pipeline import engine as engine_contract
from heygem.pipeline.analysis import FrameTail
from heygem.pipeline.engine import Job
from heygem.pipeline.generate import _DONE, FrameFeed, plan_segments, tracker_settings
from heygem.pipeline.media import SAMPLE_RATE, VideoReader, probe_video, read_audio, to_bgr
from heygem.pipeline.mouthbank import BankBuilder, BankSettings
from tests.conftest import ConfigFactory
from tests.media import QuietReporter, astronaut_video, frames_of, speech_wav
from tests.supervision import wait_until
from tests.test_mouthbank import geometry_bank

SIDE = 256


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A 1 s face video and 1.6 s of speech: the output plays the video forward, then backward."""
    return (astronaut_video(tmp_path / "person.mp4", seconds=1.0, size=(SIDE, SIDE)),
            speech_wav(tmp_path / "speech.wav", 1.6, ((0.2, 0.7), (0.9, 1.4)), breath=False))


class Recorder(QuietReporter):
    def __init__(self) -> None:
        self.stages: list[str] = []

    def stage(self, name: str) -> None:
        self.stages.append(name)


def count_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the frames every VideoReader decodes from now on (analysis and rendering alike)."""
    decoded: list[int] = []
    real = VideoReader.compact_frames

    def counted(self: VideoReader, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for item in real(self, start, stop):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(VideoReader, "compact_frames", counted)
    return decoded


def render(config: Any, video: Path, audio: Path, out: Path, reporter: Recorder | None = None) -> dict[str, Any]:
    job = Job(code=out.stem, audio_path=audio, video_path=video, result_path=out, work_dir=out.parent / out.stem,
              options=TaskOptions().resolve(config.option_defaults), config=config)
    return MeshWarpEngine(config).run(job, reporter or Recorder())


@pytest.mark.slow
def test_a_first_render_decodes_the_video_once_and_renders_the_same_frames(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs
    decoded = count_decoded(monkeypatch)
    kept = render(make_config(media={"frame_buffer_mb": 64}), video, audio, tmp_path / "kept.mp4")
    # 25 frames analysed; the forward pass renders them from the analysis's tail, the backward pass decodes its 15.
    assert kept["video_analysis"] == "computed" and len(decoded) == 25 + 15
    decoded.clear()
    unbuffered = make_config(media={"frame_buffer_mb": 0, "analysis_cache_mb": 0})
    again = render(unbuffered, video, audio, tmp_path / "plain.mp4")
    assert again["video_analysis"] == "computed" and len(decoded) == 25 + 25 + 15
    assert all(np.array_equal(a, b) for a, b in zip(frames_of(tmp_path / "kept.mp4"),
                                                     frames_of(tmp_path / "plain.mp4"), strict=True))


@pytest.mark.slow
def test_a_second_render_of_a_video_neither_tracks_nor_imports_the_tracker(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs
    config = make_config()
    assert render(config, video, audio, tmp_path / "first.mp4")["video_analysis"] == "computed"
    tracked: list[int] = []
    monkeypatch.setattr(tracking.FaceTracker, "track", lambda self, frame: tracked.append(1))
    monkeypatch.setattr(engine_contract, "import_mediapipe", lambda: tracked.append(1))
    decoded = count_decoded(monkeypatch)
    engine = MeshWarpEngine(config)
    engine.load(Recorder())
    job = Job(code="second", audio_path=audio, video_path=video, result_path=tmp_path / "second.mp4",
              work_dir=tmp_path / "second", options=TaskOptions().resolve(config.option_defaults), config=config)
    assert engine.run(job, Recorder())["video_analysis"] == "cached"
    assert tracked == [] and len(decoded) == 25 + 15


def test_the_phones_from_the_child_process_are_those_of_the_decoder_itself(tmp_path: Path) -> None:
    audio = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    audio[: audio.size // 2] = np.sin(np.arange(audio.size // 2) * 0.12) * 0.3
    recognised = phones.recognise_phones(audio)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    with open(tmp_path / "lines", "wb") as lines:
        phone_decoder.decode(pcm, [(0, audio.size)], lines)
    direct = json.loads((tmp_path / "lines").read_bytes().splitlines()[0])
    assert [(phone.label, phone.start, phone.end) for phone in recognised] == [tuple(item) for item in direct]
    assert recognised


def test_a_failing_speech_analysis_is_named_as_such(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs

    def broken(*args: object) -> None:
        raise ValueError("no phones")

    monkeypatch.setattr(MeshWarpEngine, "audio_features", broken)
    reporter = Recorder()
    with pytest.raises(ValueError, match="no phones"):
        render(make_config(), video, audio, tmp_path / "broken.mp4", reporter)
    # The speech failed while the video was analysed: the task's failure names the speech, not the video.
    assert reporter.stages == ["reading inputs", "analysing audio", "analysing video", "analysing audio"]


def test_the_frame_tail_holds_twice_the_frames_as_decoded_planes_and_gives_back_those_decoding_gives(
        inputs: tuple[Path, Path]) -> None:
    video, _ = inputs
    reader = VideoReader(probe_video(video), (SIDE, SIDE))
    tail = FrameTail(max_bytes=5 * SIDE * SIDE * 3)  # five BGR frames' worth
    for grid_index, compact in reader.compact_frames():
        tail.add(grid_index, compact)
    assert len(tail) == 10 and tail.start() == 15
    for grid_index, frame in reader.frames(15, 25):
        kept_index, kept = tail.take()
        assert kept_index == grid_index and np.array_equal(to_bgr(kept), frame)
    assert len(tail) == 0 and tail.nbytes == 0


def test_the_frame_tail_restarts_when_the_frames_change_layout() -> None:
    tail = FrameTail(max_bytes=1000)
    planes = np.zeros((6, 4), np.uint8)  # I420 of a 4x4 frame
    tail.add(0, planes)
    tail.add(1, planes + 1)
    tail.add(2, np.full((4, 4, 3), 9, np.uint8))  # BGR from here on (a stream that changes its pixel format)
    assert len(tail) == 1 and tail.start() == 2
    grid_index, frame = tail.take()
    assert grid_index == 2 and np.array_equal(to_bgr(frame), np.full((4, 4, 3), 9, np.uint8))



BANK = BankSettings(max_entries=100, jump_cost=3.0, closed_gap=0.02)


def test_the_analysis_tracking_thread_only_tracks_and_gives_what_tracking_alone_gives(
        inputs: tuple[Path, Path], make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The face mesh waits on MediaPipe's threads for every frame, so the thread that tracks sets a first render's
    analysis time: the bank's entries and the frame tail are filled beside it, and the result is the same as
    tracking and collecting frame by frame in one thread."""
    video, _ = inputs
    info, settings = probe_video(video), tracker_settings(make_config().media)
    threads: dict[str, set[str]] = {"track": set(), "entry": set(), "tail": set()}

    def recorded(name: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            threads[name].add(threading.current_thread().name)
            return real(*args)
        return call

    monkeypatch.setattr(tracking.FaceTracker, "track", recorded("track", tracking.FaceTracker.track))
    monkeypatch.setattr(BankBuilder, "add", recorded("entry", BankBuilder.add))
    monkeypatch.setattr(FrameTail, "add", recorded("tail", FrameTail.add))
    tail = FrameTail(max_bytes=1 << 30)
    found = analysis.analyse_video(info, (SIDE, SIDE), settings, BANK, tail)
    assert len(threads["track"]) == 1 and threads["track"].isdisjoint(threads["entry"] | threads["tail"])
    assert len(tail) == info.frame_count == len(found.bank)

    monkeypatch.undo()
    tracker, builder = tracking.FaceTracker(info.fps, settings), BankBuilder(BANK, info.frame_count)
    try:
        for grid_index, frame in VideoReader(info, (SIDE, SIDE)).frames():
            points = tracker.track(frame)
            assert points is not None and np.array_equal(points, found.landmarks[grid_index])
            builder.add(grid_index, frame, points)
    finally:
        tracker.close()
    for name, array in analysis.to_arrays(analysis.VideoAnalysis(found.landmarks, builder.bank())).items():
        assert np.array_equal(array, analysis.to_arrays(found)[name]), name


def test_a_failing_bank_entry_fails_the_analysis(inputs: tuple[Path, Path], make_config: ConfigFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    video, _ = inputs

    def broken(self: BankBuilder, grid_index: int, frame: np.ndarray, points: np.ndarray | None) -> None:
        if grid_index == 3:
            raise MemoryError("no room for the entry")

    monkeypatch.setattr(BankBuilder, "add", broken)
    with pytest.raises(MemoryError, match="no room"):
        analysis.analyse_video(probe_video(video), (SIDE, SIDE), tracker_settings(make_config().media), BANK)


def test_the_frame_tail_of_a_short_video_takes_room_for_its_frames_only() -> None:
    """The tail's block is mapped whole when the first frame comes (cheaper than a page fault per 4 KB), so it
    holds no more slots than the analysis expects frames."""
    tail = FrameTail(max_bytes=1 << 30)
    tail.expect(3)
    for grid_index in range(4):
        tail.add(grid_index, np.full((6, 4), grid_index, np.uint8))
    assert len(tail) == 3 and tail.start() == 1 and tail.nbytes == 3 * 24
    assert [tail.take()[0] for _ in range(3)] == [1, 2, 3]


def test_a_footage_mouth_shown_on_consecutive_frames_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    images = [np.full((6, 8, 3), value, np.uint8) for value in (40, 200)]
    bank = dataclasses.replace(geometry_bank(np.zeros(2), np.full(2, 0.4)),
                               patches=[cv2.imencode(".png", image)[1].tobytes() for image in images])
    decoded: list[int] = []
    real = cv2.imdecode

    def counted(*args: Any) -> np.ndarray:
        decoded.append(1)
        return real(*args)

    monkeypatch.setattr(cv2, "imdecode", counted)
    entries = (0, 0, 0, 1, 1, 0)
    shown = [bank.patch(entry) for entry in entries]
    assert len(decoded) == 3
    assert all(np.array_equal(patch, images[entry]) for patch, entry in zip(shown, entries, strict=True))
    with pytest.raises(ValueError, match="read-only"):
        shown[0][0, 0] = 0  # what stitching reads is never changed for the next frame


def test_the_command_line_and_the_face_tracker_import_only_what_a_render_uses() -> None:
    """Start-up is serial time of every CLI render: the task service's modules and the parts of MediaPipe no face
    tracking uses (other solutions, drawing helpers, the Tasks API with PortAudio) stay unimported, and a later
    import of one of them still gets the real module."""
    probe = (
        "import sys\n"
        "from heygem.cli import build_parser\n"
        "build_parser()\n"
        "from heygem.pipeline.tracking import import_mediapipe\n"
        "face_detection, face_mesh = import_mediapipe()\n"
        "loaded = [name for name in sys.modules if name.startswith(('heygem.supervisor', 'mediapipe.tasks', "
        "'matplotlib', 'sounddevice', 'mediapipe.python.solutions.'))]\n"
        "import mediapipe.python.solutions.hands as hands\n"
        "from mediapipe.tasks.python import vision\n"
        "print(sorted(loaded), face_mesh.FaceMesh.__name__, hands.Hands.__name__, vision.FaceLandmarker.__name__)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.split("\n")[0] == ("['mediapipe.python.solutions.face_detection', "
                                          "'mediapipe.python.solutions.face_mesh', "
                                          "'mediapipe.python.solutions.face_mesh_connections'] "
                                          "FaceMesh Hands FaceLandmarker")


def test_frames_decoded_while_the_speech_is_analysed_are_a_lead_that_is_not_kept_up_once_rendering_starts(
        inputs: tuple[Path, Path], make_config: ConfigFactory) -> None:
    video, _ = inputs
    info = probe_video(video)
    feed = FrameFeed(info, (SIDE, SIDE), plan_segments(info.frame_count, info.frame_count, "pingpong"),
                     make_config().media, None, FrameTail(0), ahead=20)
    try:
        wait_until(lambda: feed.frames.full(), 30, "the producer to decode its lead of 20 frames")
        feed.keep_ahead(3)
        waiting = []
        while (item := feed.frames.get()) is not _DONE:
            assert not isinstance(item, BaseException), item
            waiting.append(feed.frames.qsize())
    finally:
        feed.close()
    # The lead drains as frames are rendered; past it, the producer stays at most 3 frames ahead.
    assert waiting[:17] == list(range(19, 2, -1)) and max(waiting[17:]) <= 3 and len(waiting) == info.frame_count


def count_phone_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every phone decoding (child process) from now on."""
    threads: list[str] = []
    real = phones._decode

    def counted(*args: Any) -> list[phones.Phone]:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(phones, "_decode", counted)
    return threads


def test_a_cli_render_reads_its_speech_once_and_recognises_the_phones_once_ahead_of_the_engine(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs
    config = make_config()
    decodes = count_phone_decodes(monkeypatch)
    found: list[list[phones.Phone]] = []
    real = phones.recognise_phones
    monkeypatch.setattr(phones, "recognise_phones", lambda samples: found.append(real(samples)) or found[-1])
    probed: list[Path] = []
    real_probe = media.probe_audio
    monkeypatch.setattr(media, "probe_audio", lambda path, *args: probed.append(path) or real_probe(path, *args))
    generate_video(config, audio, video, tmp_path / "cli.mp4", None, TaskOptions())
    assert decodes == ["phones-ahead"] and len(found) == 1
    assert probed == [audio.resolve()]  # one read of the speech (a probe, then ffmpeg), for the phones and the job
    # What the job got is what decoding its own samples gives.
    assert found[0] == phones._decode(*phones._decoder_input(read_audio(audio, config.media.max_audio_duration_s)))


def test_speech_read_ahead_serves_only_its_own_file_unchanged_and_its_failure_reaches_the_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = (speech_wav(tmp_path / f"{name}.wav", 1.2, bursts, breath=False)
                     for name, bursts in (("first", ((0.2, 0.6),)), ("second", ((0.5, 1.0),))))
    missing = tmp_path / "missing.wav"
    monkeypatch.setattr(phones, "_AHEAD", [])  # none left by other tests' renders that failed before their speech
    decodes = count_phone_decodes(monkeypatch)
    phones.recognise_file_ahead(first, 60, 4096)
    phones.recognise_file_ahead(missing, 60, 4096)  # left to the job, which reports it
    with pytest.raises(InputError, match=r"missing\.wav"):
        phones.read_speech(missing, 60, 4096)
    own = phones.recognise_phones(phones.read_speech(second, 60, 4096))  # not read ahead: decoded for itself
    assert decodes.count("phones-ahead") <= 1 and decodes.count("MainThread") == 1
    samples = phones.read_speech(first, 60, 4096)
    assert not samples.flags.writeable  # the samples the phones are recognised from stay those the job renders
    assert phones.recognise_phones(samples) != own
    assert decodes.count("phones-ahead") == 1 and decodes.count("MainThread") == 1 and not phones._AHEAD

    phones.recognise_file_ahead(first, 60, 4096)
    ahead = phones._AHEAD[-1].samples.result()
    assert np.array_equal(ahead, samples)
    assert phones.read_speech(first, 30, 4096) is not ahead  # other limits: read as they say
    speech_wav(first, 1.2, ((0.6, 1.0),), breath=False)  # the file rewritten since it was read ahead
    assert not np.array_equal(phones.read_speech(first, 60, 4096), ahead)
    assert phones.recognise_phones(read_audio(first, 60)) != phones._AHEAD[-1].phones.result()

    def broken(*args: Any) -> list[phones.Phone]:
        raise RuntimeError("phone recognition failed: the decoder ran out of memory")

    monkeypatch.setattr(phones, "_AHEAD", [])
    monkeypatch.setattr(phones, "_decode", broken)
    phones.recognise_file_ahead(first, 60, 4096)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        phones.recognise_phones(phones.read_speech(first, 60, 4096))
    assert not phones._AHEAD
    for _ in range(6):  # renders that failed before their speech was analysed leave theirs, a few at most
        phones.recognise_file_ahead(tmp_path / "missing.wav", 60, 4096)
    assert len(phones._AHEAD) == 4
