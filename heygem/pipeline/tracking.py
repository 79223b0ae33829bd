"""One face per video, tracked frame by frame: full-range detection, face mesh on a crop, temporal smoothing.

The mesh's own detector is short-range and misses small faces (a 230 px face in a 1080x1920 frame), so the
full-range detector finds the face and the mesh runs on a square crop around it. Later frames crop around the
previous landmarks and only fall back to detection when the mesh loses the face.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

import cv2
import numpy as np

# Landmark indices of the face mesh (468 points) that the pipeline and the engines use.
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
CHIN = 152
NOSE_TIP = 1
NOSE_BASE = 2
FACE_LEFT = 234
FACE_RIGHT = 454
LEFT_EYE_OUTER = 33
RIGHT_EYE_OUTER = 263
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Jaw line from the left face side down around the chin to the right side.
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
LANDMARK_COUNT = 468

# What importing MediaPipe's face solutions runs and they do not use (see import_mediapipe).
_UNUSED_MODULES = (*(f"mediapipe.python.solutions.{name}" for name in (
    "drawing_utils", "drawing_styles", "hands", "hands_connections", "holistic", "objectron", "pose",
    "selfie_segmentation")), "mediapipe.tasks", "mediapipe.tasks.python")
_IMPORT_LOCK = threading.Lock()
# The full-range detector sees the frame at this longest side; it resizes to 192 px internally anyway.
_DETECT_SIDE = 640
# While no face is found, tiles of the frame are searched too, on every this many frames (2-4 detections).
_TILES_EVERY = 5


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    min_confidence: float  # detection and mesh confidence
    crop_scale: float  # mesh crop side as a multiple of the face size
    mesh_size: int  # the crop is resized to this side before the mesh sees it
    smooth_min_cutoff: float  # One Euro filter: cut-off (Hz) at rest; lower = steadier, more lag
    smooth_beta: float  # One Euro filter: how fast the cut-off rises with speed; higher = less lag


def import_mediapipe() -> tuple[ModuleType, ModuleType]:
    """MediaPipe's face detection and face mesh modules, imported without the rest of the package.

    `mediapipe` imports every solution, their drawing helpers (which import matplotlib: 0.3 s) and the Tasks API
    (which loads PortAudio for its audio tasks): about 0.15 s of CPU of a first render's start-up on top, for
    nothing used here. Placeholders stand in for those modules during the import and are removed afterwards, so
    a later import of any of them loads the real module.
    """
    with _IMPORT_LOCK:
        placeholders = [] if "mediapipe.python.solutions" in sys.modules else [
            name for name in _UNUSED_MODULES if name not in sys.modules]
        for name in placeholders:
            sys.modules[name] = ModuleType(name)
        try:
            from mediapipe.python.solutions import face_detection, face_mesh
        finally:
            for name in reversed(placeholders):  # a package's placeholder after its children's
                sys.modules.pop(name, None)
                parent, _, child = name.rpartition(".")
                with contextlib.suppress(AttributeError, KeyError):
                    delattr(sys.modules[parent], child)
    return face_detection, face_mesh


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Discards what native code writes to file descriptor 2 meanwhile.

    MediaPipe's C++ side prints a dozen INFO/WARNING lines when its graphs start, whatever the log level;
    they would bury the CLI's own messages. Only graph start-up runs inside this.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner lip gap over mouth width: 0 closed, about 0.1 speaking, 0.4 and more wide open."""
    width = float(np.linalg.norm(landmarks[MOUTH_RIGHT] - landmarks[MOUTH_LEFT]))
    gap = float(np.linalg.norm(landmarks[LOWER_LIP_INNER] - landmarks[UPPER_LIP_INNER]))
    return gap / max(width, 1e-6)


def face_size(landmarks: np.ndarray) -> float:
    """Face width in pixels (side to side), the unit for everything relative to the face."""
    return float(np.linalg.norm(landmarks[FACE_RIGHT] - landmarks[FACE_LEFT]))


