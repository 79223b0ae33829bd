"""The one process on a Ray node that makes sure a task leaves nothing behind there.

  python -m heygem.supervisor.backends.node_guard RAY_WORKER_PID EXIT_FILE TASK_FOLDER -- COMMAND...

Ray ends a task by ending the Ray worker process that runs it: a force-cancel, Ray's own kill of a crashed or
out-of-memory worker, a raylet that died, or the head app gone. None of these reaches our worker, which leads
its own process group (as with the local backend, so that one kill takes its ffmpeg children too): Ray
SIGKILLs only its worker's direct children, which then cannot clean up, and SIGTERMs only its worker's own
process group. Measured on Ray 2.60: every one of those paths left the ffmpeg children running.

So the Ray task starts this guard, which forks at once: the parent prints the guard's pid and exits, and the
guard, reparented away from the Ray worker, is no Ray process's child. It runs COMMAND (the worker, tied to the
guard by PR_SET_PDEATHSIG) and waits on two process file descriptors:
  - the Ray worker ends first: SIGKILL the worker's process group, remove the task's folder;
  - the worker ends: SIGKILL what it left in its group, write its exit status to EXIT_FILE for the Ray task.
It runs no engine code, so nothing can keep it from noticing the Ray worker's death.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import NoReturn

from heygem.supervisor.processes import kill_group


def write_exit_status(exit_file: Path, status: int) -> None:
    temporary = exit_file.with_name(exit_file.name + ".tmp")
    temporary.write_text(str(status), encoding="utf-8")
    os.replace(temporary, exit_file)


def read_exit_status(exit_file: Path) -> int | None:
    """The worker's exit status as the guard saw it (negative: killed by that signal); None if it never wrote."""
    try:
        return int(exit_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def guard(ray_worker: int, exit_file: Path, folder: Path, command: list[str]) -> int:
    worker: list[subprocess.Popen[bytes]] = []

    def abandon(signum: int | None = None, frame: FrameType | None = None) -> NoReturn:
        """The task is over for Ray: nothing of it may stay."""
        for process in worker:
            kill_group(process.pid)
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, abandon)
    try:
        watched = os.pidfd_open(ray_worker)
    except ProcessLookupError:  # the Ray worker died before the guard got going
        abandon()
    worker.append(subprocess.Popen(command))
    finished = os.pidfd_open(worker[0].pid)
    ready, _, _ = select.select([watched, finished], [], [])
    if finished not in ready:
        abandon()
    status = worker[0].wait()
    kill_group(worker[0].pid)  # what the worker left running in its group (ffmpeg)
    write_exit_status(exit_file, status)
    if select.select([watched], [], [], 0)[0]:  # the Ray worker ended meanwhile: nobody will clean up
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    ray_worker, exit_file, folder = int(argv[0]), Path(argv[1]), Path(argv[2])
    command = argv[argv.index("--") + 1:]
    child = os.fork()
    if child:
        print(child, flush=True)
        return 0
    # The Ray task reads our pid from a pipe and then closes it: keep nothing of that pipe open.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return guard(ray_worker, exit_file, folder, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
