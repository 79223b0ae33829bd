"""Media in and out: probe and decode with PyAV, read audio and encode with the bundled ffmpeg binary.

Every failure a user can cause (wrong file, broken file, missing stream) becomes an InputError with one sentence.
ffmpeg always runs from an argument list; no shell is involved, so any file name works. Every input is opened under
the rules of heygem.pipeline.media_formats: allowed formats only, from the file itself, frames up to a stated size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import av.error
import numpy as np

from heygem.errors import InputError
from heygem.files import require_regular_file
from heygem.pipeline.live import INIT_NAME, SEGMENT_PATTERN, LiveStream
from heygem.pipeline.media_formats import (
    DECODE_MAX_SIDE,
    MediaKind,
    accepted_formats,
    container_options,
    decoder_options,
    describe_refused,
    ffmpeg_input_args,
    input_url,
)

SAMPLE_RATE = 16000
# Decoded audio may fall short of the container's stated duration by encoder padding (a few AAC frames) or by a
# bit-rate estimate (raw MP3/ADTS files state no length); more than this means frames that do not decode, and a
# result whose speech stops early.
SHORTFALL_TOLERANCE_S = 0.3
SHORTFALL_TOLERANCE_SHARE = 0.05
# PyAV's error classes for unreadable or damaged input; anything else is a bug and must surface as such.
_MEDIA_ERRORS = (av.error.FFmpegError, UnicodeDecodeError, EOFError)
# The encoder's input pipe: a 720p I420 frame (1.4 MB) passes Linux's default 64 KB pipe in 22 writes, each waking
# ffmpeg's reader; at 1 MB (the default /proc/sys/fs/pipe-max-size) it takes two, which saves 0.1-0.15 s of CPU on
# both sides per 200 frames of 720p.
ENCODER_PIPE_BYTES = 2**20


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about the video before decoding it."""

    path: Path
    width: int  # displayed width (after rotation, before any downscale)
    height: int
    fps: float
    rate: Fraction  # the same frame rate, exact, for the encoder
    rotation: int  # degrees counter-clockwise the stored frames must turn to be displayed upright
    frame_times: tuple[float, ...]  # presentation time of each stored frame, seconds from the first
    codec: str
    has_audio: bool
    max_side: int  # the largest frame side its decoders allow (the limit it was probed under)

    @property
    def frame_count(self) -> int:
        """Frames on the constant-fps grid the pipeline outputs."""
        return max(1, round(self.duration * self.fps))

    @property
    def duration(self) -> float:
        if len(self.frame_times) < 2:
            return 1.0 / self.fps
        return self.frame_times[-1] - self.frame_times[0] + 1.0 / self.fps


@dataclasses.dataclass(frozen=True)
class LiveOutput:
    """A live stream for the encoder to write beside the result, cut into segments of `segment_s` seconds."""

    stream: LiveStream
    segment_s: float


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    path: Path
    duration: float
    codec: str
    format_name: str  # the demuxer that read it (container.format.name)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: Path, kind: str) -> None:
    require_regular_file(path, f"{kind} file", path.name)
    if path.stat().st_size == 0:
        raise InputError(f"{kind} file is empty (zero bytes): {path.name}")


def _open(path: Path, kind: MediaKind, max_side: int) -> av.container.InputContainer:
    _check_file(path, kind)
    try:
        return av.open(input_url(path), container_options=container_options(kind),
                       options=decoder_options(max_side), metadata_errors="ignore")
    except _MEDIA_ERRORS:
        refused = describe_refused(path, kind)
        if refused is not None:
            raise InputError(f"{kind} file {refused}: {path.name}; this server reads {accepted_formats(kind)}") \
                from None
        raise InputError(f"{kind} file is not a readable media file (corrupt, truncated or unknown format): "
                         f"{path.name}") from None


