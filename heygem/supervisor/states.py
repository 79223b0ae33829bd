"""Task states, the transitions between them, and the record the store keeps for each task."""

from __future__ import annotations

import dataclasses
import enum
import re
import time
from pathlib import Path
from typing import Any

from heygem.config import Config
from heygem.errors import InputError, quote_input
from heygem.options import TaskOptions
from heygem.supervisor.estimate import remaining_s

# A task code names its files (result_file, heygem.logs.task_log_path): it must be a plain file-name fragment.
_TASK_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# HeyGem's desktop client asks for ?code=null (JavaScript's null in a URL) while its own submit is under way, and
# must hear "no such task" then: a task with this code would answer in the place of another.
RESERVED_CODES = frozenset({"null", "undefined"})


def result_file(config: Config, code: str) -> Path:
    """Where a task's result video lives; HeyGem's clients expect the name <code>-r.mp4."""
    return config.paths.results_dir / f"{code}-r.mp4"


def shared_result_file(config: Config, code: str) -> Path:
    """The copy of a task's result in paths.input_dir, the folder HeyGem's desktop client shares with the service."""
    return config.paths.input_dir / result_file(config, code).name


def check_task_code(code: object) -> str:
    """The code itself, or an InputError that says what a code may hold."""
    if not isinstance(code, str) or not _TASK_CODE.fullmatch(code):
        raise InputError(f"task code {quote_input(code)} is invalid: use 1-128 letters, digits, '.', '_' or '-' "
                         "(a UUID works)")
    if code in RESERVED_CODES:
        raise InputError(f"task code {code!r} is reserved: HeyGem's desktop client asks for ?code={code} while its "
                         "own submit is under way; choose another code (a UUID works)")
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
CANCELLABLE = (TaskState.QUEUED, TaskState.INITIALIZING, TaskState.RUNNING)
QUEUED_MESSAGE = "waiting in queue"


class Operation(str, enum.Enum):
    """The named transitions; heygem.supervisor.lifecycle carries each out with its full set of fields."""

    HOLD = "hold"  # the head of the queue waits for a reason (GPU memory)
    START = "start"  # a worker was started for it
    PLACE = "place"  # the cluster node its worker runs on is known (ray backend)
    REPORT = "report"  # the worker's latest phase, stage and progress
    FINISH = "finish"  # succeeded or failed, whatever decided it
    CANCEL = "cancel"
    ASK_CANCEL = "ask_cancel"  # another process (the ops CLI) asks the running service's supervisor to cancel
    REQUEUE = "requeue"  # back to the queue, at its old place, after an interruption (the service stopped)
    RETRY = "retry"  # back to the queue, at a person's request


# The only changes of state there are: for each operation, the states it starts from and where it may lead.
# The store checks every change against this table, in the transaction that writes it.
TRANSITIONS: dict[Operation, dict[TaskState, frozenset[TaskState]]] = {
    Operation.HOLD: {TaskState.QUEUED: frozenset({TaskState.QUEUED})},
    Operation.START: {TaskState.QUEUED: frozenset({TaskState.INITIALIZING})},
    Operation.PLACE: {TaskState.INITIALIZING: frozenset({TaskState.INITIALIZING}),
                      TaskState.RUNNING: frozenset({TaskState.RUNNING})},
    Operation.REPORT: {TaskState.INITIALIZING: frozenset({TaskState.INITIALIZING, TaskState.RUNNING}),
                       TaskState.RUNNING: frozenset({TaskState.RUNNING})},
    # From the queue only as a failure: an engine that cannot be loaded, a worker that cannot be started.
    Operation.FINISH: {TaskState.QUEUED: frozenset({TaskState.FAILED}),
                       TaskState.INITIALIZING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED}),
                       TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.FAILED})},
    Operation.CANCEL: {state: frozenset({TaskState.CANCELLED}) for state in CANCELLABLE},
    Operation.ASK_CANCEL: {state: frozenset({state}) for state in CANCELLABLE},
    Operation.REQUEUE: {state: frozenset({TaskState.QUEUED}) for state in (TaskState.INITIALIZING, TaskState.RUNNING)},
    Operation.RETRY: {state: frozenset({TaskState.QUEUED}) for state in (TaskState.FAILED, TaskState.CANCELLED)},
}


def can_transition(operation: Operation, old: TaskState, new: TaskState) -> bool:
    return new in TRANSITIONS[operation].get(old, frozenset())


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a task's worker was: the stage and its progress."""

    stage: str
    progress: float

    def __str__(self) -> str:
        return f"stage {self.stage} at {self.progress:.0f} %"


@dataclasses.dataclass(frozen=True)
class WorkerNode:
    """The cluster node a task's worker runs or ran on (ray backend): Ray's node id and the node's address."""

    id: str
    address: str

    def __str__(self) -> str:
        return f"worker node {self.address} (id {self.id[:12]})"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "address": self.address}

    @classmethod
    def from_json(cls, data: Any) -> WorkerNode | None:
        return cls(str(data["id"]), str(data["address"])) if isinstance(data, dict) else None


