"""The ray backend, node side: what runs on a worker node for one task, and the file server on the head's node.

`run_on_node` is the Ray task (a streaming generator, one per HeyGem task). On the node it
  1. says where it runs (the first item of its stream: the head records the node at once);
  2. makes a private folder in the node's temp folder and pulls the task's audio and video into it from the
     FileServer on the head's node, 8 MB at a time (no shared folder; memory stays bounded on both sides),
     reporting stage "receive inputs" to the head's live-status Manager so that deadlines cover it;
  3. runs heygem's own worker (heygem.supervisor.worker.run_worker, exactly as the local backend does) under
     the node guard (node_guard.py), with the paths rewritten into that folder;
  4. while the worker runs, streams the task log back as it grows, each finished file of the task's live stream
     (heygem.pipeline.live: segments first, then the playlist that names them, so the head's copy of the playlist
     never names a segment the head lacks), and the result as soon as the worker has renamed it into place
     (complete), so that the head's "a valid result is kept" rule sees it in time;
  5. ends the stream with the worker's exit status and outcome, and removes the folder.
The head consumes the stream in heygem.supervisor.backends.ray_head. Nothing here imports ray at the top:
ray's authentication settings must be in the environment before its first import (see ray_head.export_auth).

`python -m heygem.supervisor.backends.ray_node SPEC_FILE` is the worker's own entry point, run by the guard.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heygem.config import Config
from heygem.logs import task_log_path
from heygem.pipeline.live import PLAYLIST_NAME, LiveStream
from heygem.supervisor.backends.node_guard import read_exit_status
from heygem.supervisor.processes import TASK_MARKER
from heygem.supervisor.protocol import WorkerReporter, read_outcome, write_manager_address
from heygem.supervisor.worker import WorkerSpec, describe_exception, run_worker

CHUNK_BYTES = 8 * 1024 * 1024
# Seconds between two looks at the worker's log and result while it runs.
WATCH_INTERVAL_S = 0.5
# The kinds of items in a task's stream, each a (kind, value) pair.
NODE, LOG, LIVE, RESULT, RESULT_END, END = "node", "log", "live", "result", "result_end", "end"
RECEIVE_STAGE = "receive inputs"

StreamItem = tuple[str, Any]


@dataclasses.dataclass(frozen=True)
class NodeTask:
    """What the head sends with a task: the worker spec as the head would run it, and how to reach the head."""

    spec: WorkerSpec
    # slot ("audio", "video") -> (the FileServer's key, size in bytes, file suffix)
    inputs: dict[str, tuple[str, int, str]]
    manager_address: tuple[str, int]
    manager_authkey: bytes
    models_dir: str


class FileServer:
    """A Ray actor on the head's node: byte ranges of the files the head offered under a key, nothing else.

    A node names a key, never a path, so it can read only the inputs of the tasks it was given.
    """

    def __init__(self) -> None:
        self._files: dict[str, str] = {}

    def offer(self, files: dict[str, str]) -> dict[str, int]:
        """key -> path; returns key -> size."""
        self._files.update(files)
        return {key: os.path.getsize(path) for key, path in files.items()}

    def withdraw(self, prefix: str) -> None:
        for key in [key for key in self._files if key.startswith(prefix)]:
            del self._files[key]

    def read(self, key: str, offset: int, size: int) -> bytes:
        path = self._files.get(key)
        if path is None:
            raise KeyError(f"{key} is not offered (the task ended on the head)")
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


def run_on_node(task: NodeTask, files: Any) -> Iterator[StreamItem]:
    """The Ray task. `files`: the FileServer actor's handle."""
    import ray

    context = ray.get_runtime_context()
    yield NODE, {"id": context.get_node_id(), "address": ray.util.get_node_ip_address()}
    folder = Path(tempfile.mkdtemp(prefix=f"heygem-{task.spec.code}-"))
    try:
        yield from _run(task, files, folder, bool(ray.get_gpu_ids()))
    finally:
        if not task.spec.config["supervisor"]["keep_temp"]:
            shutil.rmtree(folder, ignore_errors=True)


def _run(task: NodeTask, files: Any, folder: Path, has_gpu: bool) -> Iterator[StreamItem]:
    address_file = folder / "status-manager.json"
    write_manager_address(address_file, task.manager_address, task.manager_authkey)
    spec = _node_spec(task, folder, address_file)
    heartbeat_s = float(task.spec.config["supervisor"]["heartbeat_interval_s"])
    reporter = WorkerReporter(spec.code, address_file, heartbeat_s)
    try:
        # A stage without a percentage: the task's progress is its render's, which must not start at 100 %.
        reporter.stage(RECEIVE_STAGE)
        _receive_inputs(task, files, spec)
    except Exception as exc:  # the head's file server gone, the node's disk full: the task fails saying so
        failure = {"ok": False, "message": describe_exception(exc, RECEIVE_STAGE), "report": {}}
        yield END, {"exitcode": None, "outcome": failure}
        return
    finally:
        reporter.close()
    yield from _watch(spec, _start_worker(spec, folder, has_gpu), folder)


