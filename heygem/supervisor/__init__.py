"""The task supervisor: states, worker protocol, admission, and the TaskSupervisor that ties them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heygem.supervisor.states import TaskRecord, TaskRequest, TaskState
    from heygem.supervisor.supervisor import TaskSupervisor

__all__ = ["TaskRecord", "TaskRequest", "TaskState", "TaskSupervisor"]
_HOMES = {"TaskRecord": "states", "TaskRequest": "states", "TaskState": "states", "TaskSupervisor": "supervisor"}


def __getattr__(name: str) -> Any:
    # Loaded on first use: CLI commands that only read the store skip the supervisor's imports, and the processes a
    # task starts on a Ray node (its guard, its worker) pay only for the modules they use.
    if name in _HOMES:
        return getattr(importlib.import_module(f"heygem.supervisor.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
