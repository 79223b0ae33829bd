"""Test media made on the fly, for any test that needs a face video or speech (reuse these, don't copy them).

- astronaut_video: the astronaut portrait drifting a few pixels per frame (a face in every frame);
- speech_wav: speech-like audio with known voiced BURSTS and silences between them (and optionally a breath);
- faceless_video, video_with_faceless_gap: for pass-through and "no face" cases;
- transcode / rotated_copy / variable_rate_copy: other codecs, containers, rotation metadata, VFR.
The session fixtures below build each file once per test session, whichever module asks first. Real clips
come from ../shared/media through tests.conftest.shared_media (a skip with the reason when absent).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from heygem.config import MeshWarpConfig
from heygem.engines.meshwarp import MeshWarpState, render_mouth
from heygem.pipeline import samples
from heygem.pipeline.media import ffmpeg_exe
from heygem.pipeline.mouthcues import MouthCues

FPS = 25.0
SIZE = (512, 512)
# Voiced bursts (seconds) of speech_wav; everything else is silence (and the breath, if asked for).
BURSTS = samples.DEFAULT_BURSTS
BREATH_AT = 1.6


def speech_wav(path: Path, duration: float = 5.0, bursts: Sequence[tuple[float, float]] = BURSTS,
               breath: bool = True) -> Path:
    audio = samples.speech_like_audio(duration, bursts, breath_at=BREATH_AT if breath else None)
    return samples.write_wav(path, audio)


SPOKEN_TEXT = ("HeyGem turns a recording of speech and a video of a face into one video, with the lips following "
               "every word. It runs on a graphics card or on a plain processor, and it never loses a task. ")


def spoken_wav(path: Path, seconds: float) -> Path:
    """Exactly `seconds` of real speech (espeak-ng, its text repeated as needed), or speech_wav where it is missing."""
    spoken = path.with_name(f"espeak-{path.name}")
    words_per_second = 150 / 60  # espeak-ng's rate -s 150 (words per minute)
    repeats = int(seconds * words_per_second / len(SPOKEN_TEXT.split())) + 1
    if not samples.espeak_speech(SPOKEN_TEXT * repeats, spoken):
        bursts = tuple((start, start + 0.9) for start in np.arange(0.3, seconds - 1, 1.5))
        return speech_wav(path, seconds, bursts=bursts, breath=False)
    ffmpeg("-i", str(spoken), "-af", "apad", "-t", f"{seconds:g}", "-ar", "16000", "-ac", "1", str(path))
    spoken.unlink()
    return path


def silent_wav(path: Path, duration: float = 3.0) -> Path:
    return samples.write_wav(path, np.zeros(round(duration * 16000), np.float32))


def astronaut_video(path: Path, seconds: float = 4.0, fps: float = FPS, size: tuple[int, int] = SIZE,
                    audio: Path | None = None) -> Path:
    frames = samples.moving_portrait_frames(round(seconds * fps), fps, size)
    return samples.write_video(path, frames, size, fps, audio_path=audio)


def faceless_frames(count: int, size: tuple[int, int] = SIZE) -> Iterator[np.ndarray]:
    """A slowly moving colour gradient: video-like, no face."""
    width, height = size
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    for index in range(count):
        phase = index / 25
        image = np.concatenate([120 + 80 * np.sin(6 * x + phase) * np.ones_like(y),
                                120 + 80 * np.cos(4 * y + phase) * np.ones_like(x),
                                np.full((height, width, 1), 90.0)], axis=2)
        yield image.astype(np.uint8)


def faceless_video(path: Path, seconds: float = 2.0) -> Path:
    return samples.write_video(path, faceless_frames(round(seconds * FPS)), SIZE, FPS)


def video_with_faceless_gap(path: Path, seconds: float = 4.0, gap: tuple[int, int] = (40, 60)) -> Path:
    """The astronaut video with frames [gap) replaced by a faceless picture."""
    count = round(seconds * FPS)
    blank = list(faceless_frames(gap[1] - gap[0]))

    def frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(samples.moving_portrait_frames(count, FPS, SIZE)):
            yield blank[index - gap[0]] if gap[0] <= index < gap[1] else frame

    return samples.write_video(path, frames(), SIZE, FPS)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True)


def transcode(source: Path, target: Path, *codec_args: str) -> Path:
    ffmpeg("-i", str(source), *codec_args, str(target))
    return target


def rotated_copy(source: Path, target: Path, work: Path) -> Path:
    """The same picture stored sideways (turned clockwise) with a display matrix that turns it upright."""
    import av

    with av.open(str(source)) as container:
        frames = [np.ascontiguousarray(np.rot90(frame.to_ndarray(format="bgr24"), k=-1))
                  for frame in container.decode(video=0)]
    height, width = frames[0].shape[:2]
    sideways = samples.write_video(work / f"sideways-{target.stem}.mp4", iter(frames), (width, height), FPS)
    ffmpeg("-display_rotation", "90", "-i", str(sideways), "-c", "copy", str(target))
    return target


def variable_rate_copy(source: Path, target: Path) -> Path:
    """Drops two of every three frames after the first second: timestamps become irregular (VFR)."""
    return transcode(source, target, "-vf", r"select='lt(n\,25)+not(mod(n\,3))'", "-fps_mode", "vfr",
                     "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")


class QuietReporter:
    """An engine Reporter that ignores everything (subclass it to record what matters to a test)."""

    def stage(self, name: str) -> None: ...

    def progress(self, percent: float) -> None: ...

    def error(self, message: str) -> None: ...

    def clear_error(self) -> None: ...

    def warn(self, message: str) -> None: ...

    def advance(self) -> None: ...


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (99 when identical)."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255**2 / mse))


def frames_of(path: Path) -> list[np.ndarray]:
    """Every frame of a (short) video as upright BGR, through the pipeline's own reader."""
    from heygem.pipeline.media import VideoReader, probe_video

    info = probe_video(path)
    return [frame for _, frame in VideoReader(info, (info.width, info.height)).frames()]


