"""Logging with loguru: one app log, and one log file per task holding its whole story."""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

from heygem.config import Config


def setup_app_logging(config: Config, console: bool = True) -> Path:
    """Console plus data_dir/logs/app.log. Safe to call again (replaces the sinks)."""
    logs_dir = config.paths.logs_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    app_log = logs_dir / "app.log"
    logger.remove()
    if console:
        logger.add(sys.stderr, level=config.logging.level.upper())
    logger.add(app_log, level=config.logging.level.upper(), rotation=config.logging.rotation,
               retention=f"{config.logging.retention_days} days", enqueue=False, encoding="utf-8")
    return app_log


def task_log_path(config: Config, code: str) -> Path:
    return config.paths.logs_dir / "tasks" / f"{code}.log"


def setup_worker_logging(config: Config, code: str) -> Path:
    """Inside a worker process: everything it logs goes to the task's own file (appended across attempts)."""
    path = task_log_path(config, code)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.remove()
    logger.add(path, level="DEBUG", encoding="utf-8", backtrace=True, diagnose=False)
    logger.add(sys.stderr, level="WARNING")
    return path