class OneEuroFilter:
    """One Euro filter (Casiez et al. 2012) over an array: steady when still, little lag when moving fast."""

    def __init__(self, rate_hz: float, min_cutoff: float, beta: float, derivative_cutoff: float = 1.0) -> None:
        self.rate_hz = rate_hz
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def reset(self) -> None:
        self._value = None
        self._speed = None

    def __call__(self, value: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filters one sample; `scale` expresses speed in units where beta is meaningful (face widths)."""
        if self._value is None or self._speed is None:
            self._value = value.copy()
            self._speed = np.zeros_like(value)
            return value
        speed = (value - self._value) * self.rate_hz / scale
        self._speed = self._speed + self._alpha(self.derivative_cutoff) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + self._alpha(cutoff) * (value - self._value)
        return self._value

    def _alpha(self, cutoff: float | np.ndarray) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.rate_hz)


class FaceTracker:
    """Feeds frames in display order; returns smoothed (468, 2) pixel landmarks of the chosen face, or None."""

    def __init__(self, fps: float, settings: TrackerSettings) -> None:
        face_detection, face_mesh = import_mediapipe()
        self.settings = settings
        with native_stderr_silenced():
            self._detector = face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=settings.min_confidence)
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=settings.min_confidence, min_tracking_confidence=settings.min_confidence)
            # Both graphs log on their first run: run them once here, on a blank image.
            blank = np.zeros((settings.mesh_size, settings.mesh_size, 3), np.uint8)
            self._detector.process(blank)
            self._mesh.process(blank)
        self._filter = OneEuroFilter(fps, settings.smooth_min_cutoff, settings.smooth_beta)
        self._crop: tuple[float, float, float] | None = None  # centre x, centre y, side
        self._found_once = False
        self._frames_lost = 0

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        if not self._found_once:
            # The mesh logs once more when it first finds a face.
            with native_stderr_silenced():
                landmarks = self._track(frame)
            self._found_once = landmarks is not None
            return landmarks
        return self._track(frame)

    def _track(self, frame: np.ndarray) -> np.ndarray | None:
        raw = self._mesh_on_crop(frame) if self._crop is not None else None
        if raw is None:
            box = self._detect(frame)
            if box is not None:
                self._crop = self._crop_for_box(box)
                raw = self._mesh_on_crop(frame)
        if raw is None:
            self._crop = None
            self._filter.reset()
            return None
        self._follow(raw)
        return self._filter(raw, scale=max(face_size(raw), 1.0)).astype(np.float32)

    def _detect(self, frame: np.ndarray) -> tuple[float, float, float, float] | None:
        """Finds all faces and returns the box (x, y, w, h in pixels) of the one to track.

        The detector sees the frame at 192 px, where a face under about a tenth of the frame's long side is
        too small; while nothing is found, every few frames it also looks at square tiles of the frame.
        """
        height, width = frame.shape[:2]
        boxes = self._detect_in(frame, (0, 0, width, height))
        if not boxes and self._frames_lost % _TILES_EVERY == 0:
            for tile in square_tiles(width, height):
                boxes += self._detect_in(frame, tile)
        self._frames_lost = 0 if boxes else self._frames_lost + 1
        return choose_face(boxes, (width, height), self._crop) if boxes else None

    def _detect_in(self, frame: np.ndarray, area: tuple[int, int, int, int]) -> list[tuple[float, float, float, float]]:
        x0, y0, x1, y1 = area
        width, height = x1 - x0, y1 - y0
        scale = min(1.0, _DETECT_SIDE / max(height, width))
        small = cv2.resize(frame[y0:y1, x0:x1], (round(width * scale), round(height * scale)),
                           interpolation=cv2.INTER_AREA)
        result = self._detector.process(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        boxes = []
        for detection in result.detections or ():
            box = detection.location_data.relative_bounding_box
            boxes.append((x0 + box.xmin * width, y0 + box.ymin * height, box.width * width, box.height * height))
        return boxes

    def _crop_for_box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float]:
        x, y, w, h = box
        # The detector's box is tight and sits high (forehead to mouth); the mesh wants the whole face centred.
        return x + w / 2, y + h * 0.55, max(w, h) * self.settings.crop_scale

    def _mesh_on_crop(self, frame: np.ndarray) -> np.ndarray | None:
        assert self._crop is not None
        cx, cy, side = self._crop
        size = self.settings.mesh_size
        # One affine warp crops, pads with black beyond the frame edge and resizes, all at once.
        scale = size / side
        matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], np.float32)
        crop = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR)
        result = self._mesh.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark[:LANDMARK_COUNT]],
                          np.float32)
        return (points * size - matrix[:, 2]) / scale

    def _follow(self, landmarks: np.ndarray) -> None:
        """Moves the crop with the face, with hysteresis so the mesh's own tracking sees a steady picture."""
        assert self._crop is not None
        low, high = landmarks.min(axis=0), landmarks.max(axis=0)
        cx, cy = (low + high) / 2
        side = float(max(high - low)) * self.settings.crop_scale
        old_x, old_y, old_side = self._crop
        if abs(cx - old_x) > 0.06 * old_side or abs(cy - old_y) > 0.06 * old_side or abs(side / old_side - 1) > 0.1:
            self._crop = (float(cx), float(cy), side)


def square_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Overlapping squares (x0, y0, x1, y1) covering the frame, each at most 60 % of its long side."""
    side = int(min(width, height, 0.6 * max(width, height)))

    def starts(length: int) -> list[int]:
        count = int(np.ceil(length / side))
        return [int(start) for start in np.linspace(0, length - side, count).round()] if count > 1 else [0]

    return [(x, y, x + side, y + side) for y in starts(height) for x in starts(width)]


def choose_face(boxes: list[tuple[float, float, float, float]], frame_size: tuple[int, int],
                current: tuple[float, float, float] | None) -> tuple[float, float, float, float]:
    """The face already followed if it is still there (sticky), otherwise the largest and most central one."""
    width, height = frame_size
    if current is not None:
        cx, cy, side = current
        near = [box for box in boxes
                if abs(box[0] + box[2] / 2 - cx) < side / 2 and abs(box[1] + box[3] / 2 - cy) < side / 2]
        if near:
            boxes = near

    def score(box: tuple[float, float, float, float]) -> float:
        x, y, w, h = box
        off_centre = math.hypot((x + w / 2) / width - 0.5, (y + h / 2) / height - 0.5)
        # Duplicate boxes on one face score alike; a face twice as large wins unless it is at the edge.
        return w * h * (1.0 - off_centre)

    return max(boxes, key=score)
