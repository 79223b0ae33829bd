"""The worker process: one task, started with the spawn method, in its own process group.

This module's top level stays light: it is imported afresh in every spawned worker, and the GPU must be
chosen (CUDA_VISIBLE_DEVICES) before any engine module loads a GPU library.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from heygem.options import TaskOptions
from heygem.supervisor.processes import become_group_leader


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, as plain data (it is pickled into the spawned process)."""

    code: str
    engine: str
    audio_path: str
    video_path: str
    result_path: str
    work_dir: str
    options: TaskOptions
    config: dict[str, dict[str, Any]]
    address_file: str
    gpu_index: int | None
    live_dir: str | None = None  # where the worker writes the task's live stream; None: no stream


def describe_exception(exc: BaseException, stage: str) -> str:
    """A non-empty one-line message naming the stage and the cause, whatever the exception holds."""
    from heygem.errors import HeyGemError, one_line

    try:
        text = one_line(str(exc))
    except Exception:  # an exception whose __str__ itself fails
        text = ""
    if isinstance(exc, HeyGemError) and text:
        return f"{stage}: {text}"
    kind = type(exc).__name__
    return f"{stage}: {kind}: {text}" if text else f"{stage}: {kind} (raised without a message)"


def run_worker(spec: WorkerSpec) -> None:
    """Spawn target. Exit code 0 with a written outcome means the result file is complete."""
    become_group_leader(spec.code)
    if spec.gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec.gpu_index)

    from loguru import logger

    from heygem.config import Config
    from heygem.engines.registry import recognise_phones_ahead, resolve_engine
    from heygem.logs import setup_worker_logging
    from heygem.pipeline.engine import Job
    from heygem.supervisor.protocol import WorkerReporter, write_outcome

    config = Config.from_dict(spec.config)  # the head's validated config, as it was
    setup_worker_logging(config, spec.code)
    work_dir = Path(spec.work_dir)
    # Where the code came from tells which copy ran: with the ray backend, the one the head shipped to the node.
    logger.info("worker {} started for task {} (engine {}, gpu {}, code in {})", os.getpid(), spec.code, spec.engine,
                spec.gpu_index, Path(__file__).resolve().parents[1])
    reporter = WorkerReporter(spec.code, Path(spec.address_file), config.supervisor.heartbeat_interval_s)
    try:
        recognise_phones_ahead(spec.engine, Path(spec.audio_path), config)
        engine = resolve_engine(spec.engine)(config)
        engine.load(reporter)
        reporter.begin_run()
        job = Job(code=spec.code, audio_path=Path(spec.audio_path), video_path=Path(spec.video_path),
                  result_path=Path(spec.result_path), work_dir=work_dir, options=spec.options, config=config,
                  live_dir=Path(spec.live_dir) if spec.live_dir else None)
        report = engine.run(job, reporter)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the supervisor must hear why
        message = describe_exception(exc, reporter.current_stage)
        logger.error("task failed: {}\n{}", message, "".join(traceback.format_exception(exc)))
        write_outcome(work_dir, {"ok": False, "message": message, "report": {}})
        reporter.finish()
        logger.complete()
        sys.exit(1)
    logger.info("task finished: {}", report)
    write_outcome(work_dir, {"ok": True, "message": "", "report": report or {}})
    reporter.finish()