def _check_declared_size(stream: av.video.stream.VideoStream, path: Path, max_side: int) -> None:
    """Refuse frames larger than `max_side` by the size the file declares, before any frame is decoded."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if max(width, height) > max_side:
        raise InputError(f"video frames are {width}x{height} pixels; the limit is {max_side} pixels per side "
                         f"(media.max_input_side): {path.name}")


def _time_base(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    # PyAV types it optional for streams being written; a demuxed stream without one has no usable timestamps.
    if stream.time_base is None:
        raise InputError(f"video file has no timestamps: {path.name}")
    return stream.time_base


def probe_video(path: Path, max_side: int = DECODE_MAX_SIDE) -> VideoInfo:
    """Reads stream facts and every frame's timestamp (demuxing only, no decoding beyond the first frame).

    Frames whose declared size exceeds `max_side` (media.max_input_side) are refused before any is decoded.
    """
    with _open(path, "video", max_side) as container:
        if not container.streams.video:
            raise InputError(f"video file has no video stream: {path.name}")
        stream = container.streams.video[0]
        _check_declared_size(stream, path, max_side)
        stream.codec_context.options = decoder_options(max_side)  # a later frame may declare another size
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise InputError(f"video file has no usable frame rate: {path.name}")
        has_audio = bool(container.streams.audio)
        time_base = _time_base(stream, path)
        try:
            first = next(container.decode(stream), None)
            container.seek(0, stream=stream)
            times = sorted(float(packet.pts * time_base) for packet in container.demux(stream)
                           if packet.pts is not None and packet.size > 0)
        except _MEDIA_ERRORS:
            raise InputError(f"video file is corrupt or truncated: {path.name}") from None
        if first is None or not times:
            raise InputError(f"video file contains no decodable frames: {path.name}")
        rotation = int(first.rotation or 0) % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        start = times[0]
        return VideoInfo(path=path, width=width, height=height, fps=float(rate), rate=Fraction(rate),
                         rotation=rotation, frame_times=tuple(t - start for t in times),
                         codec=stream.codec_context.name, has_audio=has_audio, max_side=max_side)


def probe_audio(path: Path, max_side: int = DECODE_MAX_SIDE) -> AudioInfo:
    with _open(path, "audio", max_side) as container:
        if not container.streams.audio:
            raise InputError(f"audio file has no audio stream: {path.name}")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        return AudioInfo(path=path, duration=duration, codec=stream.codec_context.name,
                         format_name=container.format.name)


def read_audio(path: Path, max_duration_s: float, max_side: int = DECODE_MAX_SIDE) -> np.ndarray:
    """The first audio stream as 16 kHz mono float32 in [-1, 1]; refuses audio longer than max_duration_s."""
    info = probe_audio(path, max_side)
    if info.duration > max_duration_s + 0.5:
        raise InputError(f"audio is {info.duration:.0f} s long; the maximum is {max_duration_s:.0f} s")
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error",
            *ffmpeg_input_args(path, "audio", info.format_name, max_side), "-map", "0:a:0",
            "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-t", f"{max_duration_s + 1:.3f}", "-f", "f32le", "-"]
    done = subprocess.run(args, capture_output=True, check=False)
    if done.returncode != 0:
        raise InputError(f"audio file is corrupt or cannot be decoded: {path.name}")
    samples = np.frombuffer(done.stdout, dtype=np.float32)
    if samples.size == 0:
        raise InputError(f"audio file contains no samples: {path.name}")
    if samples.size > (max_duration_s + 0.5) * SAMPLE_RATE:
        raise InputError(f"audio is longer than the maximum of {max_duration_s:.0f} s")
    decoded_s = samples.size / SAMPLE_RATE
    if info.duration - decoded_s > max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_SHARE * info.duration):
        raise InputError(f"audio file is damaged or truncated: only {decoded_s:.2f} s of its {info.duration:.2f} s "
                         f"decode: {path.name}")
    return samples.copy()


def output_size(info: VideoInfo, max_side: int, policy: str) -> tuple[int, int]:
    """The size frames are processed and encoded at: the displayed size, or scaled down to max_side."""
    longest = max(info.width, info.height)
    if longest <= max_side:
        width, height = info.width, info.height
    elif policy == "refuse":
        raise InputError(f"video frames are {info.width}x{info.height}; the maximum side is {max_side} px")
    else:
        scale = max_side / longest
        width, height = round(info.width * scale), round(info.height * scale)
    # yuv420p needs even sides.
    return width + width % 2, height + height % 2


def grid_sources(info: VideoInfo) -> np.ndarray:
    """For each frame of the constant-fps output grid, the index of the stored frame shown at that instant.

    This is how variable frame rate becomes constant: frames are repeated or dropped by timestamp.
    """
    times = np.asarray(info.frame_times)
    grid = np.arange(info.frame_count) / info.fps
    # A stored frame counts from its own timestamp; half a frame of slack absorbs timestamp rounding.
    return np.clip(np.searchsorted(times, grid + 0.5 / info.fps, side="right") - 1, 0, len(times) - 1)


class VideoReader:
    """Decodes the constant-fps grid frames [start, stop) as upright BGR arrays of the output size."""

    def __init__(self, info: VideoInfo, size: tuple[int, int]) -> None:
        self.info = info
        self.size = size
        self._sources = grid_sources(info)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for grid_index, image in self.compact_frames(start, stop):
            yield grid_index, to_bgr(image)

    def compact_frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The same frames, each as its decoded I420 planes (an (h * 3/2, w) uint8 array, half the bytes of BGR)
        where the video decodes as yuv420p at the output size and upright (most videos), else as BGR; `to_bgr`
        turns either into the BGR frame `frames` yields. For holding many decoded frames in little memory."""
        stop = self.info.frame_count if stop is None else stop
        if start >= stop:
            return
        wanted = self._sources[start:stop]
        first_stored, last_stored = int(wanted[0]), int(wanted[-1])
        grid_index = start
        try:
            with _open(self.info.path, "video", self.info.max_side) as container:
                stream = container.streams.video[0]
                stream.codec_context.options = decoder_options(self.info.max_side)
                stream.thread_type = "AUTO"
                time_base = _time_base(stream, self.info.path)
                start_time = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
                start_pts = self.info.frame_times[first_stored] + start_time
                if first_stored > 0:
                    container.seek(int(start_pts / time_base), stream=stream, backward=True)
                stored_index = -1
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    stored_index = self._stored_index(float(frame.pts * time_base) - start_time, stored_index)
                    if stored_index < first_stored:
                        continue
                    image = None
                    while grid_index < stop and self._sources[grid_index] == stored_index:
                        # A frame shown twice (variable frame rate) is a copy: engines draw on frames in place.
                        image = self._compact(frame) if image is None else image.copy()
                        yield grid_index, image
                        grid_index += 1
                    if stored_index >= last_stored:
                        break
        except _MEDIA_ERRORS:
            raise InputError(f"video file is corrupt or truncated: {self.info.path.name}") from None
        if grid_index < stop:
            raise InputError(f"video file is truncated: frames after {grid_index / self.info.fps:.2f} s are missing")

    def _stored_index(self, pts_s: float, previous: int) -> int:
        """The stored frame at `pts_s` seconds from the stream's start (previous: the index of the one before)."""
        time = pts_s - self.info.frame_times[0]
        index = int(np.searchsorted(self.info.frame_times, time + 1e-4, side="right")) - 1
        # Timestamps can collide after rounding; frames still arrive in presentation order.
        return max(index, previous + 1) if previous >= 0 else max(index, 0)

    def _compact(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame upright at the output size: its I420 planes where it decodes as yuv420p at that size and needs
        no turn, else BGR."""
        rotation = self.info.rotation
        stored_w, stored_h = self.size if rotation in (0, 180) else self.size[::-1]
        if (frame.width, frame.height) != (stored_w, stored_h):
            image = frame.to_ndarray(format="bgr24", width=stored_w, height=stored_h, interpolation="AREA")
        elif frame.format.name == "yuv420p":
            image = frame.to_ndarray()
            if rotation == 0:
                return image
            image = to_bgr(image)
        else:
            image = frame.to_ndarray(format="bgr24")
        return image if rotation == 0 else np.ascontiguousarray(np.rot90(image, k=rotation // 90))


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A frame from VideoReader.compact_frames as BGR: I420 planes converted, BGR as it is."""
    import cv2  # OpenCV where frames are converted: reading a speech (read_audio) needs none of it
    # OpenCV's SIMD conversion is about twice as fast as swscale's for this step.
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if image.ndim == 2 else image


class EncoderError(RuntimeError):
    """The encoder process failed; its own last words are in the message."""


@dataclasses.dataclass(frozen=True)
class BoxedVideo:
    """What the encoder lays the piped frames over (heygem.pipeline.crops): `video` as it decodes, its first
    `frames` frames (played again from its start while more are wanted, with `loops`), each under the piped image
    of the `box` (x0, y0, x1, y1; even corners). The box of each frame as decoded goes to `check_path` as ffmpeg's
    framecrc, so the caller can tell the frames under the boxes were those the boxes were rendered from."""

    video: VideoInfo
    box: tuple[int, int, int, int]
    frames: int
    loops: bool
    check_path: Path


class VideoWriter:
    """Pipes frames into ffmpeg (libx264 yuv420p) and muxes the given audio (AAC, +faststart).

    Frames are converted to yuv420p here (OpenCV is faster than ffmpeg's converter and the pipe carries half
    the bytes), so the encoder process spends its core on encoding. With `live`, the same packets also go to
    a live HLS stream (see output_args): one encode, two files. With `boxed`, the pipe carries only a box of each
    frame, as yuv420p planes (`write_planar`), and the encoder decodes the rest from the video itself.
    """

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, audio_path: Path, duration: float,
                 preset: str, crf: int, audio_bitrate: str, live: LiveOutput | None = None,
                 boxed: BoxedVideo | None = None) -> None:
        width, height = size
        pipe = ["-thread_queue_size", "64", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-r", str(rate)]
        if boxed is None:
            inputs, graph, video_map, checks = [*pipe, "-s", f"{width}x{height}", "-i", "-"], [], "0:v:0", []
        else:
            x0, y0, x1, y1 = boxed.box
            crop = f"{x1 - x0}:{y1 - y0}:{x0}:{y0}"
            inputs = [*(["-stream_loop", "-1"] if boxed.loops else []),
                      *ffmpeg_input_args(boxed.video.path, "video", None, boxed.video.max_side),
                      *pipe, "-s", f"{x1 - x0}x{y1 - y0}", "-i", "-"]
            # Frame n of the output is frame n of the video and box n of the pipe: both numbered from 0 at the
            # video's rate, whatever timestamps the file has.
            graph = ["-filter_complex",
                     f"[0:v:0]trim=end_frame={boxed.frames},setpts=N/({rate}*TB),split[video][seen];"
                     f"[seen]crop={crop}[check];[video][1:v]overlay={x0}:{y0}:eof_action=endall[out]"]
            video_map = "[out]"
            checks = ["-map", "[check]", "-c:v", "rawvideo", "-f", "framecrc", str(boxed.check_path)]
        audio_input = 1 if boxed is None else 2
        args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *inputs,
                *ffmpeg_input_args(audio_path, "audio", None, DECODE_MAX_SIDE), *graph, "-map", video_map,
                "-map", f"{audio_input}:a:0", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", audio_bitrate, "-t", f"{duration:.4f}",
                *output_args(path, live), *checks]
        self.path = path
        self._size = size
        self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stdin: IO[bytes] = self._process.stdin  # type: ignore[assignment]
        # Beyond the system's limit (or the user's pipe-buffer quota) the pipe keeps its size: only slower.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._stdin.fileno(), fcntl.F_SETPIPE_SZ, ENCODER_PIPE_BYTES)

    def write(self, frame: np.ndarray) -> None:
        import cv2  # see to_bgr

        if frame.shape[1::-1] != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self.write_planar(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420))

    def write_planar(self, planar: np.ndarray) -> None:
        """A frame (or, boxed, a box) as contiguous yuv420p planes."""
        try:
            self._stdin.write(planar.data.cast("B"))
        except BrokenPipeError:
            self._fail()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        if self._process.wait() != 0:
            self._fail()

    def abort(self) -> None:
        self._process.kill()
        self._process.wait()

    def _fail(self) -> None:
        self._process.kill()
        self._process.wait()
        message = self._process.stderr.read().decode(errors="replace").strip() if self._process.stderr else ""
        raise EncoderError(f"ffmpeg failed to encode {self.path.name}: {message[-500:]}")


