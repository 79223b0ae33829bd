"""Supervisor benchmarks: failure-detection latency, per-task overhead, throughput of no-op tasks.

Run: .venv/bin/python -m bench.supervisor [--kills 20] [--tasks 100]
     .venv/bin/python -m bench.supervisor --backend ray [--kills 5] [--tasks 40]

--backend ray runs inside a loopback-only network namespace (tests/ray_cluster.py) with a real Ray cluster of a
head without CPUs and worker nodes of 1 CPU each, and measures, in the same run: the local backend, the ray
backend on 1 worker node, then on 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heygem.config import load_config
from heygem.supervisor import TaskRequest, TaskState, TaskSupervisor
from heygem.supervisor.states import TaskRecord
from tests.ray_cluster import (
    IN_NAMESPACE,
    RayCluster,
    inside_namespace,
    namespace_command,
    namespace_problem,
    task_workers,
)
from tests.supervision import submit

NOOP = "bench.noop_engine:NoopEngine"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000) -> str:
    return (f"{name}: median {statistics.median(values) * scale:.0f} {unit}, p95 {percentile(values, 0.95) * scale:.0f}"
            f" {unit}, max {max(values) * scale:.0f} {unit} (n={len(values)})")


def start(data_dir: Path, max_workers: int, cluster: RayCluster | None = None) -> TaskSupervisor:
    overrides: dict[str, dict[str, Any]] = {
        "paths": {"data_dir": str(data_dir), "input_dir": str(data_dir)},
        "supervisor": {"max_workers": max_workers, "queue_max": 1000}}
    if cluster is not None:
        overrides["supervisor"].update(backend="ray", requeue_interrupted=True)
        overrides["ray"] = {"address": cluster.address, "auth_token_file": str(cluster.token_file)}
    return TaskSupervisor(load_config(overrides=overrides)).start()


def wait_for(supervisor: TaskSupervisor, code: str, predicate: object, timeout_s: float = 60) -> TaskRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = supervisor.status(code)
        if predicate(record):  # type: ignore[operator]
            return record
        time.sleep(0.005)
    raise TimeoutError(code)


def local_worker(supervisor: TaskSupervisor, code: str) -> int:
    return wait_for(supervisor, code, lambda r: r.worker_pid and r.state is not TaskState.QUEUED).worker_pid


def node_worker(supervisor: TaskSupervisor, code: str) -> int:
    """The worker of a ray task on its node (every node shares this machine's process table here)."""
    wait_for(supervisor, code, lambda r: r.state is TaskState.RUNNING)
    return task_workers(code)[0]


def measure_kill_latency(supervisor: TaskSupervisor, inputs: tuple[Path, Path], kills: int,
                         find_worker: Callable[[TaskSupervisor, str], int] = local_worker) -> list[float]:
    latencies = []
    for index in range(kills):
        code = submit(supervisor, inputs, [["render", 30]], code=f"kill-{index}")
        worker = find_worker(supervisor, code)
        time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(supervisor, code, lambda r: r.state is TaskState.FAILED)
        latencies.append(time.monotonic() - killed)
    return latencies


def measure_overhead(supervisor: TaskSupervisor, inputs: tuple[Path, Path], count: int) -> tuple[list[float],
                                                                                                   list[float]]:
    """One no-op task at a time: submit to engine start, and engine return to final state."""
    to_run, to_final = [], []
    for index in range(count):
        submitted = time.time()
        code = supervisor.submit(TaskRequest(*inputs, engine=NOOP, code=f"overhead-{index}"))
        record = supervisor.wait(code, 60)
        to_run.append(record.report["run_started_at"] - submitted)
        to_final.append(record.finished_at - record.report["run_ended_at"])
    return to_run, to_final


def measure_throughput(supervisor: TaskSupervisor, inputs: tuple[Path, Path], count: int
                       ) -> tuple[list[TaskRecord], float]:
    began = time.monotonic()
    codes = [supervisor.submit(TaskRequest(*inputs, engine=NOOP, code=f"bulk-{index:03d}")) for index in range(count)]
    records = [supervisor.wait(code, 300) for code in codes]
    return records, time.monotonic() - began


def measure_node_loss(supervisor: TaskSupervisor, cluster: RayCluster, inputs: tuple[Path, Path],
                      losses: int) -> list[float]:
    """Kill the raylet of the node running a task (the machine is lost, to Ray): seconds until the supervisor has
    requeued it (requeue_interrupted is on). A node of 1 CPU takes the lost one's place each time."""
    latencies = []
    for index in range(losses):
        code = submit(supervisor, inputs, [["render", 30]], code=f"lost-{index}")
        running = wait_for(supervisor, code, lambda r: r.state is TaskState.RUNNING and r.node is not None)
        time.sleep(0.5)
        assert running.node is not None
        cluster.kill_node(running.node.id)
        killed = time.monotonic()
        wait_for(supervisor, code, lambda r: r.attempts == 2 or r.message.startswith("requeued:"))
        latencies.append(time.monotonic() - killed)
        supervisor.cancel(code)
        cluster.add_worker({"cpus": 1})
    return latencies


def throughput_line(label: str, records: list[TaskRecord], elapsed: float) -> str:
    succeeded = sum(record.state is TaskState.SUCCEEDED for record in records)
    return (f"{len(records)} no-op tasks, {label}: {elapsed:.1f} s, {len(records) / elapsed:.2f} tasks/s, "
            f"{succeeded} succeeded, {len(records) - succeeded} lost or failed")


def bench_ray(kills: int, tasks: int) -> None:
    """Local, then ray on 1 worker node, then on 2, in one run; inside a loopback-only namespace."""
    if os.environ.get(IN_NAMESPACE) != "1":
        problem = namespace_problem()
        if problem:
            sys.exit(f"cannot run the ray benchmark: {problem}")
        os.execvpe("unshare", namespace_command([sys.executable, "-m", "bench.supervisor", *sys.argv[1:]]),
                   {**os.environ, IN_NAMESPACE: "1"})
    inside_namespace(bind=None)
    with tempfile.TemporaryDirectory(prefix="hgb-") as folder:
        root = Path(folder)
        inputs = (root / "speech.wav", root / "person.mp4")
        for path in inputs:
            path.write_bytes(b"x")
        throughput: dict[str, tuple[list[TaskRecord], float]] = {}
        supervisor = start(root / "local", max_workers=2)
        try:
            to_run, _ = measure_overhead(supervisor, inputs, 10)
            print(summary("local: submit to engine run, one task at a time", to_run), flush=True)
            throughput["local, 2 workers"] = measure_throughput(supervisor, inputs, tasks)
        finally:
            supervisor.shutdown()
        # Ray's own health-check settings, as a cluster would have them.
        cluster = RayCluster(root / "cluster", fast_health=False).start([{"cpus": 1}])
        try:
            supervisor = start(root / "ray-1", max_workers=2, cluster=cluster)
            try:
                throughput["ray, 1 worker node of 1 CPU, max_workers 2"] = measure_throughput(supervisor, inputs,
                                                                                               tasks)
            finally:
                supervisor.shutdown()
            cluster.add_worker({"cpus": 1})
            supervisor = start(root / "ray-2", max_workers=2, cluster=cluster)
            try:
                to_run, to_final = measure_overhead(supervisor, inputs, 10)
                print(summary("ray: submit to engine run on a node, one task at a time", to_run))
                print(summary("ray: engine return to final state on the head", to_final))
                throughput["ray, 2 worker nodes of 1 CPU, max_workers 2"] = measure_throughput(supervisor, inputs,
                                                                                                tasks)
                print(summary("ray: SIGKILL of a worker on its node to status failed",
                              measure_kill_latency(supervisor, inputs, kills, node_worker)), flush=True)
                print(summary("ray: raylet of a worker node SIGKILLed to task requeued (Ray's default health checks)",
                              measure_node_loss(supervisor, cluster, inputs, losses=3)), flush=True)
            finally:
                supervisor.shutdown()
        finally:
            left = cluster.stop()
        for label, (records, elapsed) in throughput.items():
            print(throughput_line(label, records, elapsed))
        print(f"Ray processes left after the stop: {left or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--kills", type=int, help="SIGKILLs to time (default: 20 local, 5 ray)")
    parser.add_argument("--tasks", type=int, help="no-op tasks for the throughput (default: 100 local, 40 ray)")
    args = parser.parse_args()
    if args.backend == "ray":
        bench_ray(args.kills or 5, args.tasks or 40)
        return
    args.kills, args.tasks = args.kills or 20, args.tasks or 100
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        inputs = (data_dir / "speech.wav", data_dir / "person.mp4")
        for path in inputs:
            path.write_bytes(b"x")
        supervisor = start(data_dir / "latency", max_workers=1)
        try:
            print(summary("SIGKILL to status failed", measure_kill_latency(supervisor, inputs, args.kills)))
            to_run, to_final = measure_overhead(supervisor, inputs, 10)
            print(summary("submit to engine run (spawn, imports, load), one task at a time", to_run))
            print(summary("engine return to final state", to_final))
        finally:
            supervisor.shutdown()
        supervisor = start(data_dir / "throughput", max_workers=2)
        try:
            records, elapsed = measure_throughput(supervisor, inputs, args.tasks)
        finally:
            supervisor.shutdown()
        print(throughput_line("2 workers", records, elapsed))


if __name__ == "__main__":
    main()
