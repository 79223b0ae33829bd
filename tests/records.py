"""Task records the view and answer tests start from: a queued task, changed field by field."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from heygem.options import TaskOptions
from heygem.supervisor.states import TaskRecord, TaskState

NOW = time.time()
RECORD = TaskRecord(
    code="abc", state=TaskState.QUEUED, stage="", progress=0.0, message="waiting in queue", warning="",
    engine="meshwarp", audio_path="/data/uploads/20260101-120000-0123abcd-audio-hello.wav",
    video_path="/data/inputs/face.mp4", options=TaskOptions(), result_path="/data/results/abc-r.mp4", worker_pid=None,
    created_at=NOW - 30, started_at=None, finished_at=None, updated_at=NOW, attempts=0, report={},
    queue_position=2)


def record(**changes: Any) -> TaskRecord:
    return dataclasses.replace(RECORD, **changes)
