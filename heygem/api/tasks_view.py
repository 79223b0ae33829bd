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


def heygem_data(record: TaskRecord) -> dict[str, Any]:
    """`data` of /easy/query: result is the absolute path of the output, empty until it exists."""
    succeeded = record.state is TaskState.SUCCEEDED
    return {
        "code": record.code,
        "status": HEYGEM_STATUS[record.state],
        "progress": 100 if succeeded else int(record.progress),
        "msg": record.summary,
        "result": (record.result_path or "") if succeeded else "",
    }


def task_json(record: TaskRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["summary"] = record.summary
    data["result"] = record.result_path if record.state is TaskState.SUCCEEDED else None
    return data
