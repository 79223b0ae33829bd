"""Each named task transition: the fields it sets and clears, and every change of state it refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heygem.errors import InputError, TaskNotFoundError
from heygem.options import TaskOptions
from heygem.supervisor import states
from heygem.supervisor.lifecycle import Outcome, TaskLifecycle
from heygem.supervisor.protocol import LiveStatus, Phase
from heygem.supervisor.states import TRANSITIONS, Operation, Position, TaskRecord, TaskState, WorkerNode
from heygem.supervisor.store import TaskStore, TransitionError

OPTIONS = TaskOptions(loop_mode="loop", mouth_intensity=1.5)
NODE = WorkerNode("3f2a" * 14, "10.0.0.7")


def live(phase: Phase = "run", stage: str = "render", progress: float = 40.0, error: str = "",
         warning: str = "") -> LiveStatus:
    return {"phase": phase, "stage": stage, "progress": progress, "error": error, "warning": warning,
            "heartbeat": 0.0, "pid": 4321}


@pytest.fixture
def lifecycle(tmp_path: Path) -> TaskLifecycle:
    return TaskLifecycle(TaskStore(tmp_path / "tasks.sqlite3"))


def queue(lifecycle: TaskLifecycle, code: str = "task") -> TaskRecord:
    return lifecycle.queue(code, "meshwarp", "/in/speech.wav", "/in/face.mp4", OPTIONS, f"/out/{code}-r.mp4")


def running(lifecycle: TaskLifecycle, code: str = "task") -> TaskRecord:
    """A task deep in its run: a worker, a stage, progress, an error it is recovering from and a warning."""
    queue(lifecycle, code)
    lifecycle.start(code, 4321)
    return lifecycle.report(code, live(error="decoder hiccup", warning="audio resampled"))


def task_in(lifecycle: TaskLifecycle, state: TaskState, code: str = "task") -> TaskRecord:
    """A task brought to `state` through the operations themselves."""
    if state is TaskState.QUEUED:
        return queue(lifecycle, code)
    if state is TaskState.INITIALIZING:
        queue(lifecycle, code)
        return lifecycle.start(code, 4321)
    running(lifecycle, code)
    if state is TaskState.SUCCEEDED:
        return lifecycle.finish(code, Outcome.succeeded({"frames": 10}))
    if state is TaskState.FAILED:
        return lifecycle.finish(code, Outcome.failed("render: boom", warning="audio resampled"))
    if state is TaskState.CANCELLED:
        return lifecycle.cancel(code)
    return lifecycle.store.require(code)


def ended(before: TaskRecord, after: TaskRecord, outcome: states.AttemptOutcome,
          message: str) -> tuple[states.Attempt, ...]:
    """`before`'s history with its running attempt ended as `after` ended it."""
    return (dataclasses.replace(before.history[-1], ended_at=after.finished_at, outcome=outcome, message=message),)


def changed(before: TaskRecord, after: TaskRecord) -> dict[str, Any]:
    """The fields an operation changed, other than the bookkeeping of every write."""
    ignored = {"updated_at", "queue_position", "version"}
    return {field.name: getattr(after, field.name) for field in dataclasses.fields(TaskRecord)
            if field.name not in ignored and getattr(before, field.name) != getattr(after, field.name)}


def test_queue_records_the_request_with_typed_options(lifecycle: TaskLifecycle) -> None:
    record = queue(lifecycle)
    assert (record.state, record.message, record.queue_position, record.attempts) == (
        TaskState.QUEUED, "waiting in queue", 1, 0)
    assert record.options == OPTIONS and record.result_path == "/out/task-r.mp4"
    assert (record.stage, record.progress, record.warning, record.worker_pid) == ("", 0.0, "", None)
    assert (record.started_at, record.finished_at, record.report) == (None, None, {})


def test_hold_changes_only_the_waiting_reason(lifecycle: TaskLifecycle) -> None:
    before = queue(lifecycle)
    after = lifecycle.hold("task", "waiting for 7.0 GB of GPU memory, 4.1 GB free")
    assert changed(before, after) == {"message": "waiting for 7.0 GB of GPU memory, 4.1 GB free"}


