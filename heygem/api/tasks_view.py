"""How a task record reads to API clients: HeyGem's status triple and our own JSON."""

from __future__ import annotations

from typing import Any

from heygem.supervisor.states import TaskRecord, TaskState

# HeyGem's query status: 1 running (waiting included), 2 success, 3 error.
HEYGEM_STATUS = {
    TaskState.QUEUED: 1,
    TaskState.INITIALIZING: 1,
    TaskState.RUNNING: 1,
    TaskState.SUCCEEDED: 2,
    TaskState.FAILED: 3,
    TaskState.CANCELLED: 3,
}


def describe(record: TaskRecord) -> str:
    """One line a person can read: the waiting reason, the stage, or why it ended."""
    state = record.state
    if state is TaskState.QUEUED:
        reason = record.message or "waiting in queue"
        return f"{reason} (position {record.queue_position})" if record.queue_position else reason
    if state.is_active:
        return record.stage or state.value
    if state is TaskState.SUCCEEDED:
        return record.warning or "done"
    # Failures always carry a reason; the fallback only guards a record written by an older version.
    return record.message or f"task {state.value} without a recorded reason"


def heygem_data(record: TaskRecord) -> dict[str, Any]:
    """`data` of /easy/query: result is the absolute path of the output, empty until it exists."""
    succeeded = record.state is TaskState.SUCCEEDED
    return {
        "code": record.code,
        "status": HEYGEM_STATUS[record.state],
        "progress": 100 if succeeded else int(record.progress),
        "msg": describe(record),
        "result": (record.result_path or "") if succeeded else "",
    }


def task_json(record: TaskRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["summary"] = describe(record)
    data["result"] = record.result_path if record.state is TaskState.SUCCEEDED else None
    return data
