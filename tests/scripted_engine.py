"""Engines that behave as a test scripts them, run by the real supervisor in real spawned workers.

The task's video file holds the script (tests.supervision.submit writes it): a JSON list of [action, argument]
pairs carried out in order by `run`. The supervisor never opens a task's video, so it travels unchanged:
  ["render", seconds]  ffmpeg renders a test video of that length at native speed into the result (real work)
  ["child", seconds]   starts a child process (ffmpeg) that runs that long, and leaves it running
  ["sleep", seconds]   ["stage", name]   ["progress", percent]   ["error", message]   ["clear", null]
  ["raise", kind]      kind: "runtime" (with a message), "empty" (no message), "unpicklable"
  ["exit", code]       os._exit(code) without a word to the supervisor
  ["freeze", null]     SIGSTOP itself: no heartbeat any more
  ["await", path]      waits (up to a minute) until the file at `path` exists: the test decides when it goes on
  ["linger", seconds]  the worker process outlives its last word by that long (a thread the interpreter waits for),
                       as a real engine's teardown makes it
  ["options", null]    puts repr(job.options) in the report, to show what reached the engine
  ["compute", seconds] works that long in this process with no progress figure, as the analyses do
                       (heygem.pipeline.generate.working tells the supervisor it goes on)
  ["env", name]        puts the worker's environment variable `name` in the report (None when unset)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from heygem.options import TaskOptions
from heygem.pipeline.engine import Engine, Job, Reporter


class UnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        raise TypeError("UnpicklableError cannot be pickled")


def render_test_video(path: Path, seconds: float, reporter: Reporter) -> None:
    temporary = path.with_name(path.stem + ".partial.mp4")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-re", "-f", "lavfi",
               "-i", f"testsrc=size=64x64:rate=10:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", "-progress", "pipe:1", "-f", "mp4", str(temporary)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as ffmpeg:
        assert ffmpeg.stdout is not None
        for line in ffmpeg.stdout:
            if line.startswith("out_time_us=") and line.strip() != "out_time_us=N/A":
                reporter.progress(100 * int(line.split("=")[1]) / 1e6 / seconds)
    if ffmpeg.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with code {ffmpeg.returncode}")
    os.replace(temporary, path)


def start_child(seconds: float) -> None:
    subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-re", "-f", "lavfi",
                      "-i", f"nullsrc=size=16x16:rate=5:duration={seconds}", "-f", "null", "-"])


def await_file(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within a minute")
        time.sleep(0.05)


def raise_kind(kind: str) -> None:
    if kind == "runtime":
        raise RuntimeError("the engine broke on purpose")
    if kind == "empty":
        raise ValueError()
    raise UnpicklableError()


class ScriptedEngine(Engine):
    name = "scripted"
    takes_options = frozenset(TaskOptions.names())  # it shows whatever reaches it (the step "options")

    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        steps = json.loads(job.video_path.read_text())
        report: dict[str, Any] = {"steps": len(steps)}
        for action, argument in steps:
            if action == "render":
                reporter.stage("render")
                render_test_video(job.result_path, float(argument), reporter)
            elif action == "child":
                start_child(float(argument))
            elif action == "sleep":
                time.sleep(float(argument))
            elif action == "compute":
                from heygem.pipeline.generate import working  # only here: it brings the pipeline's imports

                with working(reporter, interval_s=0.2):
                    time.sleep(float(argument))
            elif action == "stage":
                reporter.stage(str(argument))
            elif action == "progress":
                reporter.progress(float(argument))
            elif action == "error":
                reporter.error(str(argument))
            elif action == "clear":
                reporter.clear_error()
            elif action == "raise":
                raise_kind(str(argument))
            elif action == "exit":
                os._exit(int(argument))
            elif action == "freeze":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif action == "await":
                await_file(Path(argument))
            elif action == "linger":
                threading.Thread(target=time.sleep, args=(float(argument),), name="linger").start()
            elif action == "options":
                report["options"] = repr(job.options)
            elif action == "env":
                report[argument] = os.environ.get(argument)
            else:
                raise ValueError(f"unknown step {action!r}")
        if not job.result_path.exists():
            job.result_path.write_bytes(b"")
        return report


class GpuScriptedEngine(ScriptedEngine):
    """Declares 5 GB of GPU memory, as a GPU engine would; it runs its script on whatever it is given."""

    name = "scripted-gpu"
    gpu_memory_gb = 5.0


class AnalysingEngine(ScriptedEngine):
    """Imports the pipeline while loading, as the built-in engines do, so that a "compute" step starts working at once:
    an import inside the run spent more than supervisor.stall_s without a move on a loaded machine."""

    name = "analysing"

    def load(self, reporter: Reporter) -> None:
        import heygem.pipeline.generate  # noqa: F401


class HangingLoadEngine(ScriptedEngine):
    """Never finishes loading, reporting an error meanwhile (a model that cannot be read, say)."""

    name = "hanging-load"

    def load(self, reporter: Reporter) -> None:
        reporter.stage("load model")
        reporter.error("model file is locked by another process")
        time.sleep(3600)
