"""Supervisor benchmarks: failure-detection latency, per-task overhead, throughput of no-op tasks.

Run: .venv/bin/python -m bench.supervisor [--kills 20] [--tasks 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from heygem.config import load_config
from heygem.supervisor import TaskRequest, TaskState, TaskSupervisor
from heygem.supervisor.states import TaskRecord
from tests.supervision import submit

NOOP = "bench.noop_engine:NoopEngine"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000) -> str:
    return (f"{name}: median {statistics.median(values) * scale:.0f} {unit}, p95 {percentile(values, 0.95) * scale:.0f}"
            f" {unit}, max {max(values) * scale:.0f} {unit} (n={len(values)})")


def start(data_dir: Path, max_workers: int) -> TaskSupervisor:
    config = load_config(overrides={"paths": {"data_dir": str(data_dir), "input_dir": str(data_dir)},
                                    "supervisor": {"max_workers": max_workers, "queue_max": 1000}})
    return TaskSupervisor(config).start()


def wait_for(supervisor: TaskSupervisor, code: str, predicate: object, timeout_s: float = 60) -> TaskRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = supervisor.status(code)
        if predicate(record):  # type: ignore[operator]
            return record
        time.sleep(0.005)
    raise TimeoutError(code)


def measure_kill_latency(supervisor: TaskSupervisor, inputs: tuple[Path, Path], kills: int) -> list[float]:
    latencies = []
    for index in range(kills):
        code = submit(supervisor, inputs, [["render", 30]], code=f"kill-{index}")
        running = wait_for(supervisor, code, lambda r: r.worker_pid and r.state is not TaskState.QUEUED)
        time.sleep(0.5)
        os.kill(running.worker_pid, signal.SIGKILL)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
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
        succeeded = sum(record.state is TaskState.SUCCEEDED for record in records)
        print(f"{args.tasks} no-op tasks, 2 workers: {elapsed:.1f} s, {args.tasks / elapsed:.2f} tasks/s, "
              f"{succeeded} succeeded, {args.tasks - succeeded} lost or failed")


if __name__ == "__main__":
    main()