def test_start_sets_the_worker_and_clears_the_waiting_reason(lifecycle: TaskLifecycle) -> None:
    queue(lifecycle)
    before = lifecycle.hold("task", "waiting for GPU memory")
    after = lifecycle.start("task", 4321)
    assert after.started_at is not None
    assert changed(before, after) == {"state": TaskState.INITIALIZING, "stage": "init", "message": "",
                                      "worker_pid": 4321, "started_at": after.started_at, "attempts": 1,
                                      "history": (states.Attempt(1, after.started_at, worker_pid=4321),)}


def test_report_follows_the_worker(lifecycle: TaskLifecycle) -> None:
    queue(lifecycle)
    before = lifecycle.start("task", 4321)
    loading = lifecycle.report("task", live(phase="init", stage="load model", progress=0.0))
    assert changed(before, loading) == {"stage": "load model"}
    recovering = lifecycle.report("task", live(error="CUDA out of memory", warning="audio resampled"))
    assert recovering.moving_since is not None
    assert changed(loading, recovering) == {"state": TaskState.RUNNING, "stage": "render", "progress": 40.0,
                                            "message": "recovering from: CUDA out of memory",
                                            "warning": "audio resampled", "moving_since": recovering.moving_since,
                                            "progress_when_moving": 40.0}
    recovered = lifecycle.report("task", live(progress=55.0, warning="audio resampled"))
    assert changed(recovering, recovered) == {"progress": 55.0, "message": "",
                                              "progress_rose_at": recovered.progress_rose_at}


def test_finish_with_success_sets_the_report_and_full_progress(lifecycle: TaskLifecycle) -> None:
    before = running(lifecycle)
    after = lifecycle.finish("task", Outcome.succeeded({"frames": 10}, warning="audio resampled"))
    assert after.finished_at is not None
    assert changed(before, after) == {"state": TaskState.SUCCEEDED, "progress": 100.0, "message": "",
                                      "finished_at": after.finished_at, "report": {"frames": 10},
                                      "history": ended(before, after, states.AttemptOutcome.SUCCEEDED,
                                                       "audio resampled")}
    assert after.worker_pid == 4321, "which worker made it stays on record"


def test_finish_with_a_failure_keeps_where_it_failed(lifecycle: TaskLifecycle) -> None:
    before = running(lifecycle)
    after = lifecycle.finish("task", Outcome.failed("render: boom"))
    assert changed(before, after) == {"state": TaskState.FAILED, "message": "render: boom", "warning": "",
                                      "finished_at": after.finished_at,
                                      "history": ended(before, after, states.AttemptOutcome.FAILED, "render: boom")}
    assert (after.stage, after.progress) == ("render", 40.0)


def test_a_failure_that_left_a_valid_result_is_a_success_with_a_warning(lifecycle: TaskLifecycle) -> None:
    running(lifecycle)
    after = lifecycle.finish("task", Outcome.result_kept("render: face enhancer crashed"))
    assert after.state is TaskState.SUCCEEDED and after.message == ""
    assert after.warning == "render: face enhancer crashed; its result is a valid video and was kept"


def test_interrupt_fails_the_task_saying_where_it_was(lifecycle: TaskLifecycle) -> None:
    before = running(lifecycle)
    after = lifecycle.interrupt("task", "the service stopped")
    message = "interrupted: the service stopped during stage render at 40 %"
    assert changed(before, after) == {"state": TaskState.FAILED, "finished_at": after.finished_at, "message": message,
                                      "history": ended(before, after, states.AttemptOutcome.FAILED, message)}


