"""The local backend: one spawned process per task on this machine, admitted on NVML's free GPU memory."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

from loguru import logger

from heygem.config import Config
from heygem.pipeline.engine import Engine
from heygem.supervisor.admission import Admission, admit, probe_gpus
from heygem.supervisor.backends.base import (
    MAX_SOCKET_PATH,
    Demand,
    ExecutionBackend,
    ExitKind,
    WorkerExit,
    WorkerHandle,
)
from heygem.supervisor.processes import kill_group
from heygem.supervisor.protocol import read_outcome
from heygem.supervisor.worker import WorkerSpec, run_worker


class LocalWorker(WorkerHandle):
    def __init__(self, spec: WorkerSpec, demand: Demand, process: BaseProcess, started_at: float) -> None:
        super().__init__(spec.code, demand)
        self._process = process
        self._work_dir = Path(spec.work_dir)
        self._gpu_index = spec.gpu_index
        self._started_at = started_at

    @property
    def sentinel(self) -> int:
        return self._process.sentinel

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def gpu_index(self) -> int | None:
        return self._gpu_index

    @property
    def running(self) -> bool:
        """Its process has not been reaped yet."""
        return self._process.exitcode is None

    @property
    def placed_at(self) -> float:
        return self._started_at

    def kill(self) -> None:
        """SIGKILL the worker's whole process group, so its ffmpeg children die with it."""
        kill_group(self.pid)

    def wait_exit(self) -> WorkerExit:
        self._process.join(timeout=5)
        kill_group(self.pid)  # ffmpeg children left behind by a crashed worker
        return WorkerExit(ExitKind.EXITED, self._process.exitcode, read_outcome(self._work_dir))


class LocalBackend(ExecutionBackend):
    name = "local"

    def __init__(self, config: Config) -> None:
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        # The workers this backend started whose process may still hold GPU memory (pruned at each admission).
        self.launched: list[LocalWorker] = []

    def start(self, wake: Callable[[], None]) -> None:
        """Nothing to prepare: each launch spawns its process."""

    def manager_address(self) -> str | None:
        """The Manager's socket, in <data_dir>/run: left to itself, multiprocessing puts it in a /tmp/pymp-* folder
        that every app killed with SIGKILL leaves behind. A socket left by a dead Manager is removed first (the
        supervisor holds the data folder's lock, so its owner is gone)."""
        socket_path = self.config.paths.data_dir.resolve() / "run" / "status-manager.sock"
        socket_path.unlink(missing_ok=True)
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            logger.info("{} is too long for a socket path; the status Manager listens in the system's temp folder",
                        socket_path)
            return None
        return str(socket_path)

    def demand(self, engine: type[Engine]) -> Demand:
        # CPUs are not counted here: supervisor.max_workers is this machine's only cap on them.
        return Demand(cpus=0.0, gpus=0.0, gpu_memory_gb=engine.gpu_memory_gb)

    def room(self, demand: Demand) -> Admission:
        """NVML's free memory, less what workers still loading (WorkerHandle.loading) will take."""
        self.launched = [worker for worker in self.launched if worker.running]
        pending: dict[int, float] = {}
        for worker in self.launched:
            if worker.loading and worker.gpu_index is not None:
                pending[worker.gpu_index] = pending.get(worker.gpu_index, 0.0) + worker.demand.gpu_memory_gb
        need_gb = demand.gpu_memory_gb
        return admit(need_gb, self.config.supervisor.gpu_reserve_gb, probe_gpus() if need_gb > 0 else [], pending)

    def launch(self, spec: WorkerSpec, demand: Demand, admission: Admission) -> LocalWorker:
        spec = dataclasses.replace(spec, gpu_index=admission.gpu_index)
        process = self._context.Process(target=run_worker, args=(spec,), name=f"heygem-worker-{spec.code}",
                                        daemon=True)
        process.start()
        worker = LocalWorker(spec, demand, process, time.time())
        self.launched.append(worker)
        return worker
