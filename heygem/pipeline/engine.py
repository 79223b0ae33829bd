"""The engine contract in one module: the interface every engine implements (`Engine`), the base of the lip-sync
engines the streaming pipeline drives (`LipSyncEngine`, `FrameBatch`), and the plain data a worker hands them.

An engine declares the task options it takes (`takes_options`); the supervisor and the CLI refuse any other
option a caller gives (`accept_options`), and the engine gets them resolved against the config (every option it
takes has its value: TaskOptions.resolve)."""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from heygem.config import Config
from heygem.errors import InputError
from heygem.options import PIPELINE_OPTIONS, TaskOptions
from heygem.pipeline.tracking import import_mediapipe

if TYPE_CHECKING:
    from heygem.pipeline.analysis import VideoAnalysis
    from heygem.pipeline.mouthbank import BankSettings

Device = Literal["cpu", "cuda"]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end exclusive


@dataclasses.dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Job:
    """One task as a worker sees it. Built from plain data so it crosses the spawn boundary safely."""

    code: str
    audio_path: Path
    video_path: Path
    result_path: Path
    work_dir: Path
    options: TaskOptions
    config: Config
    # Folder of the task's live stream (heygem.pipeline.live); None: no stream (the CLI, live.enabled false).
    live_dir: Path | None = None


class Reporter(Protocol):
    """What an engine tells the supervisor while it works (see heygem.supervisor.protocol)."""

    def stage(self, name: str) -> None: ...

    def progress(self, percent: float) -> None: ...

    def error(self, message: str) -> None:
        """Report a problem the engine is still trying to recover from; not final by itself."""

    def clear_error(self) -> None: ...

    def warn(self, message: str) -> None: ...

    def advance(self) -> None:
        """Work goes on without a new figure to show; the supervisor counts it as progress (supervisor.stall_s)."""


class Engine(ABC):
    """Loaded once per worker (`load`, the init phase), then asked to `run` a job."""

    name: ClassVar[str]
    device: ClassVar[Device] = "cpu"
    # GPU memory the engine needs, in GB; the supervisor admits a task on a GPU only when it is free.
    gpu_memory_gb: ClassVar[float] = 0.0
    # The task options (TaskOptions field names) the engine applies; any other a caller gives is refused.
    takes_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def accept_options(cls, options: TaskOptions) -> TaskOptions:
        """The caller's options, or an InputError naming the first one this engine does not take."""
        for name in options.given():
            if name not in cls.takes_options:
                takes = ", ".join(name for name in TaskOptions.names() if name in cls.takes_options) or "none"
                raise InputError(f"{name} is not an option of the {cls.name} engine (its options: {takes}); "
                                 f"leave {name} out, or choose an engine that takes it")
        return options

    @classmethod
    def availability(cls, config: Config) -> Availability:
        """Whether the engine can run here; the reason names what is missing."""
        return Availability(True)

    def load(self, reporter: Reporter) -> None:
        """Load models and warm up. Runs inside the supervisor's init grace period."""

    @abstractmethod
    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        """Write job.result_path and return a small report (plain JSON-able data) for the task record."""


@dataclasses.dataclass
class FrameBatch:
    """Consecutive output frames handed to an engine's render."""

    indices: np.ndarray  # output frame numbers (int), the index into per-frame audio features
    # BGR uint8 frames (H, W, 3), whole or only the engine's render_box of them; render may change them in place
    frames: list[np.ndarray]
    landmarks: list[np.ndarray | None]  # per frame: (468, 2) float32 face-mesh points in its pixels, or None


class LipSyncEngine(Engine):
    """An Engine whose run() is the shared streaming pipeline (heygem.pipeline.generate); subclasses implement
    `audio_features` and `render`. Every lip-sync engine takes the options the pipeline applies itself."""

    takes_options: ClassVar[frozenset[str]] = PIPELINE_OPTIONS

    def frames_per_render(self) -> int:
        """Frames handed to one render call; an engine that batches model inference may want more."""
        return self.config.media.batch_frames

    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        from heygem.pipeline.generate import generate  # the pipeline drives this class: imported where it runs

        # The face tracker's import (0.2-1 s) finishes in the background while the job probes its inputs and decodes
        # the audio, instead of before. An engine with a mouth bank imports it only when a video is analysed: a
        # video whose analysis is cached needs no tracker.
        if self.bank_settings() is None:
            threading.Thread(target=import_mediapipe, name="import-mediapipe", daemon=True).start()
        return generate(job, self, reporter)

    def bank_settings(self) -> BankSettings | None:
        """How to build the video's mouth bank when the engine stitches the person's own mouth; None: it does not,
        and the video is tracked while it renders instead of analysed first."""
        return None

    def render_box(self, landmarks: list[np.ndarray | None], size: tuple[int, int]) -> Box | None:
        """The one pixel box of the video's frames that any render over it reads or changes, given the landmarks of
        all its frames (its analysis) and the frame size (w, h): even corners, inside the frame. Rendering may then
        be handed that box of each frame alone, the landmarks moved with it (heygem.pipeline.crops). None: it needs
        whole frames."""
        return None

    def attach_video(self, features: Any, analysis: VideoAnalysis, shown: np.ndarray) -> Any:
        """The features again, now knowing the video's analysis and which grid frame each output frame shows."""
        return features

    @abstractmethod
    def audio_features(self, audio: np.ndarray, fps: float, frame_count: int, options: TaskOptions) -> Any:
        """Features for output frames 0..frame_count-1 from 16 kHz mono float32 `audio`; opaque to the pipeline.

        `options` are resolved: each option the engine takes has its value. Called once per job before any
        render; the result may also hold per-job state for render.
        """

    @abstractmethod
    def render(self, batch: FrameBatch, features: Any) -> list[np.ndarray]:
        """The output frames of the batch (same count, size and dtype). Frames without a face stay unchanged."""
