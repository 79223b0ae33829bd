"""A task's live preview: the HLS stream its encoder writes while it renders, and the name of every file in it.

The stream is an EVENT playlist of fragmented-MP4 segments, muxed from the same encode as the result
(heygem.pipeline.media.VideoWriter hands the encoder's packets to both with ffmpeg's tee muxer). Its files are
named here and nowhere else: the encoder writes them, the supervisor ends or removes them, the API serves them.
The ray backend copies exactly these files back to the head (heygem.supervisor.backends.ray_node, with
`LiveStream.put`), the playlist last, so that the head's playlist never names a segment the head does not have yet.

ffmpeg writes each segment as <name>.tmp and renames it when complete, and replaces the playlist whole (an
EVENT playlist is always written to a temporary file first), so a reader never sees half of either.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO

from heygem.config import Config
from heygem.files import open_regular_file

PLAYLIST_NAME = "live.m3u8"
# Every other file of a stream begins so; the playlist names them relative to itself.
SEGMENT_PREFIX = "live-"
INIT_NAME = f"{SEGMENT_PREFIX}init.mp4"
# ffmpeg's pattern for the media segments; five digits last 55 hours at 2 s a segment.
SEGMENT_PATTERN = f"{SEGMENT_PREFIX}%05d.m4s"
# Every file a player may fetch besides the playlist; nothing else in the folder (e.g. a .tmp) is ever served.
SEGMENT_NAME = re.compile(rf"{SEGMENT_PREFIX}(?:init\.mp4|[0-9]{{5}}\.m4s)")
SEGMENT_TAG = "#EXTINF:"
END_TAG = "#EXT-X-ENDLIST"
# What ffmpeg leaves of the segment (or playlist) it was writing when it was killed.
UNFINISHED = "*.tmp"
# Where the API serves a task's stream, from the server's root (heygem.api.live); the studio plays it from there.
STREAM_URL = "api/v1/tasks/{code}/"


@dataclasses.dataclass(frozen=True)
class LiveStream:
    """The files of one task's stream, all in one folder."""

    folder: Path

    @property
    def playlist(self) -> Path:
        return self.folder / PLAYLIST_NAME

    def open_segment(self, name: str) -> BinaryIO | None:
        """The segment (or init segment) `name`, opened for reading, if it is one and has been written; else None.

        Only a regular file of this folder: not a folder, a FIFO or a device, and not a link (nothing here makes
        one, so a link is not ours); heygem.files.open_regular_file. It touches the disk: call it off the event loop.
        """
        return open_regular_file(self.folder / name) if SEGMENT_NAME.fullmatch(name) else None

    def read_playlist(self) -> str | None:
        """The playlist as the encoder last wrote it; None while there is none (before the first segment), or when
        what has its name is not a regular file: a FIFO there would hold the reading thread for good."""
        playlist = open_regular_file(self.playlist)
        if playlist is None:
            return None
        with playlist:
            return playlist.read().decode("utf-8")

    def put(self, name: str, content: bytes) -> None:
        """Write one file of the stream that was made elsewhere (a worker on another machine), whole or not at all.

        Only the stream's own names: the playlist, or a segment; anything else a node might send is refused.
        """
        if name != PLAYLIST_NAME and not SEGMENT_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a file of a live stream")
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f"{name}.tmp"  # what end() clears, and what the API never serves
        temporary.write_bytes(content)
        os.replace(temporary, self.folder / name)

    def end(self) -> None:
        """The task ended, however: a stream whose encoder died without closing it gets the end tag, so players
        play what there is and stop instead of waiting for more; one without a playlist (no segment yet) goes.

        Only call it once the encoder is gone: it would replace this playlist with its next one.
        """
        for leftover in self.folder.glob(UNFINISHED):
            leftover.unlink(missing_ok=True)
        text = self.read_playlist()
        if text is None:
            self.remove()
        elif not is_ended(text):
            temporary = self.playlist.with_name(f"{PLAYLIST_NAME}.ending")
            temporary.write_text(f"{text.rstrip()}\n{END_TAG}\n", encoding="utf-8")
            os.replace(temporary, self.playlist)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def live_stream(config: Config, code: str) -> LiveStream:
    """Where the task's stream lives on this server: <data_dir>/live/<code>/ (a task code is a plain name)."""
    return LiveStream(config.paths.live_dir / code)


def playlist_url(code: str) -> str:
    """The playlist's URL relative to the server's root; the segments' URLs are relative to it."""
    return STREAM_URL.format(code=code) + PLAYLIST_NAME


def segment_count(playlist: str) -> int:
    return sum(line.startswith(SEGMENT_TAG) for line in playlist.splitlines())


def is_ended(playlist: str) -> bool:
    return any(line.strip() == END_TAG for line in playlist.splitlines())
