"""The ray backend, head side: the app is a Ray driver that places one Ray task per HeyGem task on the cluster.

Admission counts the cluster's free CPUs and GPU shares itself (Ray's own view lags a fraction of a second
behind a placement, and a task Ray cannot place yet would wait inside Ray, invisible to the queue), then pins
the task to the chosen node. Each task's stream (ray_node.run_on_node) is read by one thread here: it
records the node, appends the task log, writes the result into the task's temp folder and renames it onto
<data_dir>/results/ when complete, and fires the handle's sentinel when the stream ends. Live status travels
as with the local backend, through the status Manager, which listens on TCP for the nodes' workers.

`ray` is imported only inside start() and later: its authentication settings are read once, at its first
import, so they must be in the environment by then (export_auth).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from loguru import logger

from heygem.config import PROJECT_ROOT, Config, RayConfig
from heygem.engines.models import models_dir
from heygem.errors import ConfigError, HeyGemError, one_line
from heygem.files import require_regular_file
from heygem.hooks import PrivateHook, require_hooks
from heygem.logs import task_log_path
from heygem.pipeline.engine import Engine
from heygem.pipeline.live import LiveStream
from heygem.supervisor.admission import Admission
from heygem.supervisor.backends.base import (
    MAX_SOCKET_PATH,
    Demand,
    ExecutionBackend,
    ExitKind,
    NodeView,
    WorkerExit,
    WorkerHandle,
)
from heygem.supervisor.backends.ray_node import (
    END,
    LIVE,
    LOG,
    NODE,
    RESULT,
    RESULT_END,
    FileServer,
    NodeTask,
    run_on_node,
)
from heygem.supervisor.states import WorkerNode
from heygem.supervisor.worker import WorkerSpec

GIB = 1024**3
# Ray offers no public call for each node's free resources now (ray.available_resources() sums the cluster).
RAY_STATE_HOOK = PrivateHook("ray", "ray._private.state", "", ("available_resources_per_node",),
                             "heygem/supervisor/backends/ray_head.py", "requirements-ray.txt")
# What Ray appends to its temp folder for a socket: /session_<date>_<time>_<µs>_<pid>/sockets/plasma_store.
RAY_SOCKET_SUFFIX = len("/session_2026-11-30_11-39-12_123456_4194304/sockets/plasma_store")
# Never shipped to the nodes, on top of what Ray leaves out itself (.git, .venv) and .gitignore, which it honours.
SHIP_EXCLUDES = ["data", "docs", "bench/results", "*.onnx", "*.pth", "__pycache__", ".pytest_cache", ".ruff_cache",
                 ".mypy_cache"]
# Result pieces a node may stream ahead of the head's writing (8 MB each): bounds the object stores' load.
STREAM_AHEAD = 4
# Seconds to wait for a task's stream to close once it ended, or was killed.
JOIN_TIMEOUT_S = 10
# Seconds the head named by ray.address has to accept a connection before the start is refused.
HEAD_CONNECT_TIMEOUT_S = 5
# Ray's view of a node's free resources lags the end of a task by a few tens of milliseconds (measured 22 ms):
# for this long after one of ours ended, a refused admission asks again this soon instead of at the next poll.
RELEASE_LAG_S = 2.0
RECHECK_S = 0.05
# Tolerance when comparing fractional resources (Ray keeps four decimals).
EPSILON = 1e-6


def export_auth(settings: RayConfig) -> None:
    """Put Ray's authentication mode in the environment; before the first `import ray`, which reads it once."""
    if settings.auth_token_file is not None:
        require_regular_file(settings.auth_token_file, "ray.auth_token_file", str(settings.auth_token_file))
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(settings.auth_token_file)
    else:
        # Left unset, a private runtime would turn token authentication on and write ~/.ray/auth_token, which
        # from then on changes what every `ray start --head` on this machine does.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def gpu_share(need_gb: float, settings: RayConfig, reserve_gb: float) -> float:
    """The fraction of one GPU a task declaring `need_gb` takes: ray.gpu_memory_gb in configs/default.yaml."""
    if settings.gpu_memory_gb <= 0:
        return 1.0
    return min(1.0, math.ceil(100 * need_gb / (settings.gpu_memory_gb - reserve_gb) - EPSILON) / 100)


