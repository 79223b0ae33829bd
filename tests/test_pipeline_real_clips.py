"""The whole pipeline on real talking-head clips and real speech from ../shared/media (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from heygem.cli import main
from heygem.config import load_config
from heygem.pipeline.evaluate import evaluate
from tests.conftest import shared_media

pytestmark = pytest.mark.slow

CASES = {
    # A 229 px face in a 1080x1920 HEVC frame: only full-range detection plus a mesh on a crop finds it.
    "small_face_hevc": ("video_vertical_fullbody_hevc.mp4", "speech_en_2.wav"),
    # MPEG-4 Part 2, a woman turning her head left and right, driven by a different (male) speaker.
    "head_motion_mpeg4": ("video_head_motion.mp4", "speech_en_1.wav"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_clip_is_lip_synced(case: str, tmp_path: Path) -> None:
    video_name, audio_name = CASES[case]
    video, audio = shared_media(video_name), shared_media(audio_name)
    out = tmp_path / f"{case}.mp4"
    assert main(["generate", "--video", str(video), "--audio", str(audio), "--out", str(out)]) == 0
    with av.open(str(out)) as result, av.open(str(video)) as source:
        produced, original = result.streams.video[0], source.streams.video[0]
        assert produced.codec_context.name == "h264"
        assert (produced.codec_context.width, produced.codec_context.height) == (
            original.codec_context.width, original.codec_context.height)
        assert float(produced.average_rate) == pytest.approx(float(original.average_rate))
    report = evaluate(out, audio, video, load_config(environ={}))
    assert report["face_share"] >= 0.98
    assert report["duration"] == pytest.approx(report["audio_duration"], abs=1 / report["fps"] + 0.01)
    assert abs(report["best_offset_frames"]) <= 1
    assert report["sync_correlation"] >= 0.5
    assert report["sync_correlation"] > report["reference"]["sync_correlation"] + 0.3
    assert report["opening_in_speech"] > report["opening_in_silence"] + 0.05
    assert report["psnr_outside_lower_face_db"] >= 35
    assert report["landmark_jitter_pct"] <= report["reference"]["landmark_jitter_pct"] * 1.5 + 0.1


def test_speech_from_a_video_file_drives_another_video(tmp_path: Path) -> None:
    speaker = shared_media("video_portrait_static.mp4")  # its AAC 48 kHz stereo track is the speech
    face = shared_media("video_talking_medium_skin.mp4")  # 590x590: not a multiple of 8 or 16
    out = tmp_path / "cross.mp4"
    assert main(["generate", "--video", str(face), "--audio", str(speaker), "--out", str(out)]) == 0
    with av.open(str(out)) as result:
        stream = result.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (590, 590)
        assert result.duration / av.time_base == pytest.approx(5.0, abs=0.1)
