"""Which media HeyGem opens, declared once for intake and workers alike: container formats by the demuxer that
libavformat picks for the content (never by the file's name), read from the file itself only, and frames no larger
than a stated size.

A demuxer can open other files: an HLS playlist (`hls`) or a concat list (`concat`) names files anywhere on the
machine, and `image2` reads a numbered sequence. A 90-byte playlist uploaded as speech made a task render a private
recording. So every open passes these as options, and libavformat enforces them before the demuxer reads anything:

- `format_whitelist`: the demuxer chosen by probing the content must be in the allow-list below, or the open fails
  before the demuxer's header is read (so before it opens any file it names);
- `protocol_whitelist` `file`: nothing is read from a network, a pipe, or through `concat:`/`subfile:` URLs;
- `max_pixels`: no decoder allocates a frame larger than the limit. Opening a file decodes a few frames to learn
  its streams (avformat_find_stream_info); without this, a 1.5 KB H.264 file declaring 16000x16000 frames made
  one open grow the process by 0.7 to 1.7 GB.

The allow-list holds only formats that declare their streams in their header: for these, the decoder options above
reach the frames decoded while the file is opened. MPEG-TS, MPEG-PS and FLV find their streams while those frames
are decoded, where no option reaches them, and are refused for that reason.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Literal

import av.format

MediaKind = Literal["audio", "video"]

# Demuxer name (one of the comma-separated names libavformat reports, as in container.format.name) -> what people
# call files of that format.
VIDEO_FORMATS: dict[str, str] = {
    "mov": "MP4/MOV/M4V/3GP",
    "matroska": "MKV/WebM",
    "avi": "AVI",
    "asf": "WMV/ASF",
}
AUDIO_FORMATS: dict[str, str] = {
    "mp3": "MP3",
    "wav": "WAV",
    "flac": "FLAC",
    "ogg": "Ogg/Opus",
    "aac": "AAC",
    "aiff": "AIFF",
    "caf": "CAF",
    **VIDEO_FORMATS,  # speech may come as the sound of a video
}
ALLOWED: dict[MediaKind, dict[str, str]] = {"audio": AUDIO_FORMATS, "video": VIDEO_FORMATS}
PROTOCOLS = "file"
# The largest frame side of an open whose caller names no limit (tests, benchmarks); tasks use media.max_input_side.
DECODE_MAX_SIDE = 8192
ROW_ALIGNMENT = 64

# Refused formats a person may meet, in words; others are named by their demuxer.
REFUSED_FORMATS: dict[str, str] = {
    "hls": "an HLS playlist, which names other files",
    "concat": "a concat list, which names other files",
    "image2": "an image sequence, which names other files",
    "mpegts": "an MPEG-TS stream, which finds its streams only by decoding them",
    "mpeg": "an MPEG program stream, which finds its streams only by decoding them",
    "flv": "an FLV file, which finds its streams only by decoding them",
}
IMAGE_SUFFIX = "_pipe"  # png_pipe, jpeg_pipe, webp_pipe, ...: one picture
PROBE_BYTES = 1 << 20  # what is read to name a refused file's format
# libavformat's HLS probe declines a playlist whose name does not end in .m3u8 (its own guard against playlists
# dressed as media); for naming what was refused, a file that starts as a playlist is probed under that suffix.
HLS_HEADER = b"#EXTM3U"
HLS_PROBE_SUFFIX = ".m3u8"
AVPROBE_PADDING_SIZE = 64  # libavformat reads this far past a probe buffer


def input_url(path: Path) -> str:
    """The `file:` URL of a path: a name such as `concat:a|b` or `http:x` stays a file name."""
    return f"file:{path.absolute()}"


def container_options(kind: MediaKind) -> dict[str, str]:
    return {"format_whitelist": ",".join(ALLOWED[kind]), "protocol_whitelist": PROTOCOLS}


def max_pixels(max_side: int) -> int:
    """Pixels a decoder may allocate for one frame whose sides are at most `max_side` (decoders round the width
    up to their row alignment, at most 64 pixels, before they compare)."""
    return (max_side + ROW_ALIGNMENT) * max_side


def decoder_options(max_side: int) -> dict[str, str]:
    return {"max_pixels": str(max_pixels(max_side))}


def ffmpeg_input_args(path: Path, kind: MediaKind, format_name: str | None, max_side: int) -> list[str]:
    """ffmpeg's arguments for reading `path` as an input, under the same rules as a PyAV open; with the demuxer
    PyAV found (`format_name`) forced where it is known."""
    forced = ["-f", format_name.split(",")[0]] if format_name else []
    return ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(ALLOWED[kind]),
            "-max_pixels", str(max_pixels(max_side)), *forced, "-i", input_url(path)]


def is_allowed(format_name: str, kind: MediaKind) -> bool:
    return any(name in ALLOWED[kind] for name in format_name.split(","))


def accepted_formats(kind: MediaKind) -> str:
    return ", ".join(dict.fromkeys(ALLOWED[kind].values()))


def describe_refused(path: Path, kind: MediaKind) -> str | None:
    """Why the allow-list refused `path`, in words ("is an HLS playlist, ..."), when the content is a format
    libavformat knows but `kind` does not allow; None when it is no format at all (then it is simply unreadable)."""
    name = probe_format_name(path)
    if name is None or is_allowed(name, kind):
        return None
    if kind == "video" and is_allowed(name, "audio"):
        sound = next(AUDIO_FORMATS[part] for part in name.split(",") if part in AUDIO_FORMATS)
        return f"has no video stream (it is {sound} sound)"
    if name.endswith(IMAGE_SUFFIX):
        return f"is a still image ({name.removesuffix(IMAGE_SUFFIX)})"
    return f"is {REFUSED_FORMATS.get(name, f'in the {name} format')}"


class _ProbeData(ctypes.Structure):
    _fields_ = [("filename", ctypes.c_char_p), ("buf", ctypes.c_char_p), ("buf_size", ctypes.c_int),
                ("mime_type", ctypes.c_char_p)]


def probe_format_name(path: Path) -> str | None:
    """The demuxer libavformat's probe picks for the file's first megabyte, without opening it as media.

    PyAV does not expose av_probe_input_format3; its own extension module links the libavformat it uses, so the
    symbol is looked up through that. Only for naming what was refused: where the lookup is unavailable the
    refusal simply does not name the format.
    """
    try:
        probe = ctypes.CDLL(av.format.__file__).av_probe_input_format3
    except (OSError, AttributeError):
        return None
    probe.restype = ctypes.POINTER(ctypes.c_char_p)  # AVInputFormat*, whose first member is its name
    probe.argtypes = [ctypes.POINTER(_ProbeData), ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    with path.open("rb") as handle:
        data = handle.read(PROBE_BYTES)
    buffer = ctypes.create_string_buffer(data, len(data) + AVPROBE_PADDING_SIZE)
    probed_name = f"{path}{HLS_PROBE_SUFFIX}" if data.startswith(HLS_HEADER) else str(path)
    request = _ProbeData(probed_name.encode(), ctypes.cast(buffer, ctypes.c_char_p), len(data), None)
    found = probe(ctypes.byref(request), 1, ctypes.byref(ctypes.c_int(0)))
    if not found or found[0] is None:
        return None
    return found[0].decode()
