"""A render over cached boxes (heygem.pipeline.crops): the encoder decodes the video and lays the rendered box of
each frame over it; Python renders the box alone. The same pixels as a render of whole frames, checked against
the video the encoder decoded, and whole frames wherever a box cannot serve."""

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
from heygem.engines.meshwarp import MeshWarpEngine
from heygem.options import TaskOptions
from heygem.pipeline import crops, generate, media
from heygem.pipeline.analysis import AnalysisCache
from heygem.pipeline.engine import FrameBatch, Job
from heygem.pipeline.live import LiveStream, segment_count
from heygem.pipeline.media import VideoInfo, VideoReader, probe_video
from tests.conftest import ConfigFactory
from tests.media import QuietReporter, astronaut_video, frames_of, psnr, speech_wav
from tests.test_render_overlap import count_decoded

SIZE = (448, 256)  # a face of about a third of the frame's height: the box is a small part of the frame


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A 1.2 s face video and 1 s of speech: the output shows the video's first 25 frames once."""
    return (astronaut_video(tmp_path / "person.mp4", seconds=1.2, size=SIZE),
            speech_wav(tmp_path / "speech.wav", 1.0, ((0.1, 0.45), (0.55, 0.9)), breath=False))


def render(config: Any, video: Path, audio: Path, out: Path, live_dir: Path | None = None,
           **options: Any) -> dict[str, Any]:
    job = Job(code=out.stem, audio_path=audio, video_path=video, result_path=out, work_dir=out.parent / out.stem,
              options=TaskOptions(**options).resolve(config.option_defaults), config=config, live_dir=live_dir)
    return MeshWarpEngine(config).run(job, QuietReporter())


def decoded_frames(video: Path) -> list[np.ndarray]:
    return [frame for _, frame in VideoReader(probe_video(video), SIZE).frames()]


def agree(first: Path, second: Path) -> bool:
    """Two results agree as closely as two encodes of the same frames."""
    return min(psnr(a, b) for a, b in zip(frames_of(first), frames_of(second), strict=True)) > 40


