"""A video's render box, cached: for each frame, the pixels of the one box every render of that video reads or
changes (LipSyncEngine.render_box), as decoded (I420), beside the video's analysis.

With them, a later render of the same video needs none of its frames in Python: the encoder decodes the video
itself and lays the rendered box over each frame (media.VideoWriter with a BoxedVideo), so Python converts,
renders and pipes a box of about a tenth of the frame instead of the whole frame, and every pixel outside the
box is exactly as the video decodes. The encoder also checks each frame's box as it decoded it against the box
rendered over it (`check_sums`, ffmpeg's framecrc): a render whose boxes do not match the video it lays them on
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
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    flat = frame.reshape(-1)
    luma, quarter = height * width, height * width // 4
    x0, y0, x1, y1 = box
    planes = (flat[:luma].reshape(height, width)[y0:y1, x0:x1],
              flat[luma:luma + quarter].reshape(height // 2, width // 2)[y0 // 2:y1 // 2, x0 // 2:x1 // 2],
              flat[luma + quarter:].reshape(height // 2, width // 2)[y0 // 2:y1 // 2, x0 // 2:x1 // 2])
    return np.concatenate([plane.reshape(-1) for plane in planes])


def crop_to_bgr(crop: np.ndarray, box: Box) -> np.ndarray:
    width, height = box_size(box)
    return to_bgr(crop.reshape(height * 3 // 2, width))


def merged_i420(original: np.ndarray, before: np.ndarray, rendered: np.ndarray, box: Box) -> np.ndarray:
    """The rendered box (BGR) as flat I420, every pixel the renderer left as it was (as `before`, the `original`
    planes in BGR) kept exactly as decoded: the colour conversion there and back would move some by a level."""
    width, height = box_size(box)
    blue, green, red = cv2.split(cv2.absdiff(before, rendered))
    changed = cv2.max(cv2.max(blue, green), red)  # nonzero where any channel changed
    # A chroma sample covers 2x2 pixels: it is the rendered one where any of them changed (a mean above 0).
    chroma_changed = cv2.resize(changed, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    converted = cv2.cvtColor(rendered, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    merged = original.copy()
    for kept, new, mask in zip(_planes(merged, box), _planes(converted, box), (changed, chroma_changed, chroma_changed),
                               strict=True):
        cv2.copyTo(new, mask, kept)
    return merged


def _planes(flat: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a box's flat I420 bytes."""
    width, height = box_size(box)
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
    """The boxes of one video (its analysis `key`) for one `box`, in `folder`."""

    def __init__(self, folder: Path, key: str, box: Box) -> None:
        self.folder = folder
        self.box = box
        self.path = folder / f"{key}.box-{box[0]}-{box[1]}-{box[2]}-{box[3]}.npy"

    def load(self, frames: int) -> np.ndarray | None:
        """The boxes of grid frames 0..frames-1 and after, as an (n, crop_bytes) read-only array mapped from the
        file; None when there is no file or it holds fewer frames."""
        try:
            crops = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cached frame boxes {}: {}", self.path.name, exc)
            return None
        if crops.ndim != 2 or crops.shape[1] != crop_bytes(self.box) or crops.dtype != np.uint8:
            logger.warning("ignoring cached frame boxes of another layout: {}", self.path.name)
            return None
        if len(crops) < frames:
            return None
        with contextlib.suppress(OSError):
            os.utime(self.path)  # most recently used
        return crops

    def recorder(self, frames: int, frame_size: tuple[int, int]) -> CropRecorder:
        return CropRecorder(self, frames, frame_size)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class CropRecorder:
    """Collects the boxes of grid frames 0..frames-1 as a render decodes them, then stores them (`commit`)
    atomically; a frame that is not I420 of the expected size stops the recording (its video cannot be laid
    under boxes: see generate.box_plan)."""

    def __init__(self, store: CropStore, frames: int, frame_size: tuple[int, int]) -> None:
        self.store = store
        self.frame_size = frame_size
        self._temporary: Path | None = None
        self._crops: np.memmap | None = None
        self._next = 0
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=store.folder, prefix=".partial-", suffix=".npy")
            os.close(handle)
            self._temporary = Path(name)
            self._crops = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8,
                                                    shape=(frames, crop_bytes(store.box)))
        except OSError as exc:
            logger.warning("frame boxes not cached: {}", exc)
            self.discard()

    @property
    def recording(self) -> bool:
        return self._crops is not None

    def add(self, grid_index: int, frame: np.ndarray) -> None:
        crops = self._crops
        if crops is None or grid_index != self._next or grid_index >= len(crops):
            return
        width, height = self.frame_size
        if frame.ndim != 2 or frame.shape != (height * 3 // 2, width):
            self.discard()
            return
        crops[grid_index] = crop_i420(frame, self.store.box)
        self._next += 1

    def commit(self) -> None:
        """Stores the boxes when every frame was recorded; otherwise (the render ended early) drops them."""
        crops, temporary = self._crops, self._temporary
        if crops is None or temporary is None or self._next < len(crops):
            self.discard()
            return
        try:
            crops.flush()
            self._crops = None
            os.replace(temporary, self.store.path)
            self._temporary = None
        except OSError as exc:
            logger.warning("frame boxes not cached: {}", exc)
            self.discard()

    def discard(self) -> None:
        self._crops = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None