def built_once(path: Path, build: Callable[[Path], object]) -> Path:
    """`path`, built by `build` unless an earlier test of this session already built it."""
    if not path.exists():
        partial = path.with_name(f"partial-{path.name}")
        build(partial)
        partial.rename(path)
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "heygem-media"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def speech_file(media_dir: Path) -> Path:
    """5 s of speech-like audio: voiced BURSTS, silence elsewhere, a breath at BREATH_AT."""
    return built_once(media_dir / "speech.wav", speech_wav)


@pytest.fixture(scope="session")
def astronaut_file(media_dir: Path) -> Path:
    """4 s, 25 fps, 512x512 H.264 video of the drifting astronaut portrait."""
    return built_once(media_dir / "astronaut.mp4", astronaut_video)


def frame_size_bomb(path: Path, side: int) -> Path:
    """A ~1.5 KB MP4 of three H.264 frames whose header declares them `side` x `side` (a multiple of 16).

    Encoding frames that large takes minutes and gigabytes, so three 16x16 frames are encoded and the size fields of
    their sequence parameter set are rewritten; a decoder believes the header and allocates the declared frames.
    """
    raw = path.with_name(f"{path.stem}.h264")
    ffmpeg("-f", "lavfi", "-i", "color=black:s=16x16:r=25", "-frames:v", "3", "-c:v", "libx264", "-profile:v",
           "baseline", "-pix_fmt", "yuv420p", "-f", "h264", str(raw))
    units = raw.read_bytes().split(b"\x00\x00\x01")
    for index, unit in enumerate(units):
        if unit and unit[0] & 0x1F == 7:  # the sequence parameter set
            unit = unit.rstrip(b"\x00")  # the next start code's leading zero
            units[index] = unit[:1] + _escape_rbsp(_resized_sps(_unescape_rbsp(unit[1:]), side // 16))
    raw.write_bytes(b"\x00\x00\x01".join(units))
    ffmpeg("-f", "h264", "-r", "25", "-i", str(raw), "-c", "copy", str(path))
    raw.unlink()
    return path


def _resized_sps(rbsp: bytes, macroblocks: int) -> bytes:
    """A baseline-profile SPS (as x264 writes it) with pic_width_in_mbs and pic_height_in_map_units replaced."""
    bits = "".join(f"{byte:08b}" for byte in rbsp)
    position = 24  # profile_idc, constraint flags, level_idc

    def exp_golomb() -> None:
        nonlocal position
        zeros = bits.index("1", position) - position
        position += 2 * zeros + 1

    exp_golomb()  # seq_parameter_set_id
    exp_golomb()  # log2_max_frame_num_minus4
    order_type = bits[position:].index("1")  # pic_order_cnt_type: x264 writes 0 or 2
    exp_golomb()
    if order_type == 0:
        exp_golomb()  # log2_max_pic_order_cnt_lsb_minus4
    exp_golomb()  # max_num_ref_frames
    position += 1  # gaps_in_frame_num_value_allowed_flag
    size_at = position
    exp_golomb()
    exp_golomb()
    rest = bits[position:].rstrip("0")[:-1]  # without the stop bit and the padding
    code = format(macroblocks, "b")  # ue(macroblocks - 1)
    out = bits[:size_at] + 2 * ("0" * (len(code) - 1) + code) + rest + "1"
    out += "0" * (-len(out) % 8)
    return bytes(int(out[start:start + 8], 2) for start in range(0, len(out), 8))


def _unescape_rbsp(data: bytes) -> bytes:
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape_rbsp(data: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in data:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def render(face: tuple[np.ndarray, np.ndarray], settings: MeshWarpConfig, openness: float,
           shape: float = 0.0) -> np.ndarray:
    """One frame's mouth warped to `openness` and `shape` by the built-in engine's warp alone."""
    frame, points = face
    out = frame.copy()
    still = np.zeros(1, np.float32)
    state = MeshWarpState(cues=MouthCues(still, still, np.zeros(1, bool), np.zeros(1, bool)), intensity=1.0)
    render_mouth(out, points, openness, shape, state, settings)
    return out