class RayWorker(WorkerHandle):
    """One task on the cluster; a thread drains its stream and fires the sentinel when the stream ends."""

    def __init__(self, spec: WorkerSpec, demand: Demand, target: str, stream: Any, log_path: Path,
                 wake: Callable[[], None], ended: Callable[[RayWorker, WorkerExit], None]) -> None:
        super().__init__(spec.code, demand)
        self.target = target  # the node admission chose; Ray may still place it elsewhere (soft pinning)
        self._stream = stream
        self._result_path = Path(spec.result_path)
        self._partial = Path(spec.work_dir) / f"{self._result_path.stem}.partial{self._result_path.suffix}"
        self._log_path = log_path
        # The head's copy of the task's live stream (heygem.pipeline.live), which its API serves.
        self._live = LiveStream(Path(spec.live_dir)) if spec.live_dir else None
        self._wake = wake
        self._ended = ended
        self._node: WorkerNode | None = None
        self._placed_at: float | None = None
        self._end: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._result: IO[bytes] | None = None
        # Held while a file of the task is written, and by kill(): once kill() returns, nothing more lands in
        # results/ or the task log (a deleted task's files stay deleted).
        self._lock = threading.Lock()
        self._killed = False
        self._read_fd, self._write_fd = os.pipe()
        self._thread = threading.Thread(target=self._drain, name=f"ray-task-{spec.code}", daemon=True)
        self._thread.start()

    @property
    def sentinel(self) -> int:
        return self._read_fd

    @property
    def node(self) -> WorkerNode | None:
        return self._node

    @property
    def placed_at(self) -> float | None:
        return self._placed_at

    def kill(self) -> None:
        """Force-cancel the Ray task: Ray kills its worker process, and the node's guard then our worker."""
        import ray

        with self._lock:
            self._killed = True
        with contextlib.suppress(Exception):  # it may have ended already
            ray.cancel(self._stream, force=True)

    def wait_exit(self) -> WorkerExit:
        self._thread.join(JOIN_TIMEOUT_S)
        with contextlib.suppress(OSError):
            os.close(self._read_fd)
        if self._end is not None:
            ended = WorkerExit(ExitKind.EXITED, self._end["exitcode"], self._end["outcome"])
        else:
            ended = self._describe(self._error)
        self._ended(self, ended)
        return ended

    def _describe(self, error: BaseException | None) -> WorkerExit:
        import ray

        where = str(self._node) if self._node else "its worker node"
        if isinstance(error, ray.exceptions.NodeDiedError):
            return WorkerExit(ExitKind.NODE_LOST, detail=f"{where} lost")
        if isinstance(error, ray.exceptions.RayTaskError):
            cause = error.cause if isinstance(error.cause, BaseException) else error
            return WorkerExit(ExitKind.RUNNER_DIED, detail=f"the task's Ray side on {where} failed "
                                                           f"({type(cause).__name__}: {_first_line(cause)})")
        if error is None:
            return WorkerExit(ExitKind.RUNNER_DIED, detail=f"its stream from {where} ended without a word")
        if isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)):
            detail = f"the Ray worker process running it on {where} died ({type(error).__name__})"
        elif isinstance(error, ray.exceptions.RayError):  # its runtime environment failed on the node, say
            detail = f"Ray ended it on {where} ({type(error).__name__}: {_first_line(error)})"
        else:
            detail = f"this server could not take what {where} sent back ({type(error).__name__}: " \
                     f"{_first_line(error)})"
        return WorkerExit(ExitKind.RUNNER_DIED, detail=detail)

    def _drain(self) -> None:
        import ray

        try:
            for item in self._stream:
                kind, value = ray.get(item)
                self._take(kind, value)
                if kind == END:  # the last word: the supervisor need not wait for Ray to close the stream
                    break
        except ray.exceptions.RayError as exc:
            self._error = exc
        except Exception as exc:  # a full disk on the head, say: the task ends, and the log says why
            logger.exception("task {}: reading its stream from the cluster failed", self.code)
            self._error = exc
        finally:
            if self._result is not None:
                self._result.close()
                self._partial.unlink(missing_ok=True)
            os.close(self._write_fd)  # the sentinel fires: end of file on the read end

    def _take(self, kind: str, value: Any) -> None:
        if kind == NODE:
            self._node = WorkerNode(value["id"], value["address"])
            self._placed_at = time.time()
            self._wake()
            return
        if kind == END:
            self._end = value
            return
        with self._lock:
            if self._killed:
                return
            if kind == LOG:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                with self._log_path.open("ab") as log:
                    log.write(value)
            elif kind == LIVE and self._live is not None:
                self._live.put(*value)
            elif kind in (RESULT, RESULT_END):
                if self._result is None:
                    self._result = self._partial.open("wb")
                if kind == RESULT:
                    self._result.write(value)
                else:
                    self._result.close()
                    self._result = None
                    os.replace(self._partial, self._result_path)


