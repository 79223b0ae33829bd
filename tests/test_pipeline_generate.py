"""End to end through `python -m heygem generate` (in-process), checked with a face-mesh pass over the output."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from heygem.cli import main
from heygem.cli.generate import ConsoleReporter
from heygem.config import Config, load_config
from heygem.engines.meshwarp import MeshWarpEngine
from heygem.options import TaskOptions
from heygem.pipeline import tracking
from heygem.pipeline.engine import Job
from heygem.pipeline.evaluate import evaluate, track_video
from heygem.pipeline.media import probe_video
from tests import media
from tests.media import (
    BREATH_AT,
    BURSTS,
    FPS,
    SIZE,
    QuietReporter,
    built_once,
    frames_of,
    psnr,
    rotated_copy,
    speech_wav,
    variable_rate_copy,
    video_with_faceless_gap,
)

pytestmark = pytest.mark.slow

# Session fixtures of tests.media: each file is built once per session, whichever module asks first.
astronaut_file, media_dir, speech_file = media.astronaut_file, media.media_dir, media.speech_file


def generate(audio: Path, video: Path, out: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["generate", "--audio", str(audio), "--video", str(video), "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file()
    return captured.out


def stream_facts(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        return {"video_codec": video.codec_context.name, "pix_fmt": video.codec_context.pix_fmt,
                "audio_codec": audio.codec_context.name, "fps": float(video.average_rate),
                "size": (video.codec_context.width, video.codec_context.height),
                "frames": sum(1 for _ in container.decode(video))}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(environ={})


@pytest.fixture(scope="module")
def lipsynced(astronaut_file: Path, speech_file: Path, media_dir: Path) -> Path:
    """The 4 s astronaut video lip-synced to the 5 s speech (so it ping-pongs for the last second)."""
    out = media_dir / "lipsynced.mp4"
    if not out.exists():
        assert main(["generate", "--audio", str(speech_file), "--video", str(astronaut_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def output_openings(lipsynced: Path, config: Config) -> np.ndarray:
    landmarks = track_video(probe_video(lipsynced), config)
    assert all(points is not None for points in landmarks)
    return np.array([tracking.mouth_opening(points) for points in landmarks])


def frames_within(spans: list[tuple[float, float]], margin: float) -> np.ndarray:
    return np.concatenate([np.arange(round((start + margin) * FPS), round((end - margin) * FPS))
                           for start, end in spans])


def test_output_has_the_audio_duration_and_the_input_format(lipsynced: Path) -> None:
    facts = stream_facts(lipsynced)
    assert facts["video_codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and facts["audio_codec"] == "aac"
    assert facts["size"] == SIZE
    assert facts["fps"] == pytest.approx(FPS)
    assert facts["frames"] == pytest.approx(5.0 * FPS, abs=1)
    with av.open(str(lipsynced)) as container:
        assert container.duration / av.time_base == pytest.approx(5.0, abs=1 / FPS + 0.03)


# The portrait smiles with its teeth showing (mesh opening about 0.17). With its lips pressed together the
# mesh still reads about 0.06-0.09 on this face (the smile's lip shape), so "closed" is judged against that.
CLOSED_BELOW = 0.1


def test_mouth_opens_on_speech_and_closes_in_silence(output_openings: np.ndarray, astronaut_file: Path,
                                                     config: Config) -> None:
    speaking = output_openings[frames_within(list(BURSTS), margin=0.12)]
    silences = [(0.0, BURSTS[0][0]), (BURSTS[0][1], BURSTS[1][0]), (BURSTS[1][1], BURSTS[2][0])]
    quiet = output_openings[frames_within(silences, margin=0.16)]
    input_opening = np.median([tracking.mouth_opening(points)
                               for points in track_video(probe_video(astronaut_file), config)[:30]])
    assert np.mean(speaking) > 0.14, "mouth should be clearly open while speaking"
    assert np.percentile(speaking, 75) > 0.17
    assert np.max(quiet) < min(CLOSED_BELOW, 0.6 * input_opening), "mouth should be closed in silences"
    assert np.mean(speaking) > np.max(quiet) + 0.05
    breath = output_openings[round((BREATH_AT + 0.05) * FPS):round((BREATH_AT + 0.3) * FPS)]
    assert np.max(breath) < CLOSED_BELOW, "a breath must not open the mouth"


def test_sync_offset_and_untouched_upper_face(lipsynced: Path, speech_file: Path, astronaut_file: Path,
                                              config: Config) -> None:
    report = evaluate(lipsynced, speech_file, astronaut_file, config)
    assert abs(report["best_offset_frames"]) <= 1
    assert report["sync_correlation"] > 0.6
    assert report["psnr_outside_lower_face_db"] >= 35
    assert report["face_share"] == 1.0
    assert report["opening_in_speech"] > report["opening_in_silence"] + 0.05


def test_ping_pong_and_loop_lengths_and_order(astronaut_file: Path, media_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    long_speech = built_once(media_dir / "speech_7s.wav", lambda path: speech_wav(path, 7.0, ((0.3, 6.7),)))
    source = frames_of(astronaut_file)
    # Frame k of the output shows input frame expected[k]; compare the top (hair, background), which never moves.
    expectations = {"pingpong": [*range(100), *range(98, 0, -1), *range(0, 100)][:175],
                    "loop": [*range(100), *range(100)][:175]}
    for mode, expected in expectations.items():
        out = media_dir / f"long_{mode}.mp4"
        generate(long_speech, astronaut_file, out, "--loop-mode", mode, capsys=capsys)
        produced = frames_of(out)
        assert len(produced) == 175
        for k in (99, 110, 150, 174):
            assert psnr(produced[k][:150], source[expected[k]][:150]) > 35, (mode, k)
            if expected[k] != k % 100:
                assert psnr(produced[k][:150], source[k % 100][:150]) < psnr(
                    produced[k][:150], source[expected[k]][:150])


def test_variable_rate_and_rotated_inputs_give_constant_rate_upright_output(
        astronaut_file: Path, speech_file: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vfr = built_once(media_dir / "vfr.mp4", lambda path: variable_rate_copy(astronaut_file, path))
    rotated = built_once(media_dir / "rotated.mp4", lambda path: rotated_copy(astronaut_file, path, media_dir))
    for source in (vfr, rotated):
        out = media_dir / f"out-{source.name}"
        generate(speech_file, source, out, capsys=capsys)
        info = probe_video(out)
        assert np.allclose(np.diff(info.frame_times), 1 / info.fps, atol=1e-3), "constant frame rate"
        assert info.rotation == 0 and (info.width, info.height) == SIZE
        assert info.frame_count == round(5.0 * info.fps)
    upright = frames_of(media_dir / "out-rotated.mp4")[10]
    assert psnr(upright[:150], frames_of(astronaut_file)[10][:150]) > 30


def test_short_audio_cuts_the_video(astronaut_file: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = built_once(media_dir / "speech_2s.wav", lambda path: speech_wav(path, 2.0, ((0.3, 1.5),), breath=False))
    out = media_dir / "short.mp4"
    generate(short, astronaut_file, out, capsys=capsys)
    assert stream_facts(out)["frames"] == 50


def test_frames_without_a_face_pass_through(speech_file: Path, media_dir: Path, config: Config,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    gap_video = built_once(media_dir / "gap.mp4", video_with_faceless_gap)
    out = media_dir / "gap_out.mp4"
    generate(speech_file, gap_video, out, capsys=capsys)
    produced, original = frames_of(out), frames_of(gap_video)
    for k in (42, 50, 58):
        assert psnr(produced[k], original[k]) > 40
    job = Job(code="gap", audio_path=speech_file, video_path=gap_video, result_path=media_dir / "gap_job.mp4",
              work_dir=media_dir, options=TaskOptions().resolve(config.option_defaults), config=config)
    report = MeshWarpEngine(config).run(job, QuietReporter())
    assert report["frames_without_face"] == 20  # frames 40-59; the ping-pong tail (frames 98-74) has faces
    assert report["frames"] == 125
    json.dumps(report)


def test_labels_are_drawn_when_asked(astronaut_file: Path, speech_file: Path, lipsynced: Path, media_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = media_dir / "labelled.mp4"
    generate(speech_file, astronaut_file, out, "--ai-label", "--watermark", capsys=capsys)
    labelled, plain = frames_of(out)[30], frames_of(lipsynced)[30]
    height, width = labelled.shape[:2]
    assert psnr(labelled[height - 60:, :150], plain[height - 60:, :150]) < 30  # "AI-generated" bottom left
    assert psnr(labelled[height - 60:, width - 150:], plain[height - 60:, width - 150:]) < 35  # watermark
    assert psnr(labelled[:300], plain[:300]) > 40


def test_progress_and_stages_reach_the_reporter(astronaut_file: Path, speech_file: Path, media_dir: Path,
                                                config: Config) -> None:
    events: list[tuple[str, Any]] = []

    class Recorder(QuietReporter):
        def stage(self, name: str) -> None:
            events.append(("stage", name))

        def progress(self, percent: float) -> None:
            events.append(("progress", percent))

    short = built_once(media_dir / "speech_2s.wav", lambda path: speech_wav(path, 2.0, ((0.3, 1.5),), breath=False))
    job = Job(code="progress", audio_path=short, video_path=astronaut_file, result_path=media_dir / "p" / "r.mp4",
              work_dir=media_dir, options=TaskOptions(mouth_intensity=1.5).resolve(config.option_defaults),
              config=config)
    report = MeshWarpEngine(config).run(job, Recorder())
    progress = [value for kind, value in events if kind == "progress"]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(100)
    assert len(progress) == 3  # 50 frames: a short first batch (6), then 25, then the remaining 19
    stages = [value for kind, value in events if kind == "stage"]
    # The speech is analysed beside the video; the job waits for it again only if it is not done by then.
    assert stages[:3] == ["reading inputs", "analysing audio", "analysing video"]
    assert stages[3:] in (["rendering", "finishing"], ["analysing audio", "rendering", "finishing"])
    assert report["duration"] == pytest.approx(2.0, abs=0.01)
    assert not (media_dir / "r.partial.mp4").exists(), "the partial file, in the work folder, became the result"


def test_the_console_says_a_stage_it_comes_back_to_as_still_going() -> None:
    stream = io.StringIO()
    reporter = ConsoleReporter(stream)
    for name in ("reading inputs", "analysing audio", "analysing video", "analysing audio", "rendering"):
        reporter.stage(name)
    assert stream.getvalue().splitlines() == ["reading inputs...", "analysing audio...", "analysing video...",
                                              "still analysing audio...", "rendering..."]
