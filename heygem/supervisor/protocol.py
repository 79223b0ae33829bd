"""The worker protocol: the live status each worker publishes in the Manager dict, and how it gets there.

A worker writes one plain dict under its task code (see `LiveStatus`); only that worker writes it, the
supervisor reads it. Workers find the Manager through an address file rather than an inherited proxy, so
when the Manager process dies and the supervisor starts a new one, workers reconnect and no task is lost.
At the end a worker also writes `outcome.json` in its work folder: the final word survives even a dead
Manager. Everything that crosses the process boundary is plain data; errors travel as text.
"""

from __future__ import annotations

import json
import os
import threading
import time
from multiprocessing import current_process
from multiprocessing.managers import DictProxy, SyncManager
from pathlib import Path
from typing import Any, Literal, TypedDict

from loguru import logger

from heygem.errors import one_line

Phase = Literal["init", "run", "done"]
OUTCOME_FILE = "outcome.json"
# What a broken connection to the Manager raises; the worker then reconnects on its next write.
CONNECTION_ERRORS = (OSError, EOFError, ValueError)


class LiveStatus(TypedDict):
    phase: Phase
    stage: str
    progress: float
    error: str  # non-empty while the worker reports a problem it may still recover from
    warning: str
    heartbeat: float
    pid: int
    moves: int  # advance() calls: work that moved on without a progress figure


class Outcome(TypedDict):
    ok: bool
    message: str
    report: dict[str, Any]


_STATUSES: dict[str, LiveStatus] = {}


def _get_statuses() -> dict[str, LiveStatus]:
    return _STATUSES


class StatusManager(SyncManager):
    """A Manager serving one shared dict, reachable by address from any process with our authkey."""


StatusManager.register("statuses", callable=_get_statuses, proxytype=DictProxy)


def write_manager_address(path: Path, address: str | tuple[str, int], authkey: bytes | None = None) -> None:
    """`address`: a Unix socket path, or (host, port) for workers on other machines. `authkey`: for workers
    that were not spawned by this app (ray backend), which do not inherit its key; the file is then private."""
    entry: dict[str, Any] = {"address": address}
    if authkey is not None:
        entry["authkey"] = authkey.hex()
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps(entry), encoding="utf-8")
    os.replace(temporary, path)


def connect_statuses(address_file: Path) -> DictProxy:
    entry = json.loads(address_file.read_text(encoding="utf-8"))
    # JSON turns a (host, port) tuple into a list, which multiprocessing does not take for an address.
    address = tuple(entry["address"]) if isinstance(entry["address"], list) else entry["address"]
    authkey = bytes.fromhex(entry["authkey"]) if "authkey" in entry else current_process().authkey
    manager = StatusManager(address=address, authkey=authkey)
    manager.connect()
    return manager.statuses()  # type: ignore[attr-defined]


def write_outcome(work_dir: Path, outcome: Outcome) -> None:
    temporary = work_dir / (OUTCOME_FILE + ".tmp")
    temporary.write_text(json.dumps(outcome), encoding="utf-8")
    os.replace(temporary, work_dir / OUTCOME_FILE)


def read_outcome(work_dir: Path) -> Outcome | None:
    try:
        return json.loads((work_dir / OUTCOME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class WorkerReporter:
    """The worker's side of the protocol; implements heygem.pipeline.engine.Reporter.

    A background thread sends a heartbeat every `heartbeat_interval_s`; every change is pushed at once.
    Writes that fail (Manager gone) are retried on the next push after reconnecting.
    """

    def __init__(self, code: str, address_file: Path, heartbeat_interval_s: float) -> None:
        self.code = code
        self._address_file = address_file
        self._lock = threading.Lock()
        self._statuses: DictProxy | None = None
        self._status: LiveStatus = {"phase": "init", "stage": "init", "progress": 0.0, "error": "",
                                    "warning": "", "heartbeat": time.time(), "pid": os.getpid(), "moves": 0}
        self._stage_began = time.monotonic()
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_interval_s,),
                                           name="heartbeat", daemon=True)
        self._push()
        self._heartbeat.start()

    @property
    def current_stage(self) -> str:
        return self._status["stage"]

    def stage(self, name: str) -> None:
        now = time.monotonic()
        logger.info("stage {} begins ({} took {:.2f} s)", name, self._status["stage"], now - self._stage_began)
        self._stage_began = now
        self._update(stage=name)

    def progress(self, percent: float) -> None:
        self._update(progress=round(min(100.0, max(0.0, float(percent))), 2))

    def advance(self) -> None:
        with self._lock:
            self._status["moves"] += 1
        self._push()

    def error(self, message: str) -> None:
        logger.warning("reported error (may recover): {}", message)
        self._update(error=one_line(message) or "unspecified error")

    def clear_error(self) -> None:
        logger.info("recovered from: {}", self._status["error"])
        self._update(error="")

    def warn(self, message: str) -> None:
        logger.warning(message)
        self._update(warning=one_line(message))

    def begin_run(self) -> None:
        self._update(phase="run")
        self.stage("run")

    def finish(self) -> None:
        logger.info("{} ended after {:.2f} s", self._status["stage"], time.monotonic() - self._stage_began)
        self._update(phase="done")
        self.close()

    def close(self) -> None:
        """Stop the heartbeat, leaving the last status as it is: another reporter of the task takes over."""
        self._stopped.set()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status.update(changes)  # type: ignore[typeddict-item]
        self._push()

    def _beat(self, interval_s: float) -> None:
        while not self._stopped.wait(interval_s):
            self._push()

    def _push(self) -> None:
        with self._lock:
            self._status["heartbeat"] = time.time()
            snapshot = dict(self._status)
            try:
                if self._statuses is None:
                    self._statuses = connect_statuses(self._address_file)
                self._statuses[self.code] = snapshot
            except CONNECTION_ERRORS as exc:
                self._statuses = None
                logger.debug("status Manager unreachable ({}); will reconnect", type(exc).__name__)
