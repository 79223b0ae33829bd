"""A video's render box, cached: for each frame, the pixels of the one box every render of that video reads or
changes (LipSyncEngine.render_box), as decoded (I420), beside the video's analysis.

With them, a later render of the same video needs none of its frames in Python: the encoder decodes the video
itself and lays the rendered box over each frame (media.VideoWriter with a BoxedVideo), so Python converts,
renders and pipes that box instead of the whole frame (37 % of the bench clip's 720p frame, where the face fills
it; 7 % of the 1080x1920 selfie's), and every pixel outside the box is exactly as the video decodes. The encoder
also writes the checksum of each frame's box as it decoded it (ffmpeg's framecrc, `read_check_sums`), compared with
those of the boxes rendered over them (`check_sum`): a render whose boxes do not match the video it lays them on
is found out, not shipped.

A render that decodes the video anyway (the first one, or one the box does not serve) records the boxes on the
way (`CropRecorder`), for the frames it shows from the video's start on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from loguru import logger

from heygem.pipeline.engine import Box
from heygem.pipeline.media import to_bgr

# One file per video analysis key and box; the analysis cache's eviction counts these files too.
CROPS_GLOB = "*.box-*.npy"


def box_size(box: Box) -> tuple[int, int]:
    return box[2] - box[0], box[3] - box[1]


def crop_bytes(box: Box) -> int:
    width, height = box_size(box)
    return width * height * 3 // 2


def crop_i420(frame: np.ndarray, box: Box) -> np.ndarray:
    """The box of an I420 frame (VideoReader.compact_frames' (h * 3/2, w) planes) as the I420 planes of the box
    alone, flat: its luma rows, then its two chroma planes. The box's corners must be even."""
    x0, y0, x1, y1 = box
    luma, blue, red = _planes(frame.reshape(-1), frame.shape[1], frame.shape[0] * 2 // 3)
    chroma = (slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2))
    return np.concatenate([luma[y0:y1, x0:x1].reshape(-1), blue[chroma].reshape(-1), red[chroma].reshape(-1)])


def crop_to_bgr(crop: np.ndarray, box: Box) -> np.ndarray:
    width, height = box_size(box)
    return to_bgr(crop.reshape(height * 3 // 2, width))


def merged_i420(original: np.ndarray, before: np.ndarray, rendered: np.ndarray, box: Box) -> np.ndarray:
    """The rendered box (BGR) as flat I420, every pixel the renderer left as it was (as `before`, the `original`
    planes in BGR) kept exactly as decoded: the colour conversion there and back would move some by a level."""
    width, height = box_size(box)
    # Nonzero where any channel changed: each changed channel at 255 weighs at least 29 in the grey (a tenth of
    # the time cv2.split and two cv2.max take).
    _, moved = cv2.threshold(cv2.absdiff(before, rendered), 0, 255, cv2.THRESH_BINARY)
    changed = cv2.cvtColor(moved, cv2.COLOR_BGR2GRAY)
    # A chroma sample covers 2x2 pixels: it is the rendered one where any of them changed (a mean above 0).
    chroma_changed = cv2.resize(changed, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    converted = cv2.cvtColor(rendered, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    merged = original.copy()
    for kept, new, mask in zip(_planes(merged, width, height), _planes(converted, width, height),
                               (changed, chroma_changed, chroma_changed), strict=True):
        cv2.copyTo(new, mask, kept)
    return merged


def _planes(flat: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a width x height image's flat I420 bytes."""
    luma, quarter = width * height, width * height // 4
    return (flat[:luma].reshape(height, width), flat[luma:luma + quarter].reshape(height // 2, width // 2),
            flat[luma + quarter:].reshape(height // 2, width // 2))


def check_sum(crop: np.ndarray) -> int:
    """The sum ffmpeg's framecrc muxer writes for a frame of these bytes (Adler-32 started from 0)."""
    return zlib.adler32(crop.data, 0)


def read_check_sums(path: Path) -> list[int]:
    """The per-frame sums of a framecrc file, in frame order."""
    sums = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            sums.append(int(line.rsplit(",", 1)[1].strip(), 16))
    return sums


class CropStore:
    """The boxes of one video (its analysis `key`) for one `box`, in `folder`: an .npy file of (frames,
    crop_bytes) uint8, read and written a box at a time with plain file I/O (a mapping would count the whole file
    in the render's resident memory)."""

    def __init__(self, folder: Path, key: str, box: Box) -> None:
        self.folder = folder
        self.box = box
        self.path = folder / f"{key}.box-{box[0]}-{box[1]}-{box[2]}-{box[3]}.npy"

    def load(self, frames: int) -> StoredCrops | None:
        """The boxes of grid frames 0..frames-1 (and any after); None when there is no file or it holds fewer
        frames."""
        try:
            file = open(self.path, "rb")  # noqa: SIM115 (StoredCrops keeps it open; its user closes it)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("ignoring unreadable cached frame boxes {}: {}", self.path.name, exc)
            return None
        try:
            # Written by CropRecorder, in format 1.0; any other file is not ours.
            if np.lib.format.read_magic(file) != (1, 0):
                raise ValueError("not an .npy file of format 1.0")
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            offset = file.tell()
            if len(shape) != 2 or shape[1] != crop_bytes(self.box) or dtype != np.uint8 or fortran_order:
                raise ValueError("boxes of another size")
            if shape[0] < frames or os.fstat(file.fileno()).st_size < offset + shape[0] * shape[1]:
                file.close()
                return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cached frame boxes {}: {}", self.path.name, exc)
            file.close()
            return None
        with contextlib.suppress(OSError):
            os.utime(self.path)  # most recently used
        return StoredCrops(file, offset, shape[1])

    def recorder(self, frames: int, frame_size: tuple[int, int]) -> CropRecorder:
        return CropRecorder(self, frames, frame_size)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class StaleCrops(Exception):
    """The cached boxes cannot be read to the end (the file was cut short); the render goes back to whole frames."""


class StoredCrops:
    """The boxes of a CropStore file, read one at a time (`crops[grid_index]`) from the file as it was opened (a
    worker that removes or replaces it meanwhile changes nothing here)."""

    def __init__(self, file: BinaryIO, offset: int, size: int) -> None:
        self.file, self.offset, self.size = file, offset, size

    def __getitem__(self, grid_index: int) -> np.ndarray:
        try:
            data = os.pread(self.file.fileno(), self.size, self.offset + int(grid_index) * self.size)
        except OSError as exc:
            raise StaleCrops(str(exc)) from exc
        if len(data) != self.size:
            raise StaleCrops(f"cached frame boxes end before frame {grid_index}")
        return np.frombuffer(data, np.uint8)

    def close(self) -> None:
        self.file.close()


class CropRecorder:
    """Writes the boxes of grid frames 0..frames-1 as a render decodes them, then stores them (`commit`)
    atomically; a frame that is not I420 of the expected size stops the recording (its video cannot be laid
    under boxes: see generate.plan_box)."""

    def __init__(self, store: CropStore, frames: int, frame_size: tuple[int, int]) -> None:
        self.store = store
        self.frames = frames
        self.frame_size = frame_size
        self._temporary: Path | None = None
        self._file: BinaryIO | None = None
        self._next = 0
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=store.folder, prefix=".partial-", suffix=".npy")
            self._temporary = Path(name)
            self._file = os.fdopen(handle, "wb")
            np.lib.format.write_array_header_1_0(self._file, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                "shape": (frames, crop_bytes(store.box))})
        except OSError as exc:
            logger.warning("frame boxes not cached: {}", exc)
            self.discard()

    def add(self, grid_index: int, frame: np.ndarray) -> None:
        if self._file is None or grid_index != self._next or grid_index >= self.frames:
            return
        width, height = self.frame_size
        if frame.ndim != 2 or frame.shape != (height * 3 // 2, width):
            self.discard()
            return
        try:
            self._file.write(crop_i420(frame, self.store.box).data)
        except OSError as exc:
            logger.warning("frame boxes not cached: {}", exc)
            self.discard()
            return
        self._next += 1

    def commit(self) -> None:
        """Stores the boxes when every frame was recorded; otherwise (the render ended early) drops them."""
        if self._file is None or self._temporary is None or self._next < self.frames:
            self.discard()
            return
        try:
            self._file.close()
            self._file = None
            os.replace(self._temporary, self.store.path)
            self._temporary = None
        except OSError as exc:
            logger.warning("frame boxes not cached: {}", exc)
            self.discard()

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None
