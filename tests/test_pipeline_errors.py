"""Bad input: one clear line on the CLI, exit code 2, no traceback; the same InputError reaches the task status."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from heygem.cli import main
from heygem.config import load_config
from heygem.engines.meshwarp import MeshWarpEngine
from heygem.errors import InputError
from heygem.options import TaskOptions
from heygem.pipeline import tracking
from heygem.pipeline.engine import Job
from heygem.pipeline.evaluate import track_video
from heygem.pipeline.media import probe_video
from tests import media
from tests.media import (
    QuietReporter,
    built_once,
    faceless_video,
    silent_wav,
    speech_wav,
    transcode,
)

pytestmark = pytest.mark.slow

# Session fixtures of tests.media: each file is built once per session, whichever module asks first.
astronaut_file, media_dir, speech_file = media.astronaut_file, media.media_dir, media.speech_file


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Runs the CLI, expects exit code 2 and exactly one 'error: ...' line; returns that line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def generate_args(audio: Path, video: Path, out: Path) -> list[str]:
    return ["generate", "--audio", str(audio), "--video", str(video), "--out", str(out)]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    return path


def test_not_a_video(capsys: pytest.CaptureFixture[str], speech_file: Path, text_file: Path, tmp_path: Path) -> None:
    line = fails(capsys, *generate_args(speech_file, text_file, tmp_path / "out.mp4"))
    assert "video file is not a readable media file" in line


def test_a_fifo_or_a_folder_is_named_for_what_it_is(capsys: pytest.CaptureFixture[str], astronaut_file: Path,
                                                    tmp_path: Path) -> None:
    fifo, folder = tmp_path / "speech.wav", tmp_path / "folder.wav"
    os.mkfifo(fifo)
    folder.mkdir()
    line = fails(capsys, *generate_args(fifo, astronaut_file, tmp_path / "out.mp4"))
    assert line == f"error: audio file is a named pipe (FIFO), not a regular file: {fifo}"
    line = fails(capsys, *generate_args(folder, astronaut_file, tmp_path / "out.mp4"))
    assert line == f"error: audio file is a folder, not a regular file: {folder}"


def test_not_an_audio_file(capsys: pytest.CaptureFixture[str], astronaut_file: Path, tmp_path: Path) -> None:
    audio = tmp_path / "speech.wav"
    audio.write_text("RIFF? no, just text\n" * 30)
    line = fails(capsys, *generate_args(audio, astronaut_file, tmp_path / "out.mp4"))
    assert "audio file is not a readable media file" in line


def test_truncated_video(capsys: pytest.CaptureFixture[str], speech_file: Path, astronaut_file: Path,
                         tmp_path: Path) -> None:
    # Index at the end (cut off with the data) and index first (frames listed but missing).
    faststart = transcode(astronaut_file, tmp_path / "faststart.mp4", "-c", "copy", "-movflags", "+faststart")
    for source in (astronaut_file, faststart):
        truncated = tmp_path / f"cut-{source.name}"
        truncated.write_bytes(source.read_bytes()[: source.stat().st_size * 6 // 10])
        out = tmp_path / "out.mp4"
        line = fails(capsys, *generate_args(speech_file, truncated, out))
        assert "truncated" in line
        assert not out.exists()


def test_truncated_audio(capsys: pytest.CaptureFixture[str], astronaut_file: Path, speech_file: Path,
                         media_dir: Path, tmp_path: Path) -> None:
    m4a = built_once(media_dir / "speech_for_truncation.m4a",
                     lambda path: transcode(speech_file, path, "-c:a", "aac", "-movflags", "+faststart"))
    truncated = tmp_path / "cut.m4a"
    truncated.write_bytes(m4a.read_bytes()[:2000])
    line = fails(capsys, *generate_args(truncated, astronaut_file, tmp_path / "out.mp4"))
    assert "audio file" in line


def test_zero_length_files(capsys: pytest.CaptureFixture[str], speech_file: Path, astronaut_file: Path,
                           tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert "empty" in fails(capsys, *generate_args(speech_file, empty, tmp_path / "out.mp4"))
    empty_audio = tmp_path / "empty.wav"
    empty_audio.touch()
    assert "empty" in fails(capsys, *generate_args(empty_audio, astronaut_file, tmp_path / "out.mp4"))


def test_audio_without_an_audio_stream(capsys: pytest.CaptureFixture[str], astronaut_file: Path,
                                       tmp_path: Path) -> None:
    line = fails(capsys, *generate_args(astronaut_file, astronaut_file, tmp_path / "out.mp4"))
    assert "audio file has no audio stream" in line


def test_video_without_a_video_stream(capsys: pytest.CaptureFixture[str], speech_file: Path, tmp_path: Path) -> None:
    line = fails(capsys, *generate_args(speech_file, speech_file, tmp_path / "out.mp4"))
    assert "video file has no video stream" in line


def test_audio_over_the_maximum_duration(capsys: pytest.CaptureFixture[str], speech_file: Path,
                                         astronaut_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "short.yaml"
    config.write_text("media:\n  max_audio_duration_s: 3\n")
    line = fails(capsys, "--config", str(config), *generate_args(speech_file, astronaut_file, tmp_path / "o.mp4"))
    assert "maximum is 3 s" in line


def test_video_with_no_face(capsys: pytest.CaptureFixture[str], speech_file: Path, media_dir: Path,
                            tmp_path: Path) -> None:
    faceless = built_once(media_dir / "faceless.mp4", faceless_video)
    out = tmp_path / "out.mp4"
    assert fails(capsys, *generate_args(speech_file, faceless, out)) == "error: no face found in the video"
    assert not out.exists(), "no result"


def test_no_face_reaches_the_task_as_input_error(speech_file: Path, media_dir: Path, tmp_path: Path) -> None:
    faceless = built_once(media_dir / "faceless.mp4", faceless_video)
    config = load_config(environ={})
    job = Job(code="noface", audio_path=speech_file, video_path=faceless, result_path=tmp_path / "r.mp4",
              work_dir=tmp_path, options=TaskOptions().resolve(config.option_defaults), config=config)
    with pytest.raises(InputError, match=r"^no face found in the video$"):
        MeshWarpEngine(config).run(job, QuietReporter())
    assert not (tmp_path / "r.partial.mp4").exists(), "the failed render's partial file is removed"


def test_bad_options_are_input_errors(capsys: pytest.CaptureFixture[str], speech_file: Path, astronaut_file: Path,
                                      tmp_path: Path) -> None:
    line = fails(capsys, *generate_args(speech_file, astronaut_file, tmp_path / "o.mp4"), "--mouth-intensity", "9")
    assert "mouth_intensity" in line


@pytest.mark.parametrize("policy", ["refuse", "downscale"])
def test_frames_larger_than_the_maximum(capsys: pytest.CaptureFixture[str], speech_file: Path,
                                        astronaut_file: Path, tmp_path: Path, policy: str) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(f"media:\n  max_frame_side: 256\n  oversize_policy: {policy}\n")
    out = tmp_path / "o.mp4"
    argv = ["--config", str(config), *generate_args(speech_file, astronaut_file, out)]
    if policy == "refuse":
        assert "maximum side is 256 px" in fails(capsys, *argv)
        return
    assert main(argv) == 0
    with av.open(str(out)) as container:
        assert (container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height) == (
            256, 256)


def test_unicode_and_spaces_in_names(capsys: pytest.CaptureFixture[str], speech_file: Path, astronaut_file: Path,
                                     tmp_path: Path) -> None:
    folder = tmp_path / "my clips ü"
    folder.mkdir()
    audio = shutil.copy(speech_file, folder / "réponse vocale 音声.wav")
    video = shutil.copy(astronaut_file, folder / "visage – face.mp4")
    out = folder / "résultat final.mp4"
    assert main(generate_args(Path(audio), Path(video), out)) == 0
    assert out.is_file()
    assert str(out) in capsys.readouterr().out


def test_silent_audio_is_valid_keeps_the_mouth_closed_and_is_warned_about(astronaut_file: Path, media_dir: Path,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    silence = built_once(media_dir / "silence.wav", silent_wav)
    out = tmp_path / "silent.mp4"
    assert main(generate_args(silence, astronaut_file, out)) == 0
    assert "warning: the speech track is silent: no sound was found in it" in capsys.readouterr().err
    landmarks = track_video(probe_video(out), load_config(environ={}))
    openings = [tracking.mouth_opening(points) for points in landmarks if points is not None]
    assert len(openings) == 75
    assert np.max(openings) < 0.1  # closed (see CLOSED_BELOW in test_pipeline_generate)


def test_quiet_noise_does_not_move_the_mouth(astronaut_file: Path, media_dir: Path, tmp_path: Path) -> None:
    from heygem.engines.meshwarp import MeshWarpEngine as Engine

    config = load_config(environ={})
    hum = built_once(media_dir / "noise_only.wav", lambda path: speech_wav(path, 3.0, (), breath=True))
    engine = Engine(config)
    from heygem.pipeline.media import read_audio

    state = engine.audio_features(read_audio(hum, 600), 25.0, 75, TaskOptions().resolve(config.option_defaults))
    assert float(np.max(state.cues.openness)) == 0.0


def test_a_speech_track_that_is_mostly_silence_is_told_apart_from_speech(media_dir: Path) -> None:
    from heygem.pipeline.media import read_audio
    from heygem.pipeline.silence import silence_warning

    speech = read_audio(built_once(media_dir / "speech-5s.wav", speech_wav), 600)
    one_word = read_audio(built_once(media_dir / "one-word-6s.wav",
                                     lambda path: speech_wav(path, 6.0, ((2.0, 2.5),), breath=False)), 600)
    assert silence_warning(speech) == ""
    assert silence_warning(one_word).startswith("the speech track is mostly silence (sound in 9% of it)")
