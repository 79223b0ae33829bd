"""The seam between the TaskSupervisor and where its workers run: this machine, or the nodes of a Ray cluster.

The supervisor keeps everything that makes a task's semantics: the queue and its order, the store and its
named transitions, deadlines, the error-confirmation window, the rescue of a valid result, every message,
the requeue rules and the live-status Manager. A backend only answers four questions: what a task of an
engine needs (`demand`), whether it may start now and where (`room`), how to start its worker (`launch`)
and what the machines look like (`cluster`). A started worker is a `WorkerHandle`: a file descriptor that
becomes readable when the worker has ended (it joins the process sentinels in the supervisor's wait), a
kill, and the facts of its end (`WorkerExit`).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable
from typing import Any, ClassVar

from heygem.pipeline.engine import Engine
from heygem.supervisor.admission import Admission
from heygem.supervisor.protocol import Outcome
from heygem.supervisor.states import WorkerNode
from heygem.supervisor.worker import WorkerSpec

# Linux's limit on a Unix socket's path, in bytes (108 with the terminating NUL): the status Manager's (local
# backend) and Ray's own sockets (a private runtime's temp folder) must fit.
MAX_SOCKET_PATH = 107
# A status Manager address: a Unix socket path (None: multiprocessing's own choice), or (host, port).
ManagerAddress = str | tuple[str, int] | None


@dataclasses.dataclass(frozen=True)
class Demand:
    """What one task of an engine needs, worked out once per admission from the engine class and the config."""

    cpus: float
    # A share of one GPU (ray backend); 0 for CPU engines and wherever the backend has no GPU to give.
    gpus: float
    # The engine's declared GPU memory: the local backend admits on NVML's free memory.
    gpu_memory_gb: float

    def __str__(self) -> str:
        parts = [f"{self.cpus:g} CPU" if self.cpus or not self.gpus else "", f"{self.gpus:g} GPU" if self.gpus else ""]
        return " and ".join(part for part in parts if part)


class ExitKind(enum.Enum):
    EXITED = "exited"  # our worker process ended: its exit status and outcome decide
    NODE_LOST = "node_lost"  # the machine it ran on left the cluster: an interruption, like a service stop
    RUNNER_DIED = "runner_died"  # what ran it on the node died (Ray's worker process crashed or was OOM-killed)


@dataclasses.dataclass(frozen=True)
class WorkerExit:
    kind: ExitKind
    # EXITED: the worker's exit status (negative: killed by that signal); None when nobody could observe it.
    exitcode: int | None = None
    # EXITED: the worker's outcome.json, wherever it was written.
    outcome: Outcome | None = None
    # NODE_LOST, RUNNER_DIED: what happened, as the start of a message ("worker node 10.0.0.7 (id …) lost").
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class NodeView:
    """One machine of the cluster, for /healthz, /metrics and the studio's System tab."""

    id: str
    address: str
    alive: bool
    head: bool  # the node the app itself is attached to
    cpus: float
    cpus_free: float
    gpus: float
    gpus_free: float
    # Ray's schedulable memory of the node (about 70 % of its RAM), not what is in use.
    memory_gb: float
    tasks: int  # this app's tasks running there


class WorkerHandle(abc.ABC):
    """One started worker, from launch until the supervisor has read its end."""

    def __init__(self, code: str, demand: Demand) -> None:
        self.code = code
        self.demand = demand
        # Still in its init phase (the supervisor keeps this current from the worker's live status): GPU memory
        # it is loading a model into may not show as used yet (the local backend's admission counts it).
        self.loading = True

    @property
    @abc.abstractmethod
    def sentinel(self) -> int:
        """A file descriptor that becomes readable once the worker has ended."""

    @property
    def pid(self) -> int | None:
        """The worker's process id on this machine, recorded in the store; None when it runs elsewhere."""
        return None

    @property
    def gpu_index(self) -> int | None:
        """The GPU of this machine the worker was admitted on (local backend)."""
        return None

    @property
    def node(self) -> WorkerNode | None:
        """The cluster node the worker runs on, once known; None for the local backend."""
        return None

    @property
    @abc.abstractmethod
    def placed_at(self) -> float | None:
        """When the worker started to run somewhere (time.time()); None while it waits for a node."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the worker and everything it started, now; its sentinel fires once that is done."""

    @abc.abstractmethod
    def wait_exit(self) -> WorkerExit:
        """The facts of the worker's end, after its sentinel fired; frees what the handle holds."""


class ExecutionBackend(abc.ABC):
    name: ClassVar[str]
    # The stage a task shows between its launch and the moment its worker reports for itself.
    launch_stage: ClassVar[str] = "init"

    @abc.abstractmethod
    def start(self, wake: Callable[[], None]) -> None:
        """Get ready to launch workers; `wake` wakes the supervisor's loop (e.g. when a worker got a node)."""

    @abc.abstractmethod
    def manager_address(self) -> ManagerAddress:
        """Where the live-status Manager listens so that workers reach it; asked at every (re)start of it."""

    def manager_started(self, address: Any) -> None:
        """The Manager listens at `address` (what multiprocessing made of manager_address())."""

    def manager_authkey(self) -> bytes | None:
        """The Manager's key, when the workers must be given it (they are not spawned by this app)."""
        return None

    @abc.abstractmethod
    def demand(self, engine: type[Engine]) -> Demand: ...

    @abc.abstractmethod
    def room(self, demand: Demand) -> Admission:
        """Whether a task of `demand` may start now, and where; else the reason it waits, for its message."""

    @abc.abstractmethod
    def launch(self, spec: WorkerSpec, demand: Demand, admission: Admission) -> WorkerHandle:
        """Start a worker for `spec` where `admission` says; raises OSError or HeyGemError when it cannot."""

    def cluster(self) -> list[NodeView]:
        """The cluster's machines; empty for the local backend, whose one machine system_info describes."""
        return []

    def shutdown(self) -> None:
        """After every worker has ended."""
