"""Helpers for tests that drive a real TaskSupervisor with scripted engines (tests/scripted_engine.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from heygem.options import TaskOptions
from heygem.supervisor import TaskRecord, TaskRequest, TaskState, TaskSupervisor

SCRIPTED = "tests.scripted_engine:ScriptedEngine"
T = TypeVar("T")


def script_file(folder: Path, steps: list[list[Any]]) -> Path:
    """A scripted engine's script, given to the task as its video (see tests/scripted_engine.py)."""
    path = folder / f"script-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(steps))
    return path


def submit(supervisor: TaskSupervisor, inputs: tuple[Path, Path], steps: list[list[Any]],
           engine: str = SCRIPTED, code: str | None = None, options: TaskOptions | None = None) -> str:
    audio, video = inputs
    return supervisor.submit(TaskRequest(audio, script_file(video.parent, steps), engine=engine,
                                         options=options or TaskOptions(), code=code))


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Ask `condition` every `interval_s` until it answers something true, and return that answer; fail naming
    `what` after `timeout_s`. The one polling loop of the tests: a test waits on what it asserts, never a sleep."""
    deadline = time.monotonic() + timeout_s
    while not (answer := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return answer


def wait_final(supervisor: TaskSupervisor, code: str, timeout_s: float = 30) -> TaskRecord:
    record = supervisor.wait(code, timeout_s)
    assert record.state.is_final, f"task {code} still {record.state.value} after {timeout_s} s: {record}"
    return record


def wait_running(supervisor: TaskSupervisor, code: str, min_progress: float = 0.0) -> TaskRecord:
    wait_until(lambda: supervisor.status(code).state is TaskState.RUNNING
               and supervisor.status(code).progress > min_progress, 30, f"task {code} running")
    return supervisor.status(code)
