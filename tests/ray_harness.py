"""The cluster side of the Ray tests: one process inside a loopback-only namespace owns a real multi-node Ray
cluster and the head, a real TaskSupervisor on the ray backend or a real `python app.py`; pytest, outside the
namespace, calls its methods over a Unix socket (a path, which crosses network namespaces).

  python -m tests.ray_harness SOCKET AUTHKEY_HEX STATE_FOLDER WORKERS

WORKERS: the worker nodes' CPU counts, e.g. "1,1"; "0" starts no cluster (the app's private runtime).
Started by tests/test_supervisor_ray.py through tests.ray_cluster.namespace_command. It prints one line
{"ready": seconds} once the cluster is up, then answers calls {"call": name, "args": [...], "kwargs": {...}}
with {"value": ...} or {"error": traceback} until `stop`, which stops everything and reports what is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from loguru import logger

from tests.ray_cluster import (
    SHORT_ROOT,
    RayCluster,
    inside_namespace,
    marked,
    processes,
    ray_processes,
    task_workers,
)

# Seconds the harness waits for anything it is asked to wait for; callers pass less.
LONGEST_WAIT_S = 240


class Harness:
    """Every public method is a call pytest can make."""

    def __init__(self, root: Path, cluster: RayCluster | None) -> None:
        self.root = root
        self.cluster = cluster
        self.supervisor: Any = None
        self.app: Any = None
        self.inputs = root / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.log_lines: list[str] = []
        logger.add(lambda message: self.log_lines.append(str(message)), level="INFO")

    # ----- the cluster --------------------------------------------------------------------------------

    def nodes(self) -> dict[str, Any]:
        assert self.cluster is not None
        return {"head": self.cluster.head_id, "workers": [node for node in self.cluster.nodes
                                                          if node != self.cluster.head_id]}

    def kill_node(self, node_id: str) -> None:
        assert self.cluster is not None
        self.cluster.kill_node(node_id)

    def add_worker(self, cpus: float, gpus: float = 0) -> str:
        assert self.cluster is not None
        return self.cluster.add_worker({"cpus": cpus, "gpus": gpus})

    def task_processes(self, prefix: str) -> list[str]:
        """Processes of tasks whose code starts with `prefix`, on every node (they all share this namespace)."""
        return [command[:160] for _, command in marked(prefix)]

    def wait_no_task_processes(self, prefix: str, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + min(timeout_s, LONGEST_WAIT_S)
        while self.task_processes(prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.task_processes(prefix)

    def kill_worker(self, code: str) -> int:
        """SIGKILL heygem's worker process of a task on its node, and only it."""
        workers = task_workers(code)
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker of task {code}, found {workers}: {self.task_processes(code)}")
        os.kill(workers[0], signal.SIGKILL)
        return workers[0]

    def kill_ray_worker(self, code: str) -> int:
        """SIGKILL the Ray worker process that runs a task on its node (the guard's watched pid, its first argument),
        as Ray's out-of-memory killer or a crash would."""
        guards = [command for _, command in marked(code) if "heygem.supervisor.backends.node_guard" in command]
        if len(guards) != 1:
            raise RuntimeError(f"expected one guard of task {code}: {self.task_processes(code)}")
        ray_worker = int(guards[0].split("node_guard", 1)[1].split()[0])
        os.kill(ray_worker, signal.SIGKILL)
        return ray_worker

    def logged(self, text: str) -> list[str]:
        return [line.strip() for line in self.log_lines if text in line]

    # ----- a supervisor in this process -----------------------------------------------------------------

    def start_supervisor(self, supervisor: dict[str, Any], ray: dict[str, Any] | None = None) -> None:
        from heygem.config import load_config
        from heygem.supervisor import TaskSupervisor

        self.stop_supervisor()
        assert self.cluster is not None
        overrides = {"paths": {"data_dir": str(self.root / "head"), "input_dir": str(self.inputs)},
                     "supervisor": {**supervisor, "backend": "ray"},
                     "ray": {"address": self.cluster.address, "auth_token_file": str(self.cluster.token_file),
                             **(ray or {})}}
        self.supervisor = TaskSupervisor(load_config(environ={}, overrides=overrides)).start()

    def stop_supervisor(self) -> None:
        if self.supervisor is not None:
            self.supervisor.shutdown()
            self.supervisor = None

    def submit(self, steps: list[list[Any]], code: str, engine: str = "") -> str:
        from tests.supervision import SCRIPTED, submit

        audio, video = self.inputs / "speech.wav", self.inputs / "person.mp4"
        for path in (audio, video):
            path.write_bytes(path.name.encode())
        return submit(self.supervisor, (audio, video), steps, engine=engine or SCRIPTED, code=code)

    def status(self, code: str) -> Any:
        return self.supervisor.status(code)

    def system_info(self) -> dict[str, Any]:
        return self.supervisor.system_info()

    def cancel(self, code: str) -> Any:
        return self.supervisor.cancel(code)

    def wait_final(self, code: str, timeout_s: float) -> Any:
        record = self.supervisor.wait(code, min(timeout_s, LONGEST_WAIT_S))
        if not record.state.is_final:
            raise AssertionError(f"task {code} still {record.state.value} after {timeout_s} s: {record}")
        return record

    def wait_running(self, code: str, min_progress: float, timeout_s: float) -> Any:
        deadline = time.monotonic() + min(timeout_s, LONGEST_WAIT_S)
        while True:
            record = self.supervisor.status(code)
            if record.state.value == "running" and record.progress >= min_progress:
                return record
            if record.state.is_final or time.monotonic() > deadline:
                raise AssertionError(f"task {code} never ran past {min_progress} %: {record}")
            time.sleep(0.05)

    def wait_message(self, code: str, start: str, timeout_s: float) -> Any:
        """Until the task's message starts with `start` (a hold reason, say)."""
        deadline = time.monotonic() + min(timeout_s, LONGEST_WAIT_S)
        while not (record := self.supervisor.status(code)).message.startswith(start):
            if time.monotonic() > deadline:
                raise AssertionError(f"task {code} never said {start!r}: {record}")
            time.sleep(0.05)
        return record

    # ----- a real `python app.py` -------------------------------------------------------------------------

    def start_app(self, settings: dict[str, str]) -> str:
        """A `python app.py` with these HEYGEM_* settings (on top of the test server's); returns its URL."""
        from tests.server_process import ServerProcess

        self.stop_supervisor()
        if self.app is None:
            self.app = ServerProcess(self.root / "app", **settings)
        self.app.settings = {key: str(value) for key, value in settings.items()}
        self.app.start()
        return str(self.app.url)

    def stop_app(self, signal_name: str = "SIGTERM") -> int:
        return int(self.app.stop(signal.Signals[signal_name]))

    def app_input(self, source: str) -> str:
        """Copy a file into the app's input folder; returns the name the HeyGem API takes."""
        shutil.copy(source, self.app.input_dir / Path(source).name)
        return Path(source).name

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        import httpx

        response = httpx.request(method, f"{self.app.url}{path}", json=body, timeout=60)
        kind = response.headers.get("content-type", "")
        return response.status_code, response.json() if kind.startswith("application/json") else response.text

    def app_log(self) -> str:
        return str(self.app.log_tail(80))

    # ----- the end --------------------------------------------------------------------------------------

    def stop(self) -> dict[str, list[str]]:
        """Stop the head and the cluster; what is left of Ray or of any task in this namespace afterwards."""
        self.stop_supervisor()
        if self.app is not None:
            self.app.stop()
        left = self.cluster.stop() if self.cluster is not None else []
        deadline = time.monotonic() + 30  # a private runtime's daemons go on their own, shortly after the app
        while (ray_processes() or marked("")) and time.monotonic() < deadline:
            time.sleep(0.2)
        return {"cluster": left, "ray": [command[:160] for _, command in ray_processes()],
                "tasks": self.task_processes(""),
                # The harness's own: itself as PID 1 and multiprocessing's resource tracker, which end with it.
                "other": [command[:160] for pid, command in processes()
                          if pid != 1 and "tests.ray_harness" not in command and "resource_tracker" not in command]}


def serve(socket_path: str, authkey: bytes, workers: list[float]) -> None:
    began = time.monotonic()
    root = SHORT_ROOT / "h"
    cluster = RayCluster(root / "cluster").start([{"cpus": cpus} for cpus in workers]) if workers else None
    harness = Harness(root, cluster)
    with Listener(socket_path, family="AF_UNIX", authkey=authkey) as listener:
        print(json.dumps({"ready": round(time.monotonic() - began, 1)}), flush=True)
        with listener.accept() as connection:
            while True:
                request = connection.recv()
                name = request["call"]
                try:
                    if name.startswith("_") or not callable(getattr(harness, name, None)):
                        raise AttributeError(f"the harness has no call {name!r}")
                    answer: dict[str, Any] = {"value": getattr(harness, name)(*request["args"], **request["kwargs"])}
                except BaseException:
                    answer = {"error": traceback.format_exc()}
                connection.send(answer)
                if name == "stop":
                    return


if __name__ == "__main__":
    inside_namespace(Path(sys.argv[3]))
    serve(sys.argv[1], bytes.fromhex(sys.argv[2]), [float(cpus) for cpus in sys.argv[4].split(",") if float(cpus) > 0])