def record_renders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame before, frame after) of every frame the engine renders from now on, whole or box."""
    rendered: list[tuple[np.ndarray, np.ndarray]] = []
    real = MeshWarpEngine.render

    def recorded(self: MeshWarpEngine, batch: FrameBatch, features: Any) -> list[np.ndarray]:
        before = [frame.copy() for frame in batch.frames]
        after = real(self, batch, features)
        rendered.extend((old, new.copy()) for old, new in zip(before, after, strict=True))
        return after

    monkeypatch.setattr(MeshWarpEngine, "render", recorded)
    return rendered


def test_a_box_is_cut_from_the_decoded_planes_and_goes_back_with_its_untouched_pixels_as_decoded() -> None:
    rng = np.random.default_rng(3)
    frame = cv2.cvtColor(rng.integers(0, 256, (64, 96, 3), np.uint8), cv2.COLOR_BGR2YUV_I420)
    box = (10, 4, 50, 36)
    crop = crops.crop_i420(frame, box)
    assert crop.size == crops.crop_bytes(box)
    whole = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    before = crops.crop_to_bgr(crop, box)
    assert np.array_equal(before, whole[4:36, 10:50])  # the planes of the box are the frame's own
    rendered = before.copy()
    rendered[9:20, 5:17] = 255 - rendered[9:20, 5:17]  # odd corners: chroma samples half inside the change
    merged = crops.merged_i420(crop, before, rendered, box)
    converted = cv2.cvtColor(rendered, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    changed = np.zeros((32, 40), bool)
    changed[9:20, 5:17] = True
    chroma = changed.reshape(16, 2, 20, 2).any(axis=(1, 3))
    for plane, (kept, new, old, mask) in enumerate(zip(crops._planes(merged, 40, 32), crops._planes(converted, 40, 32),
                                                      crops._planes(crop, 40, 32), (changed, chroma, chroma),
                                                      strict=True)):
        assert np.array_equal(kept[mask], new[mask]), plane
        assert np.array_equal(kept[~mask], old[~mask]), plane


@pytest.mark.slow
def test_a_second_render_renders_boxes_alone_over_the_video_with_the_pixels_of_whole_frames(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs
    config = make_config()
    recorded = record_renders(monkeypatch)
    first = render(config, video, audio, tmp_path / "first.mp4")
    whole_renders = recorded.copy()
    box = tuple(first["render_box"]["box"])
    x0, y0, x1, y1 = box
    assert first["render_box"]["frames"] == "decoded" and (x1 - x0) * (y1 - y0) < 0.3 * SIZE[0] * SIZE[1]
    stored = list((tmp_path / "data" / "analysis").glob(crops.CROPS_GLOB))
    assert len(stored) == 1 and len(np.load(stored[0], mmap_mode="r")) == 25
    # The boxes are the decoded frames' own.
    frames = decoded_frames(video)
    assert all(np.array_equal(crops.crop_to_bgr(np.load(stored[0])[index], box), frames[index][y0:y1, x0:x1])
               for index in range(25))

    box_renders = record_renders(monkeypatch)
    decoded = count_decoded(monkeypatch)
    second = render(config, video, audio, tmp_path / "second.mp4", live_dir=tmp_path / "live")
    assert second["render_box"] == {"box": list(box), "frames": "cached"} and decoded == []
    assert segment_count(LiveStream(tmp_path / "live").read_playlist() or "") >= 1  # the live preview as ever
    assert len(box_renders) == len(whole_renders) == 25
    for (whole_before, whole_after), (box_before, box_after) in zip(whole_renders, box_renders, strict=True):
        assert box_before.shape == (y1 - y0, x1 - x0, 3)
        assert np.array_equal(box_before, whole_before[y0:y1, x0:x1])
        # Nothing outside the box changes, inside it the same pixels up to float rounding (coordinates that differ
        # by the box's corner): at most 4 levels, but for a few pixels where the rounding tips a threshold (on the
        # real clips: 5 or 6 pixels of one frame in a few hundred).
        outside = whole_after.copy()
        outside[y0:y1, x0:x1] = whole_before[y0:y1, x0:x1]
        assert np.array_equal(outside, whole_before)
        off = cv2.absdiff(box_after, whole_after[y0:y1, x0:x1]).max(axis=2)
        assert (off > 4).sum() <= 10
    assert any(not np.array_equal(before, after) for before, after in box_renders)  # the mouth did move
    assert agree(tmp_path / "first.mp4", tmp_path / "second.mp4")


@pytest.mark.slow
def test_boxes_that_are_not_the_videos_own_are_found_and_the_render_is_made_again_from_its_frames(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory) -> None:
    video, audio = inputs
    config = make_config()
    first = render(config, video, audio, tmp_path / "first.mp4")
    x0, y0, x1, y1 = first["render_box"]["box"]
    [stored] = (tmp_path / "data" / "analysis").glob(crops.CROPS_GLOB)
    boxes = np.load(stored, mmap_mode="r+")
    boxes[12, : (x1 - x0) * 4] = 0  # four black rows at the top of frame 12's box: not what the video decodes
    boxes.flush()
    del boxes
    again = render(config, video, audio, tmp_path / "again.mp4")
    assert again["render_box"]["frames"] == "decoded"  # rendered from the video's frames after all
    frames = decoded_frames(video)
    [restored] = (tmp_path / "data" / "analysis").glob(crops.CROPS_GLOB)
    assert np.array_equal(crops.crop_to_bgr(np.load(restored)[12], tuple(first["render_box"]["box"])),
                          frames[12][y0:y1, x0:x1])  # recorded again from the decoded frames
    assert agree(tmp_path / "first.mp4", tmp_path / "again.mp4")
    assert not list((tmp_path / "again").glob("*.partial*"))


@pytest.mark.slow
def test_an_encoder_that_cannot_read_the_video_itself_sends_the_render_back_to_whole_frames(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = inputs
    config = make_config()
    render(config, video, audio, tmp_path / "first.mp4")

    def elsewhere(video: VideoInfo, *args: Any) -> media.BoxedVideo:
        return media.BoxedVideo(dataclasses.replace(video, path=tmp_path / "gone.mp4"), *args)

    monkeypatch.setattr(generate, "BoxedVideo", elsewhere)
    again = render(config, video, audio, tmp_path / "again.mp4")
    assert again["render_box"]["frames"] == "decoded"
    assert agree(tmp_path / "first.mp4", tmp_path / "again.mp4")


@pytest.mark.slow
def test_a_looped_video_is_laid_under_boxes_and_ping_pong_labels_or_a_cache_off_take_whole_frames(
        inputs: tuple[Path, Path], tmp_path: Path, make_config: ConfigFactory) -> None:
    video, _ = inputs
    config = make_config()
    long_speech = speech_wav(tmp_path / "long.wav", 2.6, ((0.2, 1.0), (1.4, 2.3)), breath=False)
    render(config, video, long_speech, tmp_path / "first.mp4", loop_mode="loop")  # records the 30 frames
    looped = render(config, video, long_speech, tmp_path / "looped.mp4", loop_mode="loop")
    assert looped["render_box"]["frames"] == "cached" and looped["frames"] == 65
    out = frames_of(tmp_path / "looped.mp4")
    source = decoded_frames(video)
    assert len(out) == 65
    # Output frame 40 shows video frame 10 again: its upper face (outside any box) as the video has it.
    top = looped["render_box"]["box"][1]
    assert psnr(out[40][:top], source[10][:top]) > 38 and psnr(out[40][:top], source[11][:top]) < psnr(
        out[40][:top], source[10][:top])

    assert "render_box" not in render(config, video, long_speech, tmp_path / "pingpong.mp4", loop_mode="pingpong")
    assert "render_box" not in render(config, video, long_speech, tmp_path / "label.mp4", loop_mode="loop",
                                      ai_label=True)
    off = make_config(media={"analysis_cache_mb": 0})
    assert "render_box" not in render(off, video, long_speech, tmp_path / "off.mp4", loop_mode="loop")


def test_the_analysis_cache_bound_counts_the_boxes_and_evicts_them_least_recently_used(tmp_path: Path) -> None:
    folder = tmp_path / "analysis"
    folder.mkdir()
    old_boxes = folder / "aaaa.box-0-0-8-8.npy"
    analysis_file = folder / "bbbb.npz"
    new_boxes = folder / "bbbb.box-0-0-8-8.npy"
    for age, path in enumerate((old_boxes, analysis_file, new_boxes)):
        path.write_bytes(b"x" * 400_000)
        stamp = 1_000_000 + age
        os.utime(path, (stamp, stamp))
    AnalysisCache(folder, 1.0).evict(keep=new_boxes)  # 1 MB: room for two of the three
    assert not old_boxes.exists() and analysis_file.exists() and new_boxes.exists()


def test_a_store_of_boxes_with_too_few_frames_or_another_layout_is_not_used(tmp_path: Path) -> None:
    box = (0, 0, 8, 4)
    store = crops.CropStore(tmp_path, "cafe", box)
    recorder = store.recorder(3, (16, 8))
    frame = np.arange(16 * 12, dtype=np.uint8).reshape(12, 16)
    for index in range(2):
        recorder.add(index, frame)
    recorder.commit()  # two of three frames: the render ended early, nothing is stored
    assert not store.path.exists() and not list(tmp_path.glob(".partial-*"))
    recorder = store.recorder(3, (16, 8))
    for index in range(3):
        recorder.add(index, frame)
    recorder.commit()
    assert store.load(4) is None
    stored = store.load(3)
    assert stored is not None and np.array_equal(stored[2], crops.crop_i420(frame, box))
    with open(store.path, "r+b") as file:  # cut short while a render reads it
        file.truncate(store.path.stat().st_size - 1)
    with pytest.raises(crops.StaleCrops):
        stored[2]
    stored.close()
    np.save(store.path, np.zeros((3, 5), np.uint8))
    assert store.load(1) is None
    recorder = store.recorder(2, (16, 8))
    recorder.add(0, np.zeros((8, 16, 3), np.uint8))  # a BGR frame: the video is not decoded as I420 planes
    recorder.add(1, frame)
    recorder.commit()
    assert store.load(1) is None and not list(tmp_path.glob(".partial-*"))


@pytest.mark.slow
def test_the_cli_says_when_a_render_took_the_mouths_box_alone(
        inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    video, audio = inputs
    monkeypatch.setenv("HEYGEM_PATHS__DATA_DIR", str(tmp_path / "data"))
    said = []
    for name in ("first", "second"):
        assert main(["generate", "--audio", str(audio), "--video", str(video), "--out",
                     str(tmp_path / f"{name}.mp4")]) == 0
        said.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert said[0].startswith("done: 25 frames, 1.00 s in ") and said[0].endswith(" s (0 without a face)")
    assert said[1].endswith("(0 without a face, the video's analysis from the cache and only its mouth's box "
                            "rendered)")


@pytest.mark.slow
def test_a_render_by_the_command_ends_with_its_result_and_its_words_whole(
        inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """`python -m heygem generate` skips the interpreter's teardown: what it printed and wrote is all there."""
    video, audio = inputs
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "heygem", "generate", "--video", str(video), "--audio", str(audio),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HEYGEM_PATHS__DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n" and done.stderr.rstrip().endswith("(0 without a face)")
    assert len(frames_of(out)) == 25
    failed = subprocess.run([sys.executable, "-m", "heygem", "generate", "--video", str(audio), "--audio",
                             str(audio), "--out", str(tmp_path / "no.mp4")], capture_output=True, text=True,
                            timeout=120, check=False)
    assert failed.returncode == 2 and failed.stderr.splitlines()[-1].startswith("error: video file has no video")
