"""Finished tasks are kept storage.keep_days from their end, then deleted with their files, as a DELETE would.

Tasks that fail at once (no face in the video) still leave their uploads behind; without a limit they fill the
disk. The sweep runs when the supervisor starts and then hourly, in its own thread, through the supervisor's own
delete: the record, the uploads, the result and its shared copy, the live stream and the task's log go together.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from loguru import logger

from heygem.errors import TaskNotFoundError

if TYPE_CHECKING:
    from heygem.supervisor.supervisor import TaskSupervisor

SWEEP_INTERVAL_S = 3600.0
DAY_S = 86400.0


class Retention:
    def __init__(self, supervisor: TaskSupervisor, keep_days: float, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self._supervisor = supervisor
        self._keep_s = keep_days * DAY_S
        self._interval_s = interval_s
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._keep_s > 0:  # 0: tasks are kept until someone deletes them
            threading.Thread(target=self._run, name="task-retention", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()

    def sweep(self, now: float) -> list[str]:
        """Delete every finished task that ended more than keep_days before `now`; returns their codes."""
        cutoff = now - self._keep_s
        expired = [record.code for record in self._supervisor.list_tasks()
                   if record.state.is_final and record.finished_at is not None and record.finished_at < cutoff]
        for code in expired:
            with contextlib.suppress(TaskNotFoundError):  # deleted meanwhile
                self._supervisor.delete(code)
        if expired:
            logger.info("retention: deleted {} tasks that ended more than {:g} days ago", len(expired),
                        self._keep_s / DAY_S)
        return expired

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sweep(time.time())
            except Exception:  # the next sweep tries again; the server carries on either way
                logger.exception("retention sweep failed")
            self._stopping.wait(self._interval_s)
