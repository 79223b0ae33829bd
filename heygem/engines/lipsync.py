"""The base of every lip-sync engine: the shared pipeline does media, tracking and encoding; an engine only
turns audio into per-frame features and renders batches of frames.

How a job runs (heygem.pipeline.generate.generate):
1. probe the video, read the audio as 16 kHz mono float32, plan which video frame each output frame shows;
2. `audio_features(audio, fps, frame_count, options)` once: anything indexed by output frame (mel chunks, cues);
3. for each batch of output frames, `render(batch, features, options)`: full BGR frames plus the tracked
   landmarks of each frame (None where no face was found; return those frames unchanged);
4. the rendered frames are encoded with the original audio and moved atomically onto job.result_path.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import abstractmethod
from typing import Any

import numpy as np

from heygem.engines.base import Engine, Job, Reporter


@dataclasses.dataclass
class FrameBatch:
    """Consecutive output frames handed to an engine's render."""

    indices: np.ndarray  # output frame numbers (int), the index into per-frame audio features
    frames: list[np.ndarray]  # full BGR uint8 frames (H, W, 3); render may change them in place
    landmarks: list[np.ndarray | None]  # per frame: (468, 2) float32 face-mesh points in pixels, or None


class LipSyncEngine(Engine):
    """An Engine whose run() is the shared streaming pipeline; subclasses implement the two hooks."""

    def load(self, reporter: Reporter) -> None:
        """Starts importing the face tracker (0.2-1 s) in the background; subclasses call this first.

        It finishes while the job probes its inputs and decodes the audio, instead of before.
        """
        from heygem.pipeline.tracking import import_mediapipe

        threading.Thread(target=import_mediapipe, name="import-mediapipe", daemon=True).start()

    def frames_per_render(self) -> int:
        """Frames handed to one render call; an engine that batches model inference may want more."""
        return self.config.media.batch_frames

    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        from heygem.pipeline.generate import generate

        return generate(job, self, reporter)

    @abstractmethod
    def audio_features(self, audio: np.ndarray, fps: float, frame_count: int, options: dict[str, Any]) -> Any:
        """Features for output frames 0..frame_count-1 from 16 kHz mono float32 `audio`; opaque to the pipeline.

        Called once per job before any render; the result may also hold per-job state for render.
        """

    @abstractmethod
    def render(self, batch: FrameBatch, features: Any, options: dict[str, Any]) -> list[np.ndarray]:
        """The output frames of the batch (same count, size and dtype). Frames without a face stay unchanged."""