class RayBackend(ExecutionBackend):
    name = "ray"
    launch_stage = "waiting for a Ray node"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.ray
        reserve_gb = config.supervisor.gpu_reserve_gb
        if 0 < self.settings.gpu_memory_gb <= reserve_gb:
            raise ConfigError(f"ray.gpu_memory_gb ({self.settings.gpu_memory_gb:g}) must be 0 or more than "
                              f"supervisor.gpu_reserve_gb ({reserve_gb:g}), which every GPU keeps free")
        self._workers: dict[str, RayWorker] = {}
        self._lost_nodes: set[str] = set()  # Ray lists a dead node as alive for seconds after its loss
        self._last_end = 0.0  # time.monotonic() when a task of ours last ended
        self._authkey = secrets.token_bytes(32)
        self._manager_port = self.settings.status_port
        self._status_host = self.settings.status_host
        self._own_temp_dir: Path | None = None
        self._head_node = ""
        self._wake: Callable[[], None] = lambda: None
        self._files: Any = None
        self._remote_task: Any = None

    # ----- start and stop ---------------------------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        if self.settings.ship_code and not (PROJECT_ROOT / "pyproject.toml").is_file():
            # An installed heygem lives among all other packages: Ray would upload the whole site-packages folder.
            raise ConfigError("ray.ship_code sends this checkout's code to the nodes, but heygem here is an installed "
                              "package: set ray.ship_code to false and install the same heygem on every node")
        export_auth(self.settings)
        try:
            import ray
        except ImportError:
            raise HeyGemError("supervisor.backend is ray, but Ray is not installed: "
                              "pip install -r requirements-ray.txt") from None
        require_hooks(RAY_STATE_HOOK)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._wake = wake
        address = self.settings.address
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
        if self.settings.ship_code:
            options["runtime_env"] = {"working_dir": str(PROJECT_ROOT), "excludes": self._ship_excludes()}
        if address:
            _require_head_answers(self.settings)
            options["address"] = address
        else:  # "local": a new runtime of our own, never one that `ray start` left running on this machine
            options.update(address="local", object_store_memory=self.settings.object_store_mb * 1024 * 1024,
                           _temp_dir=str(self._private_temp_dir()))
        try:
            with _keeping_sigterm():
                ray.init(**options)
        except Exception as exc:
            where = f"the Ray cluster at {address}" if address else "a private Ray runtime"
            raise HeyGemError(f"could not start the ray backend with {where}: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
        self._head_node = ray.get_runtime_context().get_node_id()
        self._status_host = self._status_host or ray.util.get_node_ip_address()
        pinned = NodeAffinitySchedulingStrategy(self._head_node, soft=False)
        self._files = ray.remote(FileServer).options(num_cpus=0, max_restarts=-1,
                                                     scheduling_strategy=pinned).remote()
        try:  # up before the first task: its launch would otherwise wait for the actor's process to start
            ray.get(self._files.offer.remote({}), timeout=120)
        except Exception as exc:
            raise HeyGemError(f"the ray backend's file server did not start on this node: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
        # max_retries=0: Ray would otherwise rerun a task whose node died elsewhere, behind the supervisor's back.
        self._remote_task = ray.remote(max_retries=0)(run_on_node)
        logger.info("ray backend started: {}, {} nodes alive", address or "private runtime",
                    sum(node.alive for node in self.cluster()))

    def _ship_excludes(self) -> list[str]:
        excludes = list(SHIP_EXCLUDES)
        data_dir = self.config.paths.data_dir.resolve()
        if data_dir.is_relative_to(PROJECT_ROOT):
            excludes.append(str(data_dir.relative_to(PROJECT_ROOT)))
        return excludes

    def _private_temp_dir(self) -> Path:
        wanted = (self.settings.temp_dir or self.config.paths.data_dir / "run" / "ray").resolve()
        if len(os.fsencode(wanted)) + RAY_SOCKET_SUFFIX <= MAX_SOCKET_PATH:
            wanted.mkdir(parents=True, exist_ok=True)
            return wanted
        self._own_temp_dir = Path(tempfile.mkdtemp(prefix="heygem-ray-"))
        logger.info("{} is too long for Ray's socket paths; its private runtime keeps its files in {}", wanted,
                    self._own_temp_dir)
        return self._own_temp_dir

    def shutdown(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()
        if self._own_temp_dir is not None:
            shutil.rmtree(self._own_temp_dir, ignore_errors=True)

    # ----- the status Manager -----------------------------------------------------------------------

    def manager_address(self) -> tuple[str, int]:
        return self._status_host, self._manager_port

    def manager_started(self, address: Any) -> None:
        # A restarted Manager listens on the same port: the nodes' workers have its address already.
        self._manager_port = int(address[1])

    def manager_authkey(self) -> bytes:
        return self._authkey

    # ----- admission --------------------------------------------------------------------------------

    def demand(self, engine: type[Engine]) -> Demand:
        need = engine.gpu_memory_gb
        if need > 0 and any(node.alive and node.gpus > 0 for node in self.cluster()):
            share = gpu_share(need, self.settings, self.config.supervisor.gpu_reserve_gb)
            return Demand(self.settings.gpu_task_cpus, share, need)
        # No GPU anywhere: a GPU engine runs on CPUs, as the local backend runs it on a machine without NVML.
        return Demand(self.settings.task_cpus, 0.0, need)

    def room(self, demand: Demand) -> Admission:
        """The node with the most room for `demand` now, from the cluster's totals less what our tasks hold and
        its free resources less what our tasks not placed yet will take; else why the task waits."""
        from ray._private import state as ray_state

        nodes = {node.id: node for node in self.cluster() if node.alive}
        available = ray_state.available_resources_per_node()
        free: dict[str, tuple[float, float]] = {}
        for node_id, node in nodes.items():
            ours = [worker for worker in list(self._workers.values())
                    if (worker.node.id if worker.node else worker.target) == node_id]
            coming = [worker for worker in ours if worker.node is None]
            view = available.get(node_id, {})
            free[node_id] = (min(view.get("CPU", 0.0) - _total(coming, "cpus"), node.cpus - _total(ours, "cpus")),
                             min(view.get("GPU", 0.0) - _total(coming, "gpus"), node.gpus - _total(ours, "gpus")))
        fitting = [node_id for node_id, room in free.items() if _fits(demand, *room)]
        if fitting:
            best = max(fitting, key=lambda node_id: (free[node_id][1], free[node_id][0]))
            return Admission(True, node_id=best)
        if not any(_fits(demand, node.cpus, node.gpus) for node in nodes.values()):
            largest = max(nodes.values(), key=lambda node: (node.gpus, node.cpus), default=None)
            has = (f"the largest alive node has {largest.cpus:g} CPU and {largest.gpus:g} GPU" if largest
                   else "no node is alive")
            return Admission(False, reason=f"no node of the Ray cluster can run this task: it needs {demand}, and "
                                           f"{has}; it waits for a node that has (ray start --num-cpus/--num-gpus), "
                                           "or lower ray.task_cpus / ray.gpu_task_cpus")
        recent = time.monotonic() - self._last_end < RELEASE_LAG_S
        return Admission(False, reason=f"waiting for a Ray node with {demand} free",
                         retry_s=RECHECK_S if recent else None)

    # ----- launch -----------------------------------------------------------------------------------

    def launch(self, spec: WorkerSpec, demand: Demand, admission: Admission) -> RayWorker:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        assert admission.node_id is not None
        prefix = f"{spec.code}/{secrets.token_hex(8)}/"
        paths = {"audio": Path(spec.audio_path), "video": Path(spec.video_path)}
        try:
            sizes = ray.get(self._files.offer.remote({prefix + slot: str(path) for slot, path in paths.items()}),
                            timeout=60)
        except Exception as exc:
            raise HeyGemError(f"the head's file server did not take the inputs ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
        # The server's API token and password stay on the head: a worker never needs them.
        spec = dataclasses.replace(spec, config={**spec.config, "server": {**spec.config["server"], "api_token": None,
                                                                           "password": None}})
        task = NodeTask(spec=spec, inputs={slot: (prefix + slot, sizes[prefix + slot], path.suffix)
                                           for slot, path in paths.items()},
                        manager_address=self.manager_address(), manager_authkey=self._authkey,
                        models_dir=str(self.settings.models_dir or models_dir(self.config).resolve()))
        stream = self._remote_task.options(
            num_cpus=demand.cpus, num_gpus=demand.gpus,
            # Soft: if the node dies before Ray places the task, Ray may place it elsewhere rather than fail it.
            scheduling_strategy=NodeAffinitySchedulingStrategy(admission.node_id, soft=True),
            _generator_backpressure_num_objects=STREAM_AHEAD,
        ).remote(task, self._files)
        worker = RayWorker(spec, demand, admission.node_id, stream, task_log_path(self.config, spec.code),
                           self._wake, self._forget)
        self._workers[spec.code] = worker
        return worker

    def _forget(self, worker: RayWorker, ended: WorkerExit) -> None:
        if self._workers.get(worker.code) is worker:
            del self._workers[worker.code]
        if ended.kind is ExitKind.NODE_LOST and worker.node is not None:
            self._lost_nodes.add(worker.node.id)
        self._last_end = time.monotonic()
        with contextlib.suppress(Exception):
            self._files.withdraw.remote(f"{worker.code}/")

    # ----- the cluster ------------------------------------------------------------------------------

    def cluster(self) -> list[NodeView]:
        import ray
        from ray._private import state as ray_state

        available = ray_state.available_resources_per_node()
        tasks: dict[str, int] = {}
        for worker in list(self._workers.values()):
            if worker.node is not None:
                tasks[worker.node.id] = tasks.get(worker.node.id, 0) + 1
        views = []
        for node in ray.nodes():
            node_id, total = node["NodeID"], node["Resources"]
            free = available.get(node_id, {})
            alive = bool(node["Alive"]) and node_id not in self._lost_nodes
            views.append(NodeView(id=node_id, address=node["NodeManagerAddress"], alive=alive,
                                  head=node_id == self._head_node, cpus=total.get("CPU", 0.0),
                                  cpus_free=free.get("CPU", 0.0) if alive else 0.0, gpus=total.get("GPU", 0.0),
                                  gpus_free=free.get("GPU", 0.0) if alive else 0.0,
                                  memory_gb=round(total.get("memory", 0.0) / GIB, 1), tasks=tasks.get(node_id, 0)))
        return views


def _total(workers: Sequence[RayWorker], resource: str) -> float:
    return sum(getattr(worker.demand, resource) for worker in workers)


def _fits(demand: Demand, cpus: float, gpus: float) -> bool:
    return cpus + EPSILON >= demand.cpus and gpus + EPSILON >= demand.gpus


def _require_head_answers(settings: RayConfig) -> None:
    """A HeyGemError at once unless the head named by ray.address accepts a connection: ray.init() retries an
    address where nothing listens for many minutes, and the app cannot be stopped meanwhile."""
    if settings.address == "auto":  # Ray finds the head of this machine's cluster itself, or says at once there is none
        return
    host, port = settings.head_endpoint()
    try:
        socket.create_connection((host, port), timeout=HEAD_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise HeyGemError(f"could not start the ray backend: nothing answers at ray.address {settings.address} "
                          f"({exc.strerror or type(exc).__name__}). Start the cluster's head there first (`ray start "
                          "--head --num-cpus=0 --num-gpus=0 --port=6379`, docs/scale-out.md), or leave ray.address "
                          "empty for a private Ray runtime") from None


def _first_line(exc: BaseException) -> str:
    text = one_line(str(exc).split("\n\n")[0])
    return text[:300] if text else "no message"


@contextlib.contextmanager
def _keeping_sigterm() -> Any:
    """ray.init() in the main thread makes SIGTERM exit the process at once; the app (uvicorn) has its own
    handler that stops the supervisor first."""
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, handler)