class AttemptOutcome(str, enum.Enum):
    """How one run of a task by one worker ended; a task that was rerun has more than one."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"  # interrupted (the service stopped, its node was lost) and put back in the queue


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run of a task, from its worker's start to its end: the task's `history` holds one per worker started."""

    number: int
    started_at: float
    worker_pid: int | None = None  # local backend
    node: WorkerNode | None = None  # ray backend, once the cluster has placed it
    ended_at: float | None = None
    outcome: AttemptOutcome | None = None  # None while it runs
    message: str = ""  # why it ended, when not a plain success

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["node"] = self.node.to_json() if self.node else None
        data["outcome"] = self.outcome.value if self.outcome else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        outcome = data.get("outcome")
        return cls(number=int(data["number"]), started_at=float(data["started_at"]), worker_pid=data.get("worker_pid"),
                   node=WorkerNode.from_json(data.get("node")), ended_at=data.get("ended_at"),
                   outcome=AttemptOutcome(outcome) if outcome else None, message=str(data.get("message") or ""))


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """What a caller submits. `code` is the caller's id (HeyGem clients send a UUID); None: one is made.
    `shared_result`: the finished video is also placed in paths.input_dir (shared_result_file), where HeyGem's
    desktop client, which shares that folder, opens it."""

    audio_path: Path
    video_path: Path
    engine: str = ""
    options: TaskOptions = dataclasses.field(default_factory=TaskOptions)
    code: str | None = None
    shared_result: bool = False


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
    options: TaskOptions
    result_path: str | None
    worker_pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    attempts: int
    report: dict[str, Any]
    # None with the local backend, and until a ray task's node is known.
    node: WorkerNode | None = None
    queue_position: int | None = None
    # Where the copy of the result for HeyGem's desktop client goes (TaskRequest.shared_result); None: no copy.
    shared_result_path: str | None = None
    # Counts the writes of this record: of two reads, the one with the higher version is the later state.
    version: int = 0
    # One entry per attempt, oldest first (empty for a task that never started, or one stored by an older version).
    history: tuple[Attempt, ...] = ()
    # The speech's length in seconds, measured once at submit (the deadline grows with it); None: unreadable then,
    # or a task stored by an older version.
    audio_duration_s: float | None = None
    # When another process asked the service to cancel the task (TaskLifecycle.ask_cancel); None: nobody asked.
    cancel_asked_at: float | None = None
    # When this attempt's progress first rose above 0 (rendering under way), and to what: the time-left estimate's
    # rate is measured from there, so the worker's start-up and analysis do not lengthen it. None: not yet.
    moving_since: float | None = None
    progress_when_moving: float = 0.0
    # When the recorded progress last rose: the rate's stretch ends there (None: it has not risen this attempt).
    progress_rose_at: float | None = None

    @property
    def position(self) -> Position:
        return Position(self.stage or "init", self.progress)

    @property
    def summary(self) -> str:
        """One line a person can read: the waiting reason, the stage, or why it ended."""
        state = self.state
        if state is TaskState.QUEUED:
            reason = self.message or QUEUED_MESSAGE
            return f"{reason} (position {self.queue_position})" if self.queue_position else reason
        rerun = f" (attempt {self.attempts}, resumed from the start after {self.resumed_after})" \
            if self.resumed_after else ""
        if state.is_active:
            return (self.stage or state.value) + rerun
        if state is TaskState.SUCCEEDED:
            return (self.warning or "done") + rerun
        # Failures always carry a reason; the fallback only guards a record written by an older version.
        return self.message or f"task {state.value} without a recorded reason"

    @property
    def resumed_after(self) -> str:
        """What interrupted the attempt before this one, when this one is its rerun ("": a first or retried run)."""
        if len(self.history) < 2 or self.history[-1].outcome is AttemptOutcome.REQUEUED:
            return ""
        before = self.history[-2]
        return before.message if before.outcome is AttemptOutcome.REQUEUED else ""

    @property
    def duration_s(self) -> float | None:
        """Seconds from worker start to the end (or to now while active)."""
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    @property
    def eta_s(self) -> float | None:
        """Seconds left while running, at the rate progress rose since it began to move (None until it moved on)."""
        if self.state is not TaskState.RUNNING or self.moving_since is None or self.progress_rose_at is None:
            return None
        left = remaining_s(self.progress, self.progress_rose_at - self.moving_since, self.progress_when_moving,
                           since_s=time.time() - self.progress_rose_at)
        # Encoding's last frames and the move into place follow the last rendered frame: never "0 s" while running.
        return None if left is None else max(1.0, left)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["options"] = self.options.to_json()
        data["duration_s"] = self.duration_s
        data["eta_s"] = self.eta_s
        data["history"] = [attempt.to_json() for attempt in self.history]
        return data