def test_cancel_says_where_the_task_was(lifecycle: TaskLifecycle) -> None:
    queue(lifecycle, "waiting")
    assert lifecycle.cancel("waiting").message == "cancelled while queued"
    before = running(lifecycle)
    after = lifecycle.cancel("task")
    message = "cancelled during stage render at 40 %"
    assert changed(before, after) == {"state": TaskState.CANCELLED, "finished_at": after.finished_at,
                                      "message": message,
                                      "history": ended(before, after, states.AttemptOutcome.CANCELLED, message)}
    running(lifecycle, "live")
    # The supervisor knows its worker's latest position better than the last poll did.
    assert lifecycle.cancel("live", Position("encode", 97.4)).message == "cancelled during stage encode at 97 %"


def test_requeue_clears_the_run_and_keeps_the_old_place(lifecycle: TaskLifecycle) -> None:
    before = running(lifecycle, "first")
    queue(lifecycle, "second")
    after = lifecycle.requeue("first", "the service stopped")
    assert after.history[0].ended_at is not None
    assert changed(before, after) == {
        "state": TaskState.QUEUED, "stage": "", "progress": 0.0, "warning": "", "worker_pid": None,
        "started_at": None, "message": "requeued: the service stopped during stage render at 40 %",
        "moving_since": None, "progress_when_moving": 0.0,
        "history": (dataclasses.replace(before.history[0], ended_at=after.history[0].ended_at,
                                        outcome=states.AttemptOutcome.REQUEUED,
                                        message="the service stopped during stage render at 40 %"),)}
    assert after.duration_s is None, "a requeued task's duration does not grow while it waits"
    assert after.queue_position == 1 and lifecycle.store.require("second").queue_position == 2
    rerun = lifecycle.start("first", 99)
    assert rerun.attempts == 2 and [attempt.number for attempt in rerun.history] == [1, 2]
    assert (rerun.moving_since, rerun.eta_s) == (None, None), "the new attempt's estimate starts from nothing"
    assert rerun.history[1] == states.Attempt(2, rerun.started_at, worker_pid=99)
    assert rerun.summary == ("init (attempt 2, resumed from the start after the service stopped during stage render "
                             "at 40 %)")


@pytest.mark.parametrize("state", [TaskState.INITIALIZING, TaskState.RUNNING])
def test_place_records_the_node_and_keeps_the_state(lifecycle: TaskLifecycle, state: TaskState) -> None:
    before = task_in(lifecycle, state)
    after = lifecycle.place("task", NODE)
    assert changed(before, after) == {"node": NODE, "history": (dataclasses.replace(before.history[0], node=NODE),)}
    assert str(after.node) == "worker node 10.0.0.7 (id 3f2a3f2a3f2a)"
    assert after.to_dict()["node"] == {"id": NODE.id, "address": "10.0.0.7"}


def test_a_requeue_and_a_new_start_forget_the_node(lifecycle: TaskLifecycle) -> None:
    running(lifecycle)
    lifecycle.place("task", NODE)
    assert lifecycle.requeue("task", "worker node 10.0.0.7 (id 3f2a3f2a3f2a) lost").node is None
    assert lifecycle.start("task", None).node is None


@pytest.mark.parametrize("ended", [TaskState.FAILED, TaskState.CANCELLED])
def test_retry_clears_everything_of_the_last_run_and_queues_at_the_end(lifecycle: TaskLifecycle,
                                                                        ended: TaskState) -> None:
    before = task_in(lifecycle, ended, "again")
    queue(lifecycle, "later")
    after = lifecycle.retry("again")
    assert changed(before, after) == {
        "state": TaskState.QUEUED, "stage": "", "progress": 0.0, "message": "waiting in queue", "warning": "",
        "worker_pid": None, "started_at": None, "finished_at": None, "moving_since": None, "progress_when_moving": 0.0}
    assert after.queue_position == 2, "behind what was already waiting"


def test_retry_takes_only_failed_or_cancelled_tasks(lifecycle: TaskLifecycle) -> None:
    task_in(lifecycle, TaskState.SUCCEEDED, "done")
    with pytest.raises(InputError, match=r"^only failed or cancelled tasks can be retried; task done is succeeded$"):
        lifecycle.retry("done")
    running(lifecycle, "busy")
    with pytest.raises(InputError, match=r"task busy is running$"):
        lifecycle.retry("busy")


