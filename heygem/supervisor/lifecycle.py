"""Every change of a task's state, as one named operation that sets and clears its whole set of fields.

Nothing else writes a task: the supervisor, `python -m heygem tasks cancel` and any execution backend call
these operations. Each names its row of states.TRANSITIONS, and the store checks that row in the same
transaction that writes the fields, so two processes racing on one task cannot both win. A refused change
raises TransitionError; the two that a person asks for (cancel, retry) raise an InputError saying why.
Messages that depend on where the task was are worked out inside that transaction, from the record as it was.

The table of operations, with the fields each sets and clears, is in docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from heygem.errors import InputError
from heygem.options import TaskOptions
from heygem.supervisor.protocol import LiveStatus
from heygem.supervisor.states import (
    QUEUED_MESSAGE,
    Attempt,
    AttemptOutcome,
    Operation,
    Position,
    TaskRecord,
    TaskState,
    WorkerNode,
)
from heygem.supervisor.store import TaskStore, TransitionError

# What a task that has not started yet does not have: requeue and retry clear all of it.
_NOT_STARTED: Mapping[str, Any] = {"stage": "", "progress": 0.0, "warning": "", "worker_pid": None,
                                   "started_at": None, "finished_at": None, "report": {}, "node": None,
                                   "moving_since": None, "progress_when_moving": 0.0,
                                   "progress_rose_at": None}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a task ended, as `finish` records it: succeeded or failed, with what the task record shows."""

    state: TaskState
    message: str = ""
    warning: str = ""
    report: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def succeeded(cls, report: Mapping[str, Any], warning: str = "") -> Outcome:
        return cls(TaskState.SUCCEEDED, warning=warning, report=report)

    @classmethod
    def failed(cls, message: str, warning: str = "") -> Outcome:
        return cls(TaskState.FAILED, message=message, warning=warning)

    @classmethod
    def result_kept(cls, failure: str) -> Outcome:
        """A failure that still left a valid result video: the task succeeded, and its warning says what failed."""
        return cls(TaskState.SUCCEEDED, warning=f"{failure}; its result is a valid video and was kept")


def _close_attempt(old: TaskRecord, outcome: AttemptOutcome, message: str, now: float) -> tuple[Attempt, ...]:
    """The history with its running attempt ended; unchanged when none runs (a task ended while queued)."""
    history = old.history
    if not history or history[-1].outcome is not None:
        return history
    return (*history[:-1], dataclasses.replace(history[-1], ended_at=now, outcome=outcome, message=message))


