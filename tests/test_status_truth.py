"""Issue 17 items 9 and 11: a task's status has one truth, the store, and within an attempt it never goes backwards;
its history of attempts reads the same on every path.

Twenty short tasks of a scripted engine (real spawned workers, two at a time) run through the real app (its HTTP
routes in process) while every read path is read as fast as it answers: each task's event stream, its task JSON
(/api/v1/tasks/{code}), HeyGem's /easy/query, and the supervisor's own status and list_tasks. In every sequence of
reads of one task, the state, the stage and the progress only ever move forward, and one version of the record
always reads the same.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heygem.api.easy_answers import heygem_data
from heygem.api.tasks_view import task_json
from heygem.options import TaskOptions
from heygem.server import create_app
from heygem.supervisor import TaskSupervisor
from heygem.supervisor.states import Attempt, AttemptOutcome, TaskRecord, TaskState, WorkerNode
from heygem.ui.views import history_html
from tests.conftest import SUPERVISOR_TEST_SETTINGS, ConfigFactory
from tests.supervision import submit, wait_final

pytestmark = pytest.mark.slow

RUNS = 20
# The stages a task of STEPS passes through, in order ("init" and "run" are the worker's own).
STAGES = ["", "init", "run", "reading inputs", "analysing audio", "rendering", "finishing"]
STEPS = [["stage", "reading inputs"], ["stage", "analysing audio"], ["stage", "rendering"],
         *[step for percent in (20, 45, 70, 95) for step in (["progress", percent], ["sleep", 0.05])],
         ["stage", "finishing"], ["progress", 100], ["linger", 0.3]]
NOW = time.time()
STATE_ORDER = {"queued": 0, "initializing": 1, "running": 2, "succeeded": 3, "failed": 3, "cancelled": 3}


@pytest.fixture
def app(make_config: ConfigFactory) -> Iterator[tuple[TestClient, TaskSupervisor]]:
    # Polls further apart than a task's run: a reader that merged the workers' live statuses into the store's
    # record would show a task ahead of the store, then behind it.
    config = make_config(supervisor={**SUPERVISOR_TEST_SETTINGS, "max_workers": 2, "poll_interval_s": 1.0},
                         server={"events_interval_s": 0.05})
    application = create_app(config)
    with TestClient(application, base_url="http://127.0.0.1:8383") as client:
        yield client, application.state.supervisor


def events_of(client: TestClient, code: str) -> list[dict[str, Any]]:
    """The `data` of every event of the task's stream, which ends with its final state."""
    with client.stream("GET", f"/api/v1/tasks/{code}/events") as stream:
        assert stream.status_code == 200
        return [json.loads(line[len("data: "):]) for line in stream.iter_lines() if line.startswith("data: ")]


def poll_everything(client: TestClient, supervisor: TaskSupervisor, codes: list[str],
                    done: threading.Event) -> dict[str, dict[str, list[Any]]]:
    """Reads every polling path of every task until `done`; per path and task, what each read showed."""
    seen: dict[str, dict[str, list[Any]]] = {path: {code: [] for code in codes}
                                             for path in ("json", "easy", "status", "list")}
    while not done.is_set():
        for code in codes:
            seen["json"][code].append(client.get(f"/api/v1/tasks/{code}").json())
            seen["easy"][code].append(client.get("/easy/query", params={"code": code}).json()["data"])
            seen["status"][code].append(supervisor.status(code).to_dict())
        for record in supervisor.list_tasks():
            seen["list"][record.code].append(record.to_dict())
    return seen


def assert_forward_only(reads: list[dict[str, Any]], where: str) -> None:
    """Task reads (as the task JSON has them) of one attempt: nothing goes back, one version reads one way."""
    by_version: dict[int, tuple[Any, ...]] = {}
    for before, after in itertools.pairwise(reads):
        steps = [(STATE_ORDER[before["state"]], STATE_ORDER[after["state"]]),
                 (STAGES.index(before["stage"]), STAGES.index(after["stage"])),
                 (before["progress"], after["progress"]), (before["version"], after["version"])]
        assert all(old <= new for old, new in steps), f"{where}: went back from {summary(before)} to {summary(after)}"
    for read in reads:
        shown = (read["state"], read["stage"], read["progress"], read["message"])
        assert by_version.setdefault(read["version"], shown) == shown, f"{where}: version {read['version']} read twice"


