"""TaskSupervisor: one long-lived thread owns every worker, from admission to the final state."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing import connection
from pathlib import Path
from typing import Any

from loguru import logger

from heygem import __version__
from heygem.config import Config
from heygem.engines.registry import DEFAULT_ENGINE, accept_options, engine_availability, resolve_engine
from heygem.errors import (
    EngineUnavailableError,
    HeyGemError,
    InputError,
    QueueFullError,
    TaskNotFoundError,
)
from heygem.files import require_regular_file
from heygem.options import TaskOptions
from heygem.pipeline.media import probe_audio
from heygem.supervisor.admission import Admission, probe_gpus
from heygem.supervisor.backends import create_backend
from heygem.supervisor.backends.base import Demand, ExitKind, WorkerExit, WorkerHandle
from heygem.supervisor.lifecycle import Outcome, TaskLifecycle
from heygem.supervisor.ops import hold_data_dir
from heygem.supervisor.processes import describe_exit, kill_leftovers
from heygem.supervisor.protocol import LiveStatus
from heygem.supervisor.results import is_valid_video, remove_legacy_partials
from heygem.supervisor.retention import Retention
from heygem.supervisor.states import (
    Position,
    TaskRecord,
    TaskRequest,
    TaskState,
    WorkerNode,
    check_task_code,
    result_file,
    shared_result_file,
)
from heygem.supervisor.status_board import StatusBoard
from heygem.supervisor.store import TaskStore, TransitionError
from heygem.supervisor.task_files import TaskFiles
from heygem.supervisor.worker import WorkerSpec

# The cause in the message of a task that was active when the service stopped.
SERVICE_STOPPED = "the service stopped"
# Called with the task (still active) and its success before that is recorded; returns the outcome to record, a
# failure when the hook's own work failed (see TaskSupervisor.on_success).
SuccessHook = Callable[[TaskRecord, Outcome], Outcome]


def settled_options(record: TaskRecord, config: Config) -> TaskOptions:
    """The task's options as submit resolved them. A task queued by version 0.2 was stored with its options
    unresolved: resolving them now, as submit does, lets it run after the upgrade (a resolved task is unchanged)."""
    return record.options.resolve(config.option_defaults)


def speech_duration(audio_path: Path) -> float | None:
    """The audio's duration in seconds, measured once at submit for the task's deadline; None when the file cannot
    be read (the worker then reports what is wrong with it)."""
    try:
        return probe_audio(audio_path).duration
    except InputError:
        return None


@dataclasses.dataclass
class _Worker:
    code: str
    handle: WorkerHandle
    result_path: Path
    started_at: float
    deadline_s: float
    status: LiveStatus
    # When this app last saw the heartbeat change, by its own clock: a node's clock may differ from ours.
    beat_seen_at: float
    error_since: float | None = None
    # Set when the supervisor has decided the task's end (kill, cancel); the exit then only cleans up.
    decided: bool = False
    # The node recorded in the store (ray backend), so that it is recorded once.
    node: WorkerNode | None = None
    # The worker's latest (phase, stage, progress, error), and when this app saw it change: a worker that
    # runs but moves no further for supervisor.stall_s is stalled, however regular its heartbeat.
    work: tuple[str, str, float, int, str] | None = None
    work_seen_at: float = 0.0

    def position(self) -> Position:
        return Position(self.status["stage"], self.status["progress"])


class TaskSupervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._settings = config.supervisor
        self._context = multiprocessing.get_context("spawn")
        for folder in (config.paths.results_dir, config.paths.temp_dir, config.paths.logs_dir,
                       config.paths.data_dir / "run"):
            folder.mkdir(parents=True, exist_ok=True)
        self._data_lock = hold_data_dir(config)
        self._store = TaskStore(config.paths.db_path)
        self._tasks = TaskLifecycle(self._store)
        self._files = TaskFiles(config)
        self._success_hooks: list[SuccessHook] = []
        self._backend = create_backend(config)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._workers: dict[str, _Worker] = {}
        self._wake_reader, self._wake_writer = self._context.Pipe(duplex=False)
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._start_error: Exception | None = None
        self._thread: threading.Thread | None = None
        self._admit_again_at = float("inf")
        self._board = StatusBoard(self._backend, self._context, config.paths.data_dir / "run" / "status-manager.json")
        self._retention = Retention(self, config.storage.keep_days)

    # ----- public API -------------------------------------------------------------------------------

    def start(self) -> TaskSupervisor:
        remove_legacy_partials(self.config.paths.results_dir)
        self._recover_interrupted()
        self._backend.start(self._wake)
        self._thread = threading.Thread(target=self._run, name="task-supervisor", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the task supervisor did not start within 60 s")
        if self._start_error is not None:
            raise RuntimeError(f"the task supervisor could not start its status Manager process "
                               f"({type(self._start_error).__name__}: {self._start_error}); spawned processes "
                               "need the main program to be a file, not standard input") from self._start_error
        atexit.register(self.shutdown)
        self._retention.start()
        logger.info("task supervisor started: {} backend, max_workers={}, data in {}", self._backend.name,
                    self._settings.max_workers, self.config.paths.data_dir)
        return self

    def on_success(self, hook: SuccessHook) -> None:
        """Run `hook` on each success before it is recorded (as RQ's on_success, huey's signals): what must be in
        place when a client hears "done" (HeyGem API's copy for its desktop client, heygem.api.shared_result)."""
        self._success_hooks.append(hook)

    def submit(self, request: TaskRequest) -> str:
        code = check_task_code(request.code or uuid.uuid4().hex)
        engine = request.engine or DEFAULT_ENGINE
        audio_path, video_path = Path(request.audio_path).resolve(), Path(request.video_path).resolve()
        for kind, path in (("audio", audio_path), ("video", video_path)):
            require_regular_file(path, f"{kind} file", str(path))
        # The one place a task's options are settled: what the engine does not take is refused, the rest resolved.
        options = accept_options(engine, request.options).resolve(self.config.option_defaults)
        availability = engine_availability(engine, self.config)
        if not availability.available:
            raise InputError(f"engine {engine!r} is unavailable: {availability.reason}")
        audio_duration_s = speech_duration(audio_path)
        with self._lock:
            if self._store.exists(code):
                raise InputError(f"a task with code {code!r} already exists")
            self._ensure_queue_room()
            shared = shared_result_file(self.config, code) if request.shared_result else None
            if shared is not None and os.path.lexists(shared):
                raise InputError(f"code {code!r} cannot be used: {shared} already exists in the shared folder, where "
                                 "this task's result would go; choose another code (a UUID works)")
            self._tasks.queue(code, engine, str(audio_path), str(video_path), options,
                              str(result_file(self.config, code)), str(shared) if shared else None, audio_duration_s)
        logger.info("task {} queued (engine {})", code, engine)
        self._wake()
        return code

    def status(self, code: str) -> TaskRecord:
        """The task as the store has it: the one truth every reader (API, studio, CLI) sees, never merged with
        the workers' live statuses, which the supervisor records there at each poll."""
        return self._store.require(code)

    def list_tasks(self, limit: int | None = None) -> list[TaskRecord]:
        return self._store.newest(limit)

    def cancel(self, code: str) -> TaskRecord:
        with self._lock:
            worker = self._workers.get(code)
            if worker is None:
                self._ended(self._tasks.cancel(code))
            else:
                self._record_latest(worker)
                self._ended(self._tasks.cancel(code, worker.position()))
                self._stop(worker)
        self._wake()
        return self.status(code)

    def retry(self, code: str) -> TaskRecord:
        with self._lock:
            self._ensure_queue_room()
            ended = self._store.require(code)
            self._tasks.retry(code)
            self._files.remove_results(ended)
        self._wake()
        return self.status(code)

    def delete(self, code: str) -> None:
        with self._lock:
            record = self._store.require(code)
            if not record.state.is_final:
                with contextlib.suppress(InputError):  # it ended meanwhile
                    self.cancel(code)
                record = self._store.require(code)  # how it ended decides whether the shared copy is ours
            self._store.delete(code)
        self._files.remove_task(record)
        logger.info("task {} deleted with its files", code)

    def wait(self, code: str, timeout_s: float) -> TaskRecord:
        """Block until the task ends or `timeout_s` passes; returns the record either way."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                record = self.status(code)
                remaining = deadline - time.monotonic()
                if record.state.is_final or remaining <= 0:
                    return record
                # Short waits: a safety net for a store written by another program, which notifies no one.
                self._changed.wait(min(0.5, remaining))

    def system_info(self) -> dict[str, Any]:
        """This machine's GPUs (local backend) or the cluster's nodes (ray backend), workers and queue."""
        nodes = self._backend.cluster()
        gpus = probe_gpus() if not nodes else []
        with self._lock:
            busy = len(self._workers)
        counts = self._store.count_by_state()
        if nodes:
            alive = [node for node in nodes if node.alive]
            device = (f"Ray cluster: {len(alive)} nodes alive, {sum(node.cpus for node in alive):g} CPUs, "
                      f"{sum(node.gpus for node in alive):g} GPUs")
        else:
            device = ", ".join(gpu.name for gpu in gpus) if gpus else "CPU only"
        return {
            "backend": self._backend.name,
            "device": device,
            "gpus": [dataclasses.asdict(gpu) for gpu in gpus],
            "nodes": [dataclasses.asdict(node) for node in nodes],
            "workers_busy": busy,
            "max_workers": self._settings.max_workers,
            "queue_length": counts[TaskState.QUEUED],
            "tasks_by_state": {state.value: count for state, count in counts.items()},
            "version": __version__,
        }

    def shutdown(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._retention.stop()
        if self._thread is not None:
            self._wake()
            self._thread.join(timeout=30)
            logger.info("task supervisor stopped")
        self._data_lock.close()

    # ----- the supervisor thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._board.start()
        except Exception as exc:  # start() reports it at once instead of waiting for a ready signal
            self._start_error = exc
            return
        finally:
            self._ready.set()
        next_poll = 0.0
        try:
            while not self._stopping.is_set():
                with self._lock:
                    sentinels = {worker.handle.sentinel: worker for worker in self._workers.values()}
                timeout = max(0.0, min(next_poll, self._admit_again_at) - time.monotonic())
                ready = connection.wait([*sentinels, self._wake_reader], timeout)
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
                if self._stopping.is_set():
                    break
                try:
                    with self._lock:
                        for sentinel in ready:
                            if sentinel in sentinels:
                                self._reap(sentinels[sentinel])
                        self._record_nodes()
                        self._cancel_asked()
                        if time.monotonic() >= next_poll:
                            self._poll()
                            next_poll = time.monotonic() + self._settings.poll_interval_s
                        self._admit()
                except Exception:  # the loop must outlive any single bad task
                    logger.exception("supervisor iteration failed; continuing")
        finally:
            self._stop_everything()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send_bytes(b"!")

    def _record_latest(self, worker: _Worker) -> None:
        """Store the worker's latest live status before a decision about it, so that the record and the message
        name where it really was."""
        worker.status = self._board.latest(worker.code, worker.status)
        with contextlib.suppress(TransitionError, TaskNotFoundError):  # ended meanwhile: that end stands
            self._tasks.report(worker.code, worker.status)

    def _poll(self) -> None:
        statuses = self._board.read({code: worker.status for code, worker in self._workers.items()})
        now = time.time()
        for worker in list(self._workers.values()):
            if worker.decided:
                continue
            status = statuses.get(worker.code, worker.status)
            if status["heartbeat"] != worker.status["heartbeat"]:
                worker.beat_seen_at = now
            worker.status = status
            worker.handle.loading = status["phase"] == "init"
            self._judge(worker, now)

    def _cancel_asked(self) -> None:
        """Cancels another process asked for (`heygem tasks cancel`), carried out as the API's own cancel."""
        for code in self._store.cancels_asked():
            with contextlib.suppress(InputError, TaskNotFoundError):  # ended or deleted meanwhile: that end stands
                self.cancel(code)

    def _record_nodes(self) -> None:
        """Store the node of each worker the cluster has placed since the last look (ray backend)."""
        for worker in self._workers.values():
            node = worker.handle.node
            if node is not None and node != worker.node and not worker.decided:
                worker.node = node
                with contextlib.suppress(TransitionError, TaskNotFoundError):  # ended meanwhile: that end stands
                    self._tasks.place(worker.code, node)
                logger.info("task {} runs on {}", worker.code, node)

    def _judge(self, worker: _Worker, now: float) -> None:
        """Apply deadlines and the error-confirmation window to one live worker."""
        settings, status = self._settings, worker.status
        elapsed = now - worker.started_at
        placed_at = worker.handle.placed_at
        if elapsed > worker.deadline_s:
            self._end_worker(worker, self._failed(
                worker, f"timed out after {worker.deadline_s:.0f} s in {worker.position()}"))
            return
        # A worker that waits for a cluster node has no heartbeat yet; the init grace period covers that wait.
        silent_for = 0.0 if placed_at is None else now - max(worker.beat_seen_at, placed_at,
                                                            self._board.started_at)
        if silent_for > settings.heartbeat_timeout_s:
            self._end_worker(worker, self._failed(
                worker, f"no heartbeat for {silent_for:.0f} s (worker frozen) in {worker.position()}"))
            return
        if status["phase"] == "init" and elapsed > settings.init_grace_s:
            cause = f": {status['error']}" if status["error"] else ""
            self._end_worker(worker, self._failed(worker, f"initialisation did not finish within "
                                                  f"{settings.init_grace_s:.0f} s (stage {status['stage']}){cause}"))
            return
        work = (status["phase"], status["stage"], status["progress"], status["moves"], status["error"])
        if work != worker.work:
            worker.work, worker.work_seen_at = work, now
        elif status["phase"] == "run" and not status["error"] and now - worker.work_seen_at > settings.stall_s:
            # A stopped encoder blocks the worker's next frame while its heartbeat thread beats on.
            self._end_worker(worker, self._failed_unless_result(
                worker, f"stalled: no progress for {now - worker.work_seen_at:.0f} s in {worker.position()} "
                        f"(supervisor.stall_s is {settings.stall_s:g} s); the worker and its processes were killed"))
            return
        if status["error"]:
            worker.error_since = worker.error_since or now
            # Errors during the init grace period only start counting once it is over.
            confirm_from = max(worker.error_since, worker.started_at + settings.init_grace_s)
            if now - confirm_from >= settings.error_confirm_s:
                self._end_worker(worker, self._failed_unless_result(
                    worker, f"{status['stage']}: {status['error']} (reported for "
                            f"{now - worker.error_since:.0f} s without recovery)"))
                return
        else:
            worker.error_since = None
        try:
            self._tasks.report(worker.code, status)
        except TransitionError as exc:  # ended meanwhile (a store edited by hand, an older ops CLI)
            logger.info("{}; stopping its worker", exc)
            self._stop(worker)

    def _admit(self) -> None:
        while len(self._workers) < self._settings.max_workers and not self._stopping.is_set():
            queued = self._store.queued_codes()
            if not queued:
                return
            record = self._store.require(queued[0])
            try:
                demand = self._backend.demand(resolve_engine(record.engine))
            except EngineUnavailableError as exc:
                self._finish(record.code, Outcome.failed(f"init: {exc}"))
                continue
            decision = self._backend.room(demand)
            self._admit_again_at = time.monotonic() + decision.retry_s if decision.retry_s else float("inf")
            if not decision.admitted:
                if record.message != decision.reason:
                    self._tasks.hold(record.code, decision.reason)
                return
            self._launch(record, demand, decision)

    def _launch(self, record: TaskRecord, demand: Demand, admission: Admission) -> None:
        work_dir, stream = self._files.prepare_attempt(record.code)
        result_path = Path(record.result_path or result_file(self.config, record.code))
        spec = WorkerSpec(code=record.code, engine=record.engine, audio_path=record.audio_path,
                          video_path=record.video_path, result_path=str(result_path), work_dir=str(work_dir),
                          options=settled_options(record, self.config), config=self.config.to_dict(),
                          address_file=str(self._board.address_file), gpu_index=None,
                          live_dir=str(stream.folder) if self.config.live.enabled else None)
        try:
            handle = self._backend.launch(spec, demand, admission)
        except (OSError, HeyGemError) as exc:  # out of processes or memory: fail it rather than retry it forever
            self._finish(record.code, Outcome.failed(f"init: could not start a worker: {exc}"))
            return
        started = self._tasks.start(record.code, handle.pid)
        assert started.started_at is not None
        status: LiveStatus = {"phase": "init", "stage": self._backend.launch_stage, "progress": 0.0, "error": "",
                              "warning": "", "heartbeat": started.started_at, "pid": handle.pid or 0,
                              "moves": 0}
        self._workers[record.code] = _Worker(code=record.code, handle=handle, result_path=result_path,
                                             started_at=started.started_at, deadline_s=self.deadline_s(record),
                                             status=status, beat_seen_at=started.started_at,
                                             work_seen_at=started.started_at)
        logger.info("task {} started: worker {}, {} (gpu {})", record.code, handle.pid or "on the cluster", demand,
                    handle.gpu_index)

    def deadline_s(self, record: TaskRecord) -> float:
        """Seconds a task may run from its worker's start: task_timeout_s, or longer for long audio (its duration
        as measured at submit)."""
        return max(self._settings.task_timeout_s, self._settings.timeout_per_media_s * (record.audio_duration_s or 0.0))

    def _stop(self, worker: _Worker) -> None:
        """Kill a live worker and all it started; its task's end is decided, so its exit only cleans up."""
        worker.handle.kill()
        worker.decided = True

    def _end_worker(self, worker: _Worker, outcome: Outcome) -> None:
        self._stop(worker)
        self._finish(worker.code, outcome)

    def _failed(self, worker: _Worker, message: str) -> Outcome:
        return Outcome.failed(message, warning=worker.status["warning"])

    def _failed_unless_result(self, worker: _Worker, message: str) -> Outcome:
        """A failure, unless the worker already wrote a valid result video: then a success that says what failed."""
        return Outcome.result_kept(message) if is_valid_video(worker.result_path) else self._failed(worker, message)

    def _reap(self, worker: _Worker) -> None:
        """A worker ended: final at once, from its outcome, its last status, its exit code, or its node's loss."""
        ended = worker.handle.wait_exit()
        del self._workers[worker.code]
        if not worker.decided:
            self._record_latest(worker)  # where it ended, for the final record
            if ended.kind is ExitKind.NODE_LOST and not is_valid_video(worker.result_path):
                self._interrupted(worker, ended.detail)
            else:
                self._finish(worker.code, self._exit_outcome(worker, ended))
        self._board.forget(worker.code)
        self._files.worker_ended(worker.code, self._store.get(worker.code))

    def _exit_outcome(self, worker: _Worker, ended: WorkerExit) -> Outcome:
        outcome, exitcode = ended.outcome, ended.exitcode
        if ended.kind is not ExitKind.EXITED:
            message = f"{ended.detail} during {worker.position()}"
        elif outcome is not None and outcome["ok"] and exitcode == 0:
            if worker.result_path.is_file():
                return Outcome.succeeded(outcome["report"], warning=worker.status["warning"])
            message = f"worker reported success but wrote no result file ({worker.result_path})"
        elif outcome is not None and not outcome["ok"]:
            message = outcome["message"]
        elif exitcode == 0:
            message = f"worker exited without reporting a result during {worker.position()}"
        else:
            message = describe_exit(exitcode, str(worker.position()))
        return self._failed_unless_result(worker, message)

    def _finish(self, code: str, outcome: Outcome) -> None:
        outcome = self._after_success(code, outcome)
        try:
            record = self._tasks.finish(code, outcome)
        except (TransitionError, TaskNotFoundError) as exc:
            # Lost a race: cancelled from the ops CLI, or deleted, while the supervisor was deciding. That end stands.
            detail = outcome.message or outcome.warning
            logger.warning("task {}: outcome {} not recorded: {}{}", code, outcome.state.value, exc,
                           f" (it said: {detail})" if detail else "")
            return
        self._ended(record)

    def _after_success(self, code: str, outcome: Outcome) -> Outcome:
        """A success passes through the hooks registered with on_success before it is recorded."""
        record = self._store.get(code)
        if outcome.state is not TaskState.SUCCEEDED or record is None:
            return outcome
        for hook in self._success_hooks:
            try:
                outcome = hook(record, outcome)
            except Exception as exc:  # a hook's bug must not leave the task active forever
                logger.exception("task {}: success hook {} failed", code, getattr(hook, "__name__", hook))
                outcome = Outcome.failed(f"finishing: {type(exc).__name__}: {exc}", warning=outcome.warning)
            if outcome.state is not TaskState.SUCCEEDED:
                break
        return outcome

    def _ended(self, record: TaskRecord) -> None:
        log = logger.warning if record.state is TaskState.FAILED else logger.info
        log("task {} {}{}", record.code, record.state.value, f": {record.message}" if record.message else "")
        self._changed.notify_all()

    def _ensure_queue_room(self) -> None:
        waiting = len(self._store.queued_codes())
        if waiting >= self._settings.queue_max:
            raise QueueFullError(f"queue full: {waiting} tasks are waiting (queue_max {self._settings.queue_max}); "
                                 "try again when one has started")

    def _recover_interrupted(self) -> None:
        """Tasks that were active when the service stopped: requeued once, or failed with the reason.

        A task of the ray backend records no local pid: Ray ended its worker on the node with the app.
        """
        for code in self._store.codes_in(TaskState.INITIALIZING, TaskState.RUNNING):
            record = self._store.require(code)
            if record.worker_pid:
                kill_leftovers(record.worker_pid, code)
            self._requeue_or_fail(record, SERVICE_STOPPED)
            self._files.interrupted(code)

    def _interrupted(self, worker: _Worker, cause: str) -> None:
        """A live worker was lost with its machine: as if the service had stopped, at the worker's latest stage."""
        try:
            record = self._requeue_or_fail(self._store.require(worker.code), cause)
        except (TransitionError, TaskNotFoundError) as exc:  # ended meanwhile: that end stands
            logger.warning("task {}: its worker's loss ({}) not recorded: {}", worker.code, cause, exc)
            return
        self._ended(record)

    def _requeue_or_fail(self, record: TaskRecord, cause: str) -> TaskRecord:
        if self._settings.requeue_interrupted and record.attempts < 2:
            return self._tasks.requeue(record.code, cause)
        return self._tasks.interrupt(record.code, cause)

    def _stop_everything(self) -> None:
        with self._lock:
            for worker in self._workers.values():
                if not worker.decided:  # the stage an interrupted task's message names is its worker's last
                    self._record_latest(worker)
                worker.handle.kill()
            for worker in self._workers.values():
                worker.handle.wait_exit()
            self._workers.clear()
            self._recover_interrupted()
            self._board.shutdown()
            self._backend.shutdown()
            self._changed.notify_all()
