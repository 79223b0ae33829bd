"""Task states, the transitions between them, and the record the store keeps for each task."""

from __future__ import annotations

import dataclasses
import enum
import re
import time
from pathlib import Path
from typing import Any

from heygem.errors import InputError, quote_input

# A task code names its files (<code>-r.mp4, <code>.log), so it must be a plain file-name fragment.
_TASK_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_task_code(code: object) -> str:
    """The code itself, or an InputError that says what a code may hold."""
    if not isinstance(code, str) or not _TASK_CODE.fullmatch(code):
        raise InputError(f"task code {quote_input(code)} is invalid: use 1-128 letters, digits, '.', '_' or '-' "
                         "(a UUID works)")
    return code


class TaskState(str, enum.Enum):
    QUEUED = "queued"
    INITIALIZING = "initializing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return self in (TaskState.INITIALIZING, TaskState.RUNNING)


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.INITIALIZING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.INITIALIZING: frozenset({TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED,
                                       TaskState.CANCELLED, TaskState.QUEUED}),
    TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.QUEUED}),
    # A retry puts a finished task back in the queue.
    TaskState.SUCCEEDED: frozenset({TaskState.QUEUED}),
    TaskState.FAILED: frozenset({TaskState.QUEUED}),
    TaskState.CANCELLED: frozenset({TaskState.QUEUED}),
}


def can_transition(old: TaskState, new: TaskState) -> bool:
    return old == new or new in TRANSITIONS[old]


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """What a caller submits. `code` is the caller's id (HeyGem clients send a UUID); None: one is made."""

    audio_path: Path
    video_path: Path
    engine: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    code: str | None = None


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    code: str
    state: TaskState
    stage: str
    progress: float
    message: str
    warning: str
    engine: str
    audio_path: str
    video_path: str
    options: dict[str, Any]
    result_path: str | None
    worker_pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    attempts: int
    report: dict[str, Any]
    queue_position: int | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from worker start to the end (or to now while active)."""
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from progress while running."""
        if self.state is not TaskState.RUNNING or self.started_at is None or self.progress <= 0:
            return None
        elapsed = time.time() - self.started_at
        return max(0.0, elapsed * (100.0 - self.progress) / self.progress)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["duration_s"] = self.duration_s
        data["eta_s"] = self.eta_s
        return data