def test_a_cancel_asked_from_another_process_waits_for_the_supervisor_and_a_retry_forgets_it(
        lifecycle: TaskLifecycle) -> None:
    running(lifecycle, "busy")
    queue(lifecycle, "waiting")
    asked = lifecycle.ask_cancel("busy")
    assert asked.state is TaskState.RUNNING and asked.cancel_asked_at is not None, "only the supervisor cancels"
    assert lifecycle.store.cancels_asked() == ["busy"]
    lifecycle.cancel("busy")
    assert lifecycle.store.cancels_asked() == [], "an ended task is asked no more"
    assert lifecycle.retry("busy").cancel_asked_at is None


def test_a_finished_task_can_only_be_retried_and_success_is_final() -> None:
    assert not any(TaskState.SUCCEEDED in row for row in TRANSITIONS.values())
    for state in (TaskState.FAILED, TaskState.CANCELLED):
        assert [operation for operation, row in TRANSITIONS.items() if state in row] == [Operation.RETRY]


OPERATIONS: dict[Operation, Callable[[TaskLifecycle, str], TaskRecord]] = {
    Operation.HOLD: lambda lifecycle, code: lifecycle.hold(code, "waiting"),
    Operation.START: lambda lifecycle, code: lifecycle.start(code, 99),
    Operation.PLACE: lambda lifecycle, code: lifecycle.place(code, NODE),
    Operation.REPORT: lambda lifecycle, code: lifecycle.report(code, live()),
    Operation.FINISH: lambda lifecycle, code: lifecycle.finish(code, Outcome.succeeded({})),
    Operation.CANCEL: lambda lifecycle, code: lifecycle.cancel(code),
    Operation.ASK_CANCEL: lambda lifecycle, code: lifecycle.ask_cancel(code),
    Operation.REQUEUE: lambda lifecycle, code: lifecycle.requeue(code, "the service stopped"),
    Operation.RETRY: lambda lifecycle, code: lifecycle.retry(code),
}
REFUSED = [(operation, state) for operation in Operation for state in TaskState if state not in TRANSITIONS[operation]]


@pytest.mark.parametrize(("operation", "state"), REFUSED, ids=[f"{op.value}-from-{st.value}" for op, st in REFUSED])
def test_each_operation_refuses_the_states_outside_its_row(lifecycle: TaskLifecycle, operation: Operation,
                                                           state: TaskState) -> None:
    before = task_in(lifecycle, state)
    with pytest.raises((TransitionError, InputError)) as refusal:
        OPERATIONS[operation](lifecycle, "task")
    if operation in (Operation.CANCEL, Operation.ASK_CANCEL):
        assert str(refusal.value) == f"task task has already ended ({state.value})"
    after = lifecycle.store.require("task")
    assert changed(before, after) == {} and after.updated_at == before.updated_at


def test_finish_from_the_queue_is_a_failure_only(lifecycle: TaskLifecycle) -> None:
    queue(lifecycle)
    with pytest.raises(TransitionError, match="finish cannot take it from queued to succeeded"):
        lifecycle.finish("task", Outcome.succeeded({}))
    assert lifecycle.finish("task", Outcome.failed("init: unknown engine")).state is TaskState.FAILED


@pytest.mark.parametrize("operation", list(Operation))
def test_an_unknown_task_is_not_found(lifecycle: TaskLifecycle, operation: Operation) -> None:
    with pytest.raises(TaskNotFoundError, match=r"^no task with code 'task'$"):
        OPERATIONS[operation](lifecycle, "task")


