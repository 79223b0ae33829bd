"""`python -m heygem tasks ...` reads and changes the same store as a running supervisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from heygem.supervisor import TaskState
from heygem.supervisor.processes import group_members
from tests.conftest import REPO_ROOT
from tests.supervision import submit, wait_final, wait_running, wait_until


def run_cli(data_dir: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HEYGEM_PATHS__DATA_DIR": data_dir}
    return subprocess.run([sys.executable, "-m", "heygem", "tasks", *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_list_show_and_cancel_from_the_command_line(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    data_dir = str(supervisor.config.paths.data_dir)
    done = submit(supervisor, inputs, [["render", 0.3]], code="done-task")
    wait_final(supervisor, done)
    running = submit(supervisor, inputs, [["child", 60], ["render", 30]], code="running-task")
    pid = wait_running(supervisor, running).worker_pid

    listing = run_cli(data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["CODE", "CREATED", "STATE"]
    assert lines[1].startswith("running-task") and " running " in lines[1]
    assert lines[2].startswith("done-task") and " succeeded " in lines[2]

    shown = json.loads(run_cli(data_dir, "show", "done-task").stdout)
    assert shown["state"] == "succeeded" and shown["result_path"].endswith("done-task-r.mp4")

    cancelled = run_cli(data_dir, "cancel", "running-task")
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: not group_members(pid), 5, "the worker's group to end")
    record = supervisor.wait(running, 5)
    assert record.state is TaskState.CANCELLED
    assert record.message == "cancelled from the command line during stage render"

    missing = run_cli(data_dir, "show", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no task with code 'nope'"
    again = run_cli(data_dir, "cancel", "done-task")
    assert again.stderr.strip() == "error: task done-task has already ended (succeeded)"
