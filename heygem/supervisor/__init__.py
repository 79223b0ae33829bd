"""The task supervisor: states, worker protocol, admission, and the TaskSupervisor that ties them."""

from typing import Any

from heygem.supervisor.states import TaskRecord, TaskRequest, TaskState

__all__ = ["TaskRecord", "TaskRequest", "TaskState", "TaskSupervisor"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: CLI commands that only read the store (and every worker) skip its imports.
    if name == "TaskSupervisor":
        from heygem.supervisor.supervisor import TaskSupervisor

        return TaskSupervisor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
