"""What is learnt from a video once and reused by every speech rendered over it: the tracked landmarks of
every frame and the mouth bank (heygem.pipeline.mouthbank).

HeyGem users render one template video with many speeches, so the analysis is cached under
<paths.data_dir>/analysis by the video's content hash together with everything that shapes the result (this
module's ANALYSIS_VERSION, the processing size, the tracker and bank settings). Writes are atomic (a
temporary file renamed into place) and one lock file per key makes a second worker wait for the first
worker's analysis instead of repeating it. The folder is kept under a size bound by evicting the entries
least recently used (each hit refreshes its file's modification time).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import mmap
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from loguru import logger

from heygem.pipeline.crops import CROPS_GLOB
from heygem.pipeline.media import VideoInfo, VideoReader, to_bgr
from heygem.pipeline.mouthbank import BankBuilder, BankSettings, MouthBank
from heygem.pipeline.tracking import FaceTracker, TrackerSettings

# Bump whenever tracking, the bank's contents or this file format change: older cache entries are then ignored
# (and evicted in time), never misread.
ANALYSIS_VERSION = 4
_SUFFIX = ".npz"
# Tracked frames that may wait for their bank entry (each holds its BGR frame).
_ENTRIES_AHEAD = 8


@dataclasses.dataclass
class VideoAnalysis:
    landmarks: list[np.ndarray | None]  # per video grid frame: (468, 2) float32 pixels, None where no face
    bank: MouthBank
    cached: bool = False  # read from the cache rather than computed by this task
    key: str | None = None  # its key in the cache (analysis_key); None: the cache is off


class FrameTail:
    """The last frames an analysis decoded, at most `max_bytes` of them, handed on to rendering so that it need not
    decode them again. They are held as decoded (VideoReader.compact_frames: I420 where it can, half the bytes of
    BGR), so the same memory keeps twice as many, in one block allocated with the first frame: a frame copied in
    leaves no long-lived piece of its own between the job's short-lived ones, which the allocator would keep.

    The tail, not the head: rendering decodes from the first frame on, and starting its decoder after a kept head
    would decode again from the keyframe before it, often the video's first frame.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._slots: np.ndarray | None = None  # (capacity, *frame shape): a ring of frames
        self._indices: collections.deque[int] = collections.deque()  # grid index of each frame kept, oldest first
        self._oldest = 0  # the slot of the oldest frame kept
        self._expected: int | None = None  # frames to come (expect), which bound the block's size

    def expect(self, frames: int) -> None:
        """At most this many frames will be added: the block holds no more slots than that."""
        self._expected = frames

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def nbytes(self) -> int:
        return 0 if self._slots is None else len(self._indices) * self._slots[0].nbytes

    def add(self, grid_index: int, frame: np.ndarray) -> None:
        """Keeps a copy of `frame` (as compact_frames yields it; the frames come in grid order), dropping the oldest
        ones beyond max_bytes."""
        if self._slots is not None and (self._slots.shape[1:], self._slots.dtype) != (frame.shape, frame.dtype):
            self.clear()  # another layout (a stream that changes format): the frames before it are not kept
        if self._slots is None:
            capacity = self.max_bytes // max(frame.nbytes, 1)
            if self._expected is not None:
                capacity = min(capacity, self._expected)
            if capacity == 0:
                return
            # Anonymous memory without the transparent huge pages numpy asks for on large arrays: compacting memory
            # for them cost up to 0.4 s of system time per first render here, more than faulting in small pages.
            # Its pages are all mapped at once (MAP_POPULATE; the frames fill every slot unless the video is shorter
            # than expected): a page fault per 4 KB while copying in cost twice the CPU (0.25 s against 0.12 s for
            # 8 s of 720p).
            block = mmap.mmap(-1, capacity * frame.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (
                mmap.MAP_POPULATE if self._expected is not None else 0))
            self._slots = np.frombuffer(block, frame.dtype).reshape(capacity, *frame.shape)
        capacity = len(self._slots)
        if len(self._indices) == capacity:
            self._indices.popleft()
            self._oldest = (self._oldest + 1) % capacity
        self._slots[(self._oldest + len(self._indices)) % capacity] = frame
        self._indices.append(grid_index)

    def start(self) -> int | None:
        """The grid index of the first frame kept (the rest up to the video's end follow); None: none kept."""
        return self._indices[0] if self._indices else None

    def take(self) -> tuple[int, np.ndarray]:
        """The first frame kept, as decoded (a copy of its own: `to_bgr` turns it into a BGR frame), no longer held
        here."""
        assert self._slots is not None
        grid_index = self._indices.popleft()
        kept = self._slots[self._oldest]
        self._oldest = (self._oldest + 1) % len(self._slots)
        return grid_index, kept.copy()

    def clear(self) -> None:
        self._slots = None
        self._indices.clear()
        self._oldest = 0