def test_a_store_of_an_older_version_gains_the_node_column_and_keeps_its_tasks(tmp_path: Path) -> None:
    import sqlite3

    from heygem.supervisor import store

    path = tmp_path / "old.sqlite3"
    old_schema = store._SCHEMA.replace(",\n    node TEXT,\n    version INTEGER NOT NULL DEFAULT 0,\n"
                                       "    history TEXT NOT NULL DEFAULT '[]',\n    audio_duration_s REAL,\n"
                                       "    cancel_asked_at REAL,\n    moving_since REAL,\n"
                                       "    progress_when_moving REAL NOT NULL DEFAULT 0,\n"
                                       "    progress_rose_at REAL\n", "\n")
    assert "node" not in old_schema and "history" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO tasks (code, state, engine, audio_path, video_path, created_at, queued_at, updated_at)"
                   " VALUES ('old', 'succeeded', 'meshwarp', '/a.wav', '/v.mp4', 1, 1, 1)")
    migrated = TaskLifecycle(TaskStore(path))
    old = migrated.store.require("old")
    assert old.node is None and old.history == () and old.version == 0 and old.summary == "done"
    queue(migrated, "new")
    migrated.start("new", None)
    assert migrated.place("new", NODE).node == NODE
    assert TaskStore(path).require("new").node == NODE, "a second opening finds the column and adds nothing"


def test_a_report_never_takes_an_attempt_back_and_a_write_of_nothing_is_not_made(lifecycle: TaskLifecycle) -> None:
    queue(lifecycle)
    lifecycle.start("task", 4321)
    ahead = lifecycle.report("task", live(stage="render", progress=60.0))
    # A status read late (an older poll, a worker still saying init) changes neither the state nor the progress.
    late = lifecycle.report("task", live(phase="init", stage="render", progress=30.0))
    assert (late.state, late.stage, late.progress, late.version) == (TaskState.RUNNING, "render", 60.0, ahead.version)
    # The worker's last word ("done") keeps the state for `finish`, and the stage it ended in.
    done = lifecycle.report("task", live(phase="done", stage="finishing", progress=100.0))
    assert (done.state, done.stage, done.progress, done.version) == (TaskState.RUNNING, "finishing", 100.0,
                                                                     ahead.version + 1)
    finished = lifecycle.finish("task", Outcome.succeeded({}))
    assert (finished.stage, finished.version) == ("finishing", done.version + 1)


def test_the_time_left_is_measured_from_where_progress_began_to_move(lifecycle: TaskLifecycle,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker took 8 s to start and analyse; rendering then went from 5 % to 25 % in 2 s: 7.5 s are left, not 30.
    clock = [1000.0]
    monkeypatch.setattr(states.time, "time", lambda: clock[0])
    monkeypatch.setattr("heygem.supervisor.lifecycle.time.time", lambda: clock[0])
    queue(lifecycle)
    lifecycle.start("task", 4321)
    clock[0] += 8
    analysing = lifecycle.report("task", live(stage="analysing video", progress=0.0))
    assert analysing.eta_s is None, "no figure before progress moves"
    lifecycle.report("task", live(stage="rendering", progress=5.0))
    clock[0] += 2
    rendering = lifecycle.report("task", live(stage="rendering", progress=25.0))
    assert rendering.eta_s == pytest.approx(7.5)
    assert rendering.to_dict()["eta_s"] == pytest.approx(7.5), "the API's eta_s is the same figure"


def test_a_look_between_two_reports_counts_down_instead_of_stretching_the_rate(
        lifecycle: TaskLifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering went from 5 % to 25 % in 0.5 s: 1.875 s left then. A look 1 s later, before the next report, sees
    # 0.875 s (shown as at least 1 s), not the 5.6 s a rate stretched to the time of the look would give.
    clock = [1000.0]
    monkeypatch.setattr(states.time, "time", lambda: clock[0])
    monkeypatch.setattr("heygem.supervisor.lifecycle.time.time", lambda: clock[0])
    queue(lifecycle)
    lifecycle.start("task", 4321)
    lifecycle.report("task", live(stage="rendering", progress=5.0))
    clock[0] += 0.5
    lifecycle.report("task", live(stage="rendering", progress=25.0))
    clock[0] += 0.2
    stale = lifecycle.report("task", live(stage="rendering", progress=25.0))
    assert stale.eta_s == pytest.approx(1.675), "a report without new progress does not restart the count"
    clock[0] += 0.8
    assert lifecycle.store.require("task").eta_s == 1.0, "never 0 s while running"