def _node_spec(task: NodeTask, folder: Path, address_file: Path) -> WorkerSpec:
    """The head's spec with every path moved into this node's task folder."""
    spec = task.spec
    data_dir = folder / "data"
    config = {section: dict(values) for section, values in spec.config.items()}
    config["paths"].update(data_dir=str(data_dir), input_dir=str(folder / "inputs"))
    config["models"]["dir"] = task.models_dir
    work_dir = data_dir / "temp" / spec.code
    work_dir.mkdir(parents=True)
    (folder / "result").mkdir()
    audio_suffix, video_suffix = task.inputs["audio"][2], task.inputs["video"][2]
    return dataclasses.replace(spec, audio_path=str(folder / f"audio{audio_suffix}"),
                               video_path=str(folder / f"video{video_suffix}"),
                               result_path=str(folder / "result" / Path(spec.result_path).name),
                               work_dir=str(work_dir), config=config, address_file=str(address_file), gpu_index=None,
                               live_dir=str(folder / "live") if spec.live_dir else None)


def _receive_inputs(task: NodeTask, files: Any, spec: WorkerSpec) -> None:
    """Pull each input, asking for the next piece before writing the one at hand."""
    import ray

    for slot, target in (("audio", spec.audio_path), ("video", spec.video_path)):
        key, size, _ = task.inputs[slot]
        offset = 0
        with open(target, "wb") as out:
            pending = files.read.remote(key, 0, CHUNK_BYTES) if size else None
            while pending is not None:
                piece = ray.get(pending)
                offset += len(piece)
                pending = files.read.remote(key, offset, CHUNK_BYTES) if piece and offset < size else None
                out.write(piece)
        if offset != size:
            raise OSError(f"the {slot} file changed on the head while it was sent ({offset} of {size} bytes)")


def _start_worker(spec: WorkerSpec, folder: Path, has_gpu: bool) -> int:
    """Start the guard, which starts the worker; returns the guard's pid."""
    spec_file = folder / "worker-spec.pickle"
    spec_file.touch(mode=0o600)
    spec_file.write_bytes(pickle.dumps(spec))
    env = dict(os.environ)
    # The guard and the worker are fresh interpreters: they find heygem where this Ray worker found it (the
    # code the head shipped, or the node's own copy), not on Ray's sys.path.
    code_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [code_root, env.get("PYTHONPATH")]))
    if not has_gpu:  # Ray leaves CUDA_VISIBLE_DEVICES unset for a task without a GPU share: every GPU would show
        env["CUDA_VISIBLE_DEVICES"] = ""
    # From the start, so that /proc shows it for the guard and the worker too: whatever carries it is the task's.
    env[TASK_MARKER] = spec.code
    command = [sys.executable, "-m", "heygem.supervisor.backends.node_guard", str(os.getpid()),
               str(folder / "exit-status"), str(folder), "--", sys.executable, "-m",
               "heygem.supervisor.backends.ray_node", str(spec_file)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, start_new_session=True) as starter:
        assert starter.stdout is not None
        line = starter.stdout.readline()
    if starter.returncode != 0 or not line.strip().isdigit():
        raise OSError(f"the node guard did not start (exit status {starter.returncode})")
    return int(line)


def _watch(spec: WorkerSpec, guard_pid: int, folder: Path) -> Iterator[StreamItem]:
    log = _LogTail(task_log_path(Config.from_dict(spec.config), spec.code))  # where the worker's logging writes
    live = _LiveMirror(LiveStream(Path(spec.live_dir))) if spec.live_dir else None
    result = Path(spec.result_path)
    result_sent = False
    try:
        guard = os.pidfd_open(guard_pid)
    except ProcessLookupError:  # already over
        guard = None
    try:
        while True:
            ended = guard is None or bool(select.select([guard], [], [], WATCH_INTERVAL_S)[0])
            if piece := log.read():
                yield LOG, piece
            if live is not None:
                yield from live.news()
            if not result_sent and result.is_file():  # the worker renames it into place only when complete
                yield from _send_result(result)
                result_sent = True
            if ended:
                break
    finally:
        if guard is not None:
            os.close(guard)
    if piece := log.read():
        yield LOG, piece
    if live is not None:
        yield from live.news()
    yield END, {"exitcode": read_exit_status(folder / "exit-status"), "outcome": read_outcome(Path(spec.work_dir))}


def _send_result(path: Path) -> Iterator[StreamItem]:
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK_BYTES):
            yield RESULT, piece
    yield RESULT_END, None


class _LogTail:
    """What the worker appended to its task log since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> bytes:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                piece = handle.read()
        except FileNotFoundError:
            return b""
        self.offset += len(piece)
        return piece


class _LiveMirror:
    """What the worker's encoder added to the task's live stream since the last look, as (name, bytes) items."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.sent: set[str] = set()
        self.playlist: str | None = None

    def news(self) -> Iterator[StreamItem]:
        # The playlist first: every segment it names was complete (renamed from its .tmp) before it was written,
        # so the listing after it holds them all; segments go out before the playlist text.
        playlist = self.stream.read_playlist()
        names = sorted(path.name for path in self.stream.folder.glob("live-*") if path.name not in self.sent)
        for name in names:
            segment = self.stream.open_segment(name)
            if segment is not None:
                with segment:
                    content = segment.read()
                yield LIVE, (name, content)
                self.sent.add(name)
        if playlist is not None and playlist != self.playlist:
            yield LIVE, (PLAYLIST_NAME, playlist.encode())
            self.playlist = playlist


def main(spec_file: str) -> None:
    """The worker on a node, started by the guard."""
    spec = pickle.loads(Path(spec_file).read_bytes())
    run_worker(spec)


if __name__ == "__main__":
    main(sys.argv[1])