def analyse_video(video: VideoInfo, size: tuple[int, int], tracker: TrackerSettings, bank: BankSettings,
                  tail: FrameTail | None = None) -> VideoAnalysis:
    """Decodes and tracks every frame of the video once, collecting the mouth bank on the way (and keeping the
    last frames in `tail`).

    Three threads, so both cores work (PyAV, MediaPipe and OpenCV release the GIL): one decodes (and fills the tail),
    this one tracks, and one builds the bank's entries from the tracked frames. The face mesh waits on MediaPipe's
    own threads for each frame, so the tracking thread is the chain that sets the analysis' wall time: it does
    nothing else.
    """
    face_tracker = FaceTracker(video.fps, tracker)
    builder = BankBuilder(bank, video.frame_count)
    landmarks: list[np.ndarray | None] = []
    frames: queue.Queue[tuple[int, np.ndarray] | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def offer(item: tuple[int, np.ndarray] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def decode() -> None:
        try:
            for grid_index, compact in VideoReader(video, size).compact_frames():
                if tail is not None:
                    tail.add(grid_index, compact)
                offer((grid_index, to_bgr(compact)))
            offer(None)
        except BaseException as exc:  # handed to the tracking thread, which raises it
            offer(exc)

    if tail is not None:
        tail.expect(video.frame_count)
    decoder = threading.Thread(target=decode, name="analysis-decode", daemon=True)
    decoder.start()
    entries = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis-bank")
    pending: collections.deque[Future[None]] = collections.deque()
    try:
        while (item := frames.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            grid_index, frame = item
            points = face_tracker.track(frame)
            landmarks.append(points)
            pending.append(entries.submit(builder.add, grid_index, frame, points))
            while pending and (len(pending) > _ENTRIES_AHEAD or pending[0].done()):
                pending.popleft().result()  # raises what building the entry raised
        while pending:
            pending.popleft().result()
    finally:
        stop.set()
        entries.shutdown(cancel_futures=True)
        face_tracker.close()
        decoder.join()
    return VideoAnalysis(landmarks=landmarks, bank=builder.bank())


def analysis_key(video: VideoInfo, size: tuple[int, int], tracker: TrackerSettings, bank: BankSettings) -> str:
    """The cache key: the video's content hash and everything else the analysis depends on."""
    digest = hashlib.sha256()
    with open(video.path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    recipe = {"version": ANALYSIS_VERSION, "size": list(size), "tracker": dataclasses.asdict(tracker),
              "bank": dataclasses.asdict(bank), "content": digest.hexdigest()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:40]


class AnalysisCache:
    """Analyses on disk in `folder`, at most `max_mb` megabytes in all (0: no caching)."""

    def __init__(self, folder: Path, max_mb: float) -> None:
        self.folder = folder
        self.max_bytes = int(max_mb * 2**20)

    def analysis(self, video: VideoInfo, size: tuple[int, int], tracker: TrackerSettings, bank: BankSettings,
                 tail: FrameTail | None = None) -> VideoAnalysis:
        """The cached analysis of `video`, or a new one (then stored; its last frames kept in `tail`)."""
        if self.max_bytes <= 0:
            return analyse_video(video, size, tracker, bank, tail)
        key = analysis_key(video, size, tracker, bank)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}{_SUFFIX}"
        with self._locked(key):
            found = self._read(path)
            if found is not None:
                logger.info("video analysis from the cache ({})", path.name)
                found.key = key
                return found
            analysis = analyse_video(video, size, tracker, bank, tail)
            analysis.key = key
            self._write(path, analysis)
        self.evict(keep=path)
        return analysis

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with open(self.folder / f"{key}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, path: Path) -> VideoAnalysis | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                analysis = from_arrays(dict(data))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring an unreadable video analysis {}: {}", path.name, exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return analysis

    def _write(self, path: Path, analysis: VideoAnalysis) -> None:
        try:
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=_SUFFIX)
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **to_arrays(analysis))
            os.replace(temporary, path)
        except OSError as exc:
            # A full or read-only disk costs the next task an analysis, never this task its result.
            logger.warning("video analysis not cached: {}", exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temporary)

    def evict(self, keep: Path) -> None:
        """Removes the least recently used analyses and frame boxes (heygem.pipeline.crops) until the folder fits
        max_mb again."""
        entries = []
        for path in [*self.folder.glob(f"*{_SUFFIX}"), *self.folder.glob(CROPS_GLOB)]:
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path == keep or path.name.startswith(".partial-"):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                if path.suffix == _SUFFIX:
                    path.with_suffix(".lock").unlink(missing_ok=True)
            total -= size


def to_arrays(analysis: VideoAnalysis) -> dict[str, np.ndarray]:
    """Plain arrays (no pickled objects) for np.savez."""
    bank = analysis.bank
    landmarks = np.full((len(analysis.landmarks), 468, 2), np.nan, np.float32)
    for index, points in enumerate(analysis.landmarks):
        if points is not None:
            landmarks[index] = points
    sizes = np.array([len(patch) for patch in bank.patches], np.int64)
    patches = np.frombuffer(b"".join(bank.patches), np.uint8)
    return {"landmarks": landmarks, "frames": bank.frames, "bank_landmarks": bank.landmarks, "gap": bank.gap,
            "width": bank.width, "turn": bank.turn, "teeth": bank.teeth, "dark": bank.dark, "reference": bank.reference,
            "origin": bank.origin, "patch_sizes": sizes, "patches": patches}


def from_arrays(data: dict[str, np.ndarray]) -> VideoAnalysis:
    ends = np.cumsum(data["patch_sizes"])
    blob = data["patches"].tobytes()
    patches = [blob[end - size:end] for end, size in zip(ends, data["patch_sizes"], strict=True)]
    landmarks: list[np.ndarray | None] = [None if np.isnan(points[0, 0]) else points for points in data["landmarks"]]
    bank = MouthBank(frames=data["frames"], landmarks=data["bank_landmarks"], gap=data["gap"], width=data["width"],
                     turn=data["turn"], teeth=data["teeth"], dark=data["dark"], reference=data["reference"],
                     origin=data["origin"], patches=patches)
    return VideoAnalysis(landmarks=landmarks, bank=bank, cached=True)
