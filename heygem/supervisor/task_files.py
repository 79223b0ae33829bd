"""A task's files beside its record: its work folder, its live stream, its result and uploads, its log.

The supervisor decides when a task starts, ends or goes; this module does what that means on disk, in one place:
a fresh work folder per attempt, what a worker's end leaves of the stream, the clean-up after an interruption,
the results a retry replaces, and everything a deleted task takes with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from heygem.config import Config
from heygem.logs import task_log_path
from heygem.pipeline.live import LiveStream, live_stream
from heygem.supervisor.results import own_shared_copy
from heygem.supervisor.states import TaskRecord, TaskState


class TaskFiles:
    def __init__(self, config: Config) -> None:
        self.config = config

    def work_dir(self, code: str) -> Path:
        return self.config.paths.temp_dir / code

    def prepare_attempt(self, code: str) -> tuple[Path, LiveStream]:
        """An empty work folder for a new worker, and its live stream with an earlier attempt's removed."""
        work_dir = self.work_dir(code)
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        stream = live_stream(self.config, code)
        stream.remove()
        return work_dir, stream

    def worker_ended(self, code: str, record: TaskRecord | None) -> None:
        """The worker and its encoder are gone: the live stream ends, or goes if the result replaces it; the work
        folder goes unless supervisor.keep_temp keeps it for a look."""
        stream = live_stream(self.config, code)
        if record is not None and record.state is TaskState.SUCCEEDED and not self.config.live.keep_after_success:
            stream.remove()
        else:
            stream.end()
        if not self.config.supervisor.keep_temp:
            shutil.rmtree(self.work_dir(code), ignore_errors=True)

    def interrupted(self, code: str) -> None:
        """A task that was active when the service stopped: its half-made work goes, its stream ends as it was."""
        shutil.rmtree(self.work_dir(code), ignore_errors=True)
        live_stream(self.config, code).end()

    def remove_results(self, record: TaskRecord) -> None:
        """What a retry replaces: the result, and the shared copy if this server placed it (own_shared_copy).

        Call it before the retry is recorded: whether the copy is ours depends on how the task ended."""
        for path in (record.result_path, own_shared_copy(record)):
            if path:
                Path(path).unlink(missing_ok=True)

    def remove_task(self, record: TaskRecord) -> None:
        """Everything a deleted task had: its log, result, own shared copy, uploads, work folder and stream.

        Inputs outside paths.uploads_dir (a path the CLI or a script named) are a person's own files and stay."""
        uploads = self.config.paths.uploads_dir.resolve()
        files = [task_log_path(self.config, record.code)]
        files += [Path(path) for path in (record.result_path, own_shared_copy(record)) if path]
        files += [Path(path) for path in (record.audio_path, record.video_path) if Path(path).is_relative_to(uploads)]
        for path in files:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.work_dir(record.code), ignore_errors=True)
        live_stream(self.config, record.code).remove()
