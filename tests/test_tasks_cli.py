"""`python -m heygem tasks ...` reads and changes the same store as a running supervisor, through its lifecycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from heygem.options import TaskOptions
from heygem.supervisor import TaskState
from heygem.supervisor.lifecycle import TaskLifecycle
from heygem.supervisor.processes import TASK_MARKER, group_members
from heygem.supervisor.store import TaskStore
from tests.conftest import REPO_ROOT, ConfigFactory
from tests.supervision import submit, wait_final, wait_running, wait_until

pytestmark = pytest.mark.slow


def run_cli(data_dir: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HEYGEM_PATHS__DATA_DIR": data_dir}
    return subprocess.run([sys.executable, "-m", "heygem", "tasks", *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def stored_progress(store: TaskStore, code: str) -> float:
    return store.require(code).progress


def test_list_show_and_cancel_from_the_command_line(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    data_dir = str(supervisor.config.paths.data_dir)
    done = submit(supervisor, inputs, [["render", 0.3]], code="done-task")
    wait_final(supervisor, done)
    running = submit(supervisor, inputs, [["child", 60], ["stage", "render"], ["progress", 30], ["sleep", 60]],
                     code="running-task")
    pid = wait_running(supervisor, running).worker_pid

    listing = run_cli(data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["CODE", "CREATED", "STATE"]
    assert lines[1].startswith("running-task") and " running " in lines[1]
    assert lines[2].startswith("done-task") and " succeeded " in lines[2]

    shown = json.loads(run_cli(data_dir, "show", "done-task").stdout)
    assert shown["state"] == "succeeded" and shown["result_path"].endswith("done-task-r.mp4")
    assert [(attempt["number"], attempt["outcome"]) for attempt in shown["history"]] == [(1, "succeeded")]

    # The message is the supervisor's own, from where the store last saw the worker.
    store = TaskStore(supervisor.config.paths.db_path)
    wait_until(lambda: stored_progress(store, running) == 30, 10, "the supervisor to record the worker's progress")
    cancelled = run_cli(data_dir, "cancel", "running-task")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "task running-task cancelled during stage render at 30 %"
    # The CLI asked; the running supervisor cancelled it with the API's own cancel (before the CLI answered) and
    # ended the worker it holds.
    record = supervisor.status(running)
    assert record.state is TaskState.CANCELLED and record.cancel_asked_at is not None
    assert record.message == "cancelled during stage render at 30 %"
    wait_until(lambda: not group_members(pid), 10, "the worker's group to end")

    missing = run_cli(data_dir, "show", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no task with code 'nope'"
    again = run_cli(data_dir, "cancel", "done-task")
    assert again.stderr.strip() == "error: task done-task has already ended (succeeded)"


def test_the_cli_and_the_supervisor_cancel_with_the_same_words(start_supervisor, inputs) -> None:
    supervisor = start_supervisor(max_workers=2)
    steps = [["stage", "render"], ["progress", 30], ["sleep", 60]]
    by_supervisor, by_cli = (submit(supervisor, inputs, steps, code=code) for code in ("by-supervisor", "by-cli"))
    queued = submit(supervisor, inputs, steps, code="still-queued")
    store = TaskStore(supervisor.config.paths.db_path)
    for code in (by_supervisor, by_cli):
        wait_until(lambda code=code: stored_progress(store, code) == 30, 20, f"{code} at 30 %")
    data_dir = str(supervisor.config.paths.data_dir)
    assert run_cli(data_dir, "cancel", queued).stdout.strip() == "task still-queued cancelled while queued"
    assert supervisor.cancel(by_supervisor).message == "cancelled during stage render at 30 %"
    assert run_cli(data_dir, "cancel", by_cli).stdout.strip() == "task by-cli cancelled during stage render at 30 %"
    assert supervisor.status(by_cli).message == supervisor.status(by_supervisor).message


@pytest.fixture
def decoy_group() -> Iterator[tuple[int, int, int]]:
    """(leader, marked, other): a process group whose leader's pid a task record names, as a reused pid would.
    Of its two children only `marked` carries the marker of task stale-task; `other` carries another task's."""
    script = f"{TASK_MARKER}=stale-task sleep 61 & {TASK_MARKER}=other sleep 62 & wait"
    leader = subprocess.Popen(["bash", "-c", script], start_new_session=True)

    def sleepers() -> dict[bytes, int]:
        """The group's members by their command line, once bash has turned into each `sleep`."""
        return {Path(f"/proc/{pid}/cmdline").read_bytes(): pid for pid in group_members(leader.pid)}

    try:
        wait_until(lambda: {b"sleep\x0061\x00", b"sleep\x0062\x00"} <= sleepers().keys(), 10, "the decoy group")
        yield leader.pid, sleepers()[b"sleep\x0061\x00"], sleepers()[b"sleep\x0062\x00"]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_cli_cancel_kills_only_processes_that_carry_the_task_marker(make_config: ConfigFactory, inputs,
                                                                   decoy_group: tuple[int, int, int]) -> None:
    leader, marked, other = decoy_group
    config = make_config()
    lifecycle = TaskLifecycle(TaskStore(config.paths.db_path))
    audio, video = (str(path) for path in inputs)
    lifecycle.queue("stale-task", "meshwarp", audio, video, TaskOptions(), "result.mp4")
    lifecycle.start("stale-task", leader)  # the app that started it is gone; the pid now names the decoy

    cancelled = run_cli(str(config.paths.data_dir), "cancel", "stale-task")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "task stale-task cancelled during stage init at 0 %"
    wait_until(lambda: marked not in group_members(leader), 10, "the marked process to die")
    assert set(group_members(leader)) == {leader, other}, "the leader and the other task's process live on"


def test_a_worker_ending_after_an_outside_cancel_is_logged_not_recorded(start_supervisor, inputs,
                                                                        tmp_path: Path) -> None:
    supervisor = start_supervisor(poll_interval_s=30)  # no poll: the worker's own exit meets the cancel
    go_on = tmp_path / "go-on"
    code = submit(supervisor, inputs, [["stage", "render"], ["progress", 50], ["await", str(go_on)]])
    log = supervisor.config.paths.logs_dir / "tasks" / f"{code}.log"
    wait_until(lambda: log.is_file() and "stage render begins" in log.read_text(), 30, "the worker to render")
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING", format="{message}")
    try:
        # Another process writes the store behind the supervisor's back (a store edited by hand, an older ops CLI).
        cancelled = TaskLifecycle(TaskStore(supervisor.config.paths.db_path)).cancel(code)
        go_on.touch()
        wait_until(lambda: any(code in line for line in warnings), 20, "the refused outcome to be logged")
    finally:
        logger.remove(sink)
    refused = next(line for line in warnings if code in line)
    assert refused.startswith(f"task {code}: outcome succeeded not recorded: task {code}: finish cannot take it "
                              "from cancelled to succeeded")
    record = supervisor.status(code)
    assert record.state is TaskState.CANCELLED and record.message == cancelled.message