def summary(read: dict[str, Any]) -> str:
    return f"{read['state']}, {read['stage']}, {read['progress']} (version {read['version']})"


def test_state_stage_and_progress_never_go_back_on_any_read_path(app: tuple[TestClient, TaskSupervisor],
                                                                 inputs: tuple[Path, Path]) -> None:
    client, supervisor = app
    codes = [submit(supervisor, inputs, STEPS, code=f"run-{index:02d}") for index in range(RUNS)]
    done = threading.Event()
    with ThreadPoolExecutor(RUNS + 1) as pool:
        polled = pool.submit(poll_everything, client, supervisor, codes, done)
        streams = {code: pool.submit(events_of, client, code) for code in codes}
        try:
            for code in codes:
                wait_final(supervisor, code, timeout_s=120)
        finally:
            done.set()
        events = {code: stream.result(timeout=30) for code, stream in streams.items()}
        seen = polled.result(timeout=30)

    for code in codes:
        final = supervisor.status(code)
        assert final.state.value == "succeeded", final.message
        assert (final.stage, final.progress, final.attempts) == ("finishing", 100, 1)
        assert [(attempt.number, attempt.outcome and attempt.outcome.value) for attempt in final.history] == [
            (1, "succeeded")]
        assert events[code][-1]["state"] == "succeeded" and events[code][-1]["stage"] == "finishing"
        assert events[code][-1]["history"] == [attempt.to_json() for attempt in final.history]
        assert_forward_only(events[code], f"events of {code}")
        for path in ("json", "status", "list"):
            assert_forward_only(seen[path][code], f"{path} of {code}")
        easy = [(data["status"], data["progress"]) for data in seen["easy"][code]]
        assert easy == sorted(easy), f"/easy/query of {code} went back: {easy}"
    # Every path did see the tasks on their way, not only at their ends.
    for path in ("json", "easy", "status", "list"):
        assert any(len({json.dumps(read, sort_keys=True) for read in reads}) >= 3 for reads in seen[path].values()), \
            path


def test_the_history_of_a_rerun_task_reads_the_same_in_the_studio_the_api_and_the_cli() -> None:
    node = WorkerNode("3f2a" * 14, "10.0.0.7")
    lost = Attempt(1, NOW - 60, node=node, ended_at=NOW - 30, outcome=AttemptOutcome.REQUEUED,
                   message="worker node 10.0.0.7 (id 3f2a3f2a3f2a) lost during stage rendering at 40 %")
    rerun = TaskRecord(
        code="again", state=TaskState.RUNNING, stage="rendering", progress=12.0, message="", warning="",
        engine="meshwarp", audio_path="/in/a.wav", video_path="/in/v.mp4", options=TaskOptions(), result_path=None,
        worker_pid=None, created_at=NOW - 90, started_at=NOW - 20, finished_at=None, updated_at=NOW, attempts=2,
        report={}, node=WorkerNode("77" * 28, "10.0.0.8"), version=9,
        history=(lost, Attempt(2, NOW - 20, node=WorkerNode("77" * 28, "10.0.0.8"))))
    said = f"rendering (attempt 2, resumed from the start after {lost.message})"
    assert rerun.summary == said and heygem_data(rerun, "en")["msg"] == said
    shown = task_json(rerun)
    assert shown["version"] == 9 and [entry["outcome"] for entry in shown["history"]] == ["requeued", None]
    assert shown["history"][0]["node"] == {"id": node.id, "address": "10.0.0.7"}
    assert json.loads(json.dumps(shown))["history"] == shown["history"], "plain JSON, as `heygem tasks show` prints"
    page = history_html(rerun)
    assert "worker node 10.0.0.7 (id 3f2a3f2a3f2a)" in page and "requeued" in page and "running" in page
    assert history_html(dataclasses.replace(rerun, history=())) == ""
    # A person's own retry of a failed task is no rerun after a loss.
    retried = dataclasses.replace(rerun, history=(dataclasses.replace(lost, outcome=AttemptOutcome.FAILED),
                                                  rerun.history[1]))
    assert retried.summary == "rendering"
