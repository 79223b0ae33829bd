"""The one interface every engine implements, and the plain data a worker hands it (the pipeline needs both)."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from heygem.config import Config
from heygem.options import TaskOptions

Device = Literal["cpu", "cuda"]


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

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def availability(cls, config: Config) -> Availability:
        """Whether the engine can run here; the reason names what is missing."""
        return Availability(True)

    def load(self, reporter: Reporter) -> None:
        """Load models and warm up. Runs inside the supervisor's init grace period."""

    @abstractmethod
    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        """Write job.result_path and return a small report (plain JSON-able data) for the task record."""