class TaskLifecycle:
    """The named transitions of the tasks in one store."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def queue(self, code: str, engine: str, audio_path: str, video_path: str, options: TaskOptions,
              result_path: str, shared_result_path: str | None = None,
              audio_duration_s: float | None = None) -> TaskRecord:
        self.store.insert(code, engine, audio_path, video_path, options, result_path, QUEUED_MESSAGE,
                          shared_result_path, audio_duration_s)
        return self.store.require(code)

    def hold(self, code: str, reason: str) -> TaskRecord:
        return self.store.transition(code, Operation.HOLD, TaskState.QUEUED, {"message": reason})

    def start(self, code: str, worker_pid: int | None) -> TaskRecord:
        """`worker_pid`: the local worker's process id; None where the worker runs on another machine."""
        now = time.time()
        return self.store.transition(code, Operation.START, TaskState.INITIALIZING, lambda old: {
            "stage": "init", "progress": 0.0, "message": "", "warning": "", "worker_pid": worker_pid,
            "started_at": now, "finished_at": None, "report": {}, "attempts": old.attempts + 1, "node": None,
            "moving_since": None, "progress_when_moving": 0.0, "progress_rose_at": None,
            "history": (*old.history, Attempt(number=old.attempts + 1, started_at=now, worker_pid=worker_pid))})

    def place(self, code: str, node: WorkerNode) -> TaskRecord:
        """Record the cluster node the task's worker runs on, once the cluster has placed it."""
        def fields(old: TaskRecord) -> dict[str, Any]:
            history = old.history
            if history and history[-1].outcome is None:
                history = (*history[:-1], dataclasses.replace(history[-1], node=node))
            return {"node": node, "history": history}

        return self.store.transition(code, Operation.PLACE, None, fields)

    def report(self, code: str, status: LiveStatus) -> TaskRecord:
        """Record the worker's latest status. Within an attempt nothing goes back: a worker that has begun to run
        stays running, and progress only rises (the record of a status read late never undoes a newer one)."""
        state = TaskState.RUNNING if status["phase"] == "run" else None
        now = time.time()

        def fields(old: TaskRecord) -> dict[str, Any]:
            values = {"stage": status["stage"], "progress": max(old.progress, status["progress"]),
                      "warning": status["warning"],
                      "message": f"recovering from: {status['error']}" if status["error"] else ""}
            if old.moving_since is None and status["progress"] > 0:
                values.update(moving_since=now, progress_when_moving=status["progress"])
            elif status["progress"] > old.progress:
                values.update(progress_rose_at=now)
            return values

        return self.store.transition(code, Operation.REPORT, state, fields)

    def finish(self, code: str, outcome: Outcome) -> TaskRecord:
        now = time.time()
        ended = AttemptOutcome(outcome.state.value)

        def fields(old: TaskRecord) -> dict[str, Any]:
            values: dict[str, Any] = {"message": outcome.message, "warning": outcome.warning, "finished_at": now,
                                      "history": _close_attempt(old, ended, outcome.message or outcome.warning, now)}
            if outcome.state is TaskState.SUCCEEDED:
                values.update(progress=100.0, report=dict(outcome.report))
            return values

        return self.store.transition(code, Operation.FINISH, outcome.state, fields)

    def interrupt(self, code: str, cause: str) -> TaskRecord:
        """Fail an active task whose worker was lost, saying where it was."""
        now = time.time()

        def fields(old: TaskRecord) -> dict[str, Any]:
            message = f"interrupted: {cause} during {old.position}"
            return {"message": message, "finished_at": now,
                    "history": _close_attempt(old, AttemptOutcome.FAILED, message, now)}

        return self.store.transition(code, Operation.FINISH, TaskState.FAILED, fields)

    def cancel(self, code: str, position: Position | None = None) -> TaskRecord:
        """`position`: the worker's latest, when the caller knows it better than the record."""

        now = time.time()

        def fields(old: TaskRecord) -> dict[str, Any]:
            where = "while queued" if old.state is TaskState.QUEUED else f"during {position or old.position}"
            message = f"cancelled {where}"
            return {"message": message, "finished_at": now,
                    "history": _close_attempt(old, AttemptOutcome.CANCELLED, message, now)}

        try:
            return self.store.transition(code, Operation.CANCEL, TaskState.CANCELLED, fields)
        except TransitionError as exc:
            raise InputError(f"task {code} has already ended ({exc.old.value})") from None

    def ask_cancel(self, code: str) -> TaskRecord:
        """Ask the running service to cancel the task: its supervisor carries out `cancel` itself (the API's
        cancel), at its next look (heygem.supervisor.ops)."""
        try:
            return self.store.transition(code, Operation.ASK_CANCEL, None, {"cancel_asked_at": time.time()})
        except TransitionError as exc:
            raise InputError(f"task {code} has already ended ({exc.old.value})") from None

    def requeue(self, code: str, cause: str) -> TaskRecord:
        """Put an interrupted task back at the front: it was admitted before everything still waiting."""
        now = time.time()

        def fields(old: TaskRecord) -> dict[str, Any]:
            where = f"{cause} during {old.position}"
            return {**_NOT_STARTED, "message": f"requeued: {where}", "queued_at": old.created_at,
                    "history": _close_attempt(old, AttemptOutcome.REQUEUED, where, now)}

        return self.store.transition(code, Operation.REQUEUE, TaskState.QUEUED, fields)

    def retry(self, code: str) -> TaskRecord:
        try:
            return self.store.transition(code, Operation.RETRY, TaskState.QUEUED, {
                **_NOT_STARTED, "message": QUEUED_MESSAGE, "queued_at": time.time(), "cancel_asked_at": None})
        except TransitionError as exc:
            raise InputError(f"only failed or cancelled tasks can be retried; task {code} is {exc.old.value}") from None
