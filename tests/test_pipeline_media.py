"""Media in and out: codecs, containers, rotation, variable frame rate, audio formats, the output file."""

from __future__ import annotations

import fcntl
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from heygem.pipeline import samples
from heygem.pipeline.generate import Segment, plan_segments
from heygem.pipeline.media import ENCODER_PIPE_BYTES, SAMPLE_RATE, VideoWriter, grid_sources, probe_video, read_audio
from tests import media
from tests.media import (
    FPS,
    SIZE,
    built_once,
    frames_of,
    psnr,
    rotated_copy,
    transcode,
    variable_rate_copy,
)

# Session fixtures of tests.media: each file is built once per session, whichever module asks first.
astronaut_file, media_dir, speech_file = media.astronaut_file, media.media_dir, media.speech_file


@pytest.mark.parametrize(("name", "codec_args"), [
    ("hevc.mkv", ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error")),
    ("mpeg4.mp4", ("-c:v", "mpeg4", "-q:v", "3")),
    ("vp9.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M")),
    ("h264.mov", ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")),
])
def test_common_codecs_and_containers_decode(astronaut_file: Path, media_dir: Path, name: str,
                                             codec_args: tuple[str, ...]) -> None:
    try:
        path = built_once(media_dir / name, lambda target: transcode(astronaut_file, target, *codec_args))
    except Exception as exc:  # the bundled ffmpeg may lack an encoder; decoding is what is under test
        pytest.skip(f"could not make a {name} sample: {exc}")
    info = probe_video(path)
    assert (info.width, info.height) == SIZE
    assert info.fps == pytest.approx(FPS)
    decoded = frames_of(path)
    assert len(decoded) == info.frame_count == 100
    reference = frames_of(astronaut_file)
    assert psnr(decoded[50], reference[50]) > 28


def test_rotation_metadata_is_honoured(astronaut_file: Path, media_dir: Path) -> None:
    rotated = built_once(media_dir / "rotated.mp4", lambda target: rotated_copy(astronaut_file, target, media_dir))
    info = probe_video(rotated)
    assert info.rotation == 90
    assert (info.width, info.height) == SIZE
    upright = frames_of(rotated)
    assert psnr(upright[10], frames_of(astronaut_file)[10]) > 30


def test_variable_frame_rate_becomes_constant(astronaut_file: Path, media_dir: Path) -> None:
    vfr = built_once(media_dir / "vfr.mp4", lambda target: variable_rate_copy(astronaut_file, target))
    info = probe_video(vfr)
    gaps = np.diff(info.frame_times)
    assert gaps.max() > 1.5 * gaps.min(), "the sample should really have irregular timestamps"
    sources = grid_sources(info)
    assert len(sources) == info.frame_count
    assert info.duration == pytest.approx(4.0, abs=0.15)
    # Every grid instant shows the latest stored frame: never going backward, repeating where frames were dropped.
    assert np.all(np.diff(sources) >= 0)
    assert len(frames_of(vfr)) == info.frame_count


@pytest.mark.parametrize(("suffix", "codec_args"), [
    (".mp3", ("-c:a", "libmp3lame", "-b:a", "96k")),
    (".m4a", ("-c:a", "aac", "-b:a", "96k")),
    (".ogg", ("-c:a", "libopus", "-b:a", "48k")),
    (".flac", ("-c:a", "flac", "-ar", "44100", "-ac", "2")),
])
def test_audio_formats_read_as_16k_mono(speech_file: Path, media_dir: Path, suffix: str,
                                        codec_args: tuple[str, ...]) -> None:
    try:
        path = built_once(media_dir / f"speech{suffix}", lambda target: transcode(speech_file, target, *codec_args))
    except Exception as exc:
        pytest.skip(f"could not make a {suffix} sample: {exc}")
    original = read_audio(speech_file, 600)
    decoded = read_audio(path, 600)
    assert decoded.dtype == np.float32
    assert decoded.size / SAMPLE_RATE == pytest.approx(5.0, abs=0.08)
    # Same loudness envelope, whatever the codec delay or resampling did to the waveform.
    envelope = [np.abs(signal[:79000]).reshape(-1, 1580).mean(axis=1) for signal in (original, decoded)]
    assert np.corrcoef(*envelope)[0, 1] > 0.95


def test_audio_track_of_a_video_is_read(astronaut_file: Path, speech_file: Path, media_dir: Path) -> None:
    with_sound = built_once(media_dir / "astronaut_with_sound.mp4", lambda target: transcode(
        astronaut_file, target, "-i", str(speech_file), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac"))
    audio = read_audio(with_sound, 600)
    assert audio.size / SAMPLE_RATE == pytest.approx(4.0, abs=1.1)
    assert np.abs(audio).max() > 0.1


def test_writer_makes_browser_playable_h264_aac_faststart(speech_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "written.mp4"
    writer = VideoWriter(out, (320, 240), Fraction(25), speech_file, 2.0, "superfast", 23, "96k")
    for frame in samples.moving_portrait_frames(50, 25, (320, 240)):
        writer.write(frame)
    writer.close()
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == (320, 240)
    head = out.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat"), "moov atom must come first (+faststart)"


def test_writer_pipe_takes_a_720p_frame_in_two_writes(speech_file: Path, tmp_path: Path) -> None:
    # Linux's default 64 KB pipe passed a 720p frame in 22 writes, each waking the encoder's reader.
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < ENCODER_PIPE_BYTES:
        pytest.skip("this system's pipes are limited below 1 MB (fs.pipe-max-size)")
    writer = VideoWriter(tmp_path / "piped.mp4", (64, 64), Fraction(25), speech_file, 1.0, "ultrafast", 30, "64k")
    try:
        assert fcntl.fcntl(writer._stdin.fileno(), fcntl.F_GETPIPE_SZ) >= ENCODER_PIPE_BYTES
    finally:
        writer.abort()


@pytest.mark.parametrize(("video", "output", "mode", "expected"), [
    (100, 60, "pingpong", [Segment(0, 60)]),
    (100, 250, "pingpong", [Segment(0, 100), Segment(1, 99, True), Segment(0, 52)]),
    (100, 250, "loop", [Segment(0, 100), Segment(0, 100), Segment(0, 50)]),
    (1, 3, "pingpong", [Segment(0, 1), Segment(0, 1), Segment(0, 1)]),
    (2, 5, "pingpong", [Segment(0, 2), Segment(0, 2), Segment(0, 1)]),
])
def test_plan_cuts_loops_and_ping_pongs(video: int, output: int, mode: str, expected: list[Segment]) -> None:
    plan = plan_segments(video, output, mode)
    assert plan == expected
    assert sum(len(segment) for segment in plan) == output
