"""How a task record reads to our own JSON API (/api/v1/*); heygem.api.easy_answers has HeyGem's view of it."""

from __future__ import annotations

from typing import Any

from heygem.supervisor.states import TaskRecord, TaskState


def task_json(record: TaskRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["summary"] = record.summary
    data["result"] = record.result_path if record.state is TaskState.SUCCEEDED else None
    return data