def output_args(path: Path, live: LiveOutput | None) -> list[str]:
    """ffmpeg's output arguments: the MP4 alone, or the MP4 and the live stream through the tee muxer.

    A segment can only begin at a keyframe, so with a stream there is one at every segment boundary (the
    result's keyframe gap is then at most segment_s: about 1 % larger at 2 s, see docs/benchmarks.md). Both
    muxers take the codec headers from the streams' global headers. A failing stream (a full disk) is dropped
    and the result carries on: the preview must never cost the task.
    """
    if live is None:
        return ["-movflags", "+faststart", "-f", "mp4", str(path)]
    stream = live.stream
    hls = {"f": "hls", "hls_time": f"{live.segment_s:g}", "hls_playlist_type": "event", "hls_segment_type": "fmp4",
           "hls_fmp4_init_filename": INIT_NAME, "hls_segment_filename": str(stream.folder / SEGMENT_PATTERN),
           "hls_flags": "independent_segments+temp_file", "onfail": "ignore"}
    slaves = [_tee_slave({"f": "mp4", "movflags": "+faststart"}, path), _tee_slave(hls, stream.playlist)]
    return ["-force_key_frames", f"expr:gte(t,n_forced*{live.segment_s:g})", "-flags", "+global_header",
            "-f", "tee", "|".join(slaves)]


def _tee_slave(options: dict[str, str], path: Path) -> str:
    """One output of the tee muxer, "[key=value:...]path", escaped for any path (spaces, ':', '|', quotes).

    The tee muxer splits its outputs at '|', then reads each option value up to ':' or ']', unescaping '\\'
    and quotes at each step: a value is escaped for both steps, the path after ']' for the first only.
    """
    spec = ":".join(f"{key}={_escape(_escape(value, ':]'), '|')}" for key, value in options.items())
    return f"[{spec}]{_escape(str(path), '|')}"


def _escape(text: str, specials: str) -> str:
    return "".join(f"\\{char}" if char in specials or char in "\\'" else char for char in text)
