"""Process-group handling: each worker leads its own group so one kill takes its ffmpeg children too."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


TASK_MARKER = "HEYGEM_TASK"


def become_group_leader(code: str) -> None:
    """Called first thing in a worker: a new process group, death when the app dies, and a marker that
    its children inherit so that a restarted app can find leftovers of this task (see kill_leftovers)."""
    os.setpgid(0, 0)
    os.environ[TASK_MARKER] = code
    die_with_parent()


def serve_status_manager() -> None:
    """Initializer of the status Manager process: Ctrl-C in the terminal is the app's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the app's shutdown still kills workers
        return
    if os.getppid() != parent:  # the app died before prctl took effect
        os._exit(1)


def kill_group(pid: int) -> None:
    """SIGKILL the worker's whole process group (and the worker itself if it has not made its group yet)."""
    # killpg(pid) reaches only a group whose leader is `pid`: never the app's own group.
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def kill_leftovers(pgid: int, code: str) -> None:
    """Kill what the worker for `code` started (e.g. ffmpeg) in group `pgid`, as recorded in the task store.

    For a restarted app after a crash, and for a cancel from the ops CLI. The group id alone is not trusted, since
    ids are reused; only processes carrying the task's marker are killed. The worker itself never carries it
    where /proc shows it (it set the marker after it started), so a live worker is left to its supervisor.
    """
    marker = f"{TASK_MARKER}={code}".encode()
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if marker in environ.read().split(b"\0"):
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def group_members(pgid: int) -> list[int]:
    """Live processes in a group (Linux /proc), zombies excluded."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry))
    return members


def describe_exit(exitcode: int | None, where: str) -> str:
    """'worker killed by signal 9 (SIGKILL), often the out-of-memory killer, during stage render at 43 %'."""
    if exitcode is None:
        return f"worker did not exit during {where}"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = ", often the out-of-memory killer," if -exitcode == signal.SIGKILL else ""
        return f"worker killed by signal {-exitcode} ({name}){hint} during {where}"
    return f"worker exited with code {exitcode} during {where}"
