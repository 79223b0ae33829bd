"""Who owns a data folder (one service at a time), and what the ops CLI asks of that owner from another process.

Light on purpose: `heygem tasks …` imports this module and the store, not the supervisor's media and backends.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import IO

from heygem.config import Config
from heygem.errors import HeyGemError
from heygem.supervisor.lifecycle import TaskLifecycle
from heygem.supervisor.processes import kill_leftovers
from heygem.supervisor.states import TaskRecord
from heygem.supervisor.store import TaskStore


class DataDirBusy(HeyGemError):
    """Another process (a running HeyGem service) holds the data folder."""


def hold_data_dir(config: Config) -> IO[str]:
    """An exclusive lock on the data folder, held for the holder's lifetime (released when the process dies).

    A second app on the same folder would take the first one's running tasks for interrupted ones.
    """
    lock_path = config.paths.data_dir / "run" / "supervisor.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirBusy(f"another HeyGem service (pid {owner}) is already using {config.paths.data_dir}; "
                          "stop it, or give this one its own paths.data_dir") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def cancel_task(config: Config, code: str, wait_s: float = 30.0) -> TaskRecord:
    """Cancel a task from another process, app running or not.

    A running service is asked (`ask_cancel`); its supervisor carries out its own `cancel`, the one the APIs call,
    and stops the worker through the handle it holds. The record is returned once that is done, or after `wait_s`
    as it stands. With no service running, nothing else can touch the task, and `cancel` is recorded here while
    this process holds the data folder; what a worker left behind that carries the task's marker is killed.
    """
    store = TaskStore(config.paths.db_path)
    tasks = TaskLifecycle(store)
    try:
        held = hold_data_dir(config)
    except DataDirBusy:
        tasks.ask_cancel(code)
        deadline = time.monotonic() + wait_s
        while not (record := store.require(code)).state.is_final and time.monotonic() < deadline:
            time.sleep(0.1)
        return record
    with held:
        record = tasks.cancel(code)
    if record.worker_pid:
        kill_leftovers(record.worker_pid, record.code)
    return record
