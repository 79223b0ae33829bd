"""The ray backend on a real Ray cluster on this machine (issue 12): real `ray start` nodes, real workers, no mocks.

A head node without CPUs (so tasks run on worker nodes only) and two worker nodes with one CPU each, inside a
network namespace that has only loopback (tests/ray_cluster.py). One harness process in that namespace owns the
cluster and the head (tests/ray_harness.py); these tests call it and check, from outside too, that nothing of
Ray or of a task is left behind. The cluster tests share one cluster and run in file order: halfway a worker
node is lost, and a node with a (fake) GPU takes its place.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import pytest

from heygem.pipeline.live import END_TAG
from heygem.supervisor import TaskState
from heygem.supervisor.results import is_valid_video
from heygem.supervisor.states import AttemptOutcome
from tests import media
from tests.conftest import REPO_ROOT, SUPERVISOR_TEST_SETTINGS
from tests.ray_cluster import SHORT_ROOT, marked, namespace_command, namespace_problem, processes
from tests.supervision import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.server]

astronaut_file, media_dir, speech_file = media.astronaut_file, media.media_dir, media.speech_file

# Task codes of this run: the checks from outside the namespace look for exactly these.
PREFIX = f"rt{os.getpid()}-"
# The node's Ray worker, our guard and worker start between the launch and the first heartbeat: on a loaded
# 2-core machine, four of them starting at once on one node took more than 10 s. No test here measures the init
# grace (no script reports an error, which it would delay), so it is as long as a task's whole wait.
TASK_TIMEOUT_S = 120
SETTINGS = {**SUPERVISOR_TEST_SETTINGS, "max_workers": 2, "requeue_interrupted": True, "init_grace_s": TASK_TIMEOUT_S}
READY_TIMEOUT_S = 240


class Remote:
    """The harness's calls, made over its socket; a failure inside comes back as this side's AssertionError."""

    def __init__(self, connection: Connection, state: Path) -> None:
        self._connection = connection
        self._state = state

    def outside(self, path: str) -> Path:
        """A path the harness names, as this side sees it: inside, `state` is mounted on /mnt."""
        return self._state / Path(path).relative_to(SHORT_ROOT)

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._connection.send({"call": name, "args": args, "kwargs": kwargs})
            answer = self._connection.recv()
            if "error" in answer:
                raise AssertionError(f"the Ray harness failed in {name}:\n{answer['error']}")
            return answer["value"]

        return call


def _die_with_pytest() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the namespace goes when pytest goes


@contextlib.contextmanager
def harness(folder: Path, workers: str) -> Iterator[Remote]:
    """The harness in its namespace, until the block ends; then a clean stop, checked inside and outside."""
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    socket_path, log_path = folder / "harness.sock", folder / "harness.log"
    authkey = os.urandom(32)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            namespace_command([sys.executable, "-m", "tests.ray_harness", str(socket_path), authkey.hex(),
                               str(folder / "state"), workers]),
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, preexec_fn=_die_with_pytest)
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith('{"ready"'):
            raise AssertionError(f"the Ray harness did not come up within {READY_TIMEOUT_S} s: "
                                 f"{log_path.read_text(errors='replace')[-3000:]}")
        with Client(str(socket_path), family="AF_UNIX", authkey=authkey) as connection:
            remote = Remote(connection, folder / "state")
            yield remote
            left = remote.stop()
        assert left == {"cluster": [], "ray": [], "tasks": [], "other": []}, left
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # From outside the namespace: nothing of its cluster or of this run's tasks anywhere on the machine.
    assert [command for _, command in processes(str(socket_path))] == []
    assert marked(PREFIX) == []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    with harness(tmp_path_factory.mktemp("ray-cluster"), workers="1,1") as remote:
        yield remote


def test_the_head_has_no_cpus_and_two_worker_nodes_have_one_each(cluster: Remote) -> None:
    cluster.start_supervisor(SETTINGS)
    info = cluster.system_info()
    assert info["backend"] == "ray"
    assert info["gpus"] == []
    nodes = sorted(info["nodes"], key=lambda node: node["cpus"])
    assert [(node["head"], node["cpus"], node["alive"]) for node in nodes] == [(True, 0, True), (False, 1, True),
                                                                                (False, 1, True)]
    assert {node["address"] for node in nodes} == {"127.0.0.1"}
    assert info["device"] == "Ray cluster: 3 nodes alive, 2 CPUs, 0 GPUs"


def test_two_tasks_run_at_once_on_two_nodes_and_their_results_come_home(cluster: Remote) -> None:
    codes = [cluster.submit([["render", 3]], code=f"{PREFIX}two-{index}") for index in range(2)]
    first, second = (cluster.wait_final(code, TASK_TIMEOUT_S) for code in codes)
    for record in (first, second):
        assert record.state is TaskState.SUCCEEDED, record.message
        assert record.worker_pid is None, "a pid of another machine is never recorded"
        assert record.node is not None and record.node.address == "127.0.0.1"
        result = cluster.outside(record.result_path)
        assert result.parent.name == "results" and is_valid_video(result)
        assert list(result.parent.parent.joinpath("temp").iterdir()) == [], "no partial file or work folder left"
        log = (result.parent.parent / "logs" / "tasks" / f"{record.code}.log").read_text()
        assert "task finished" in log, "the task log came back from the node"
        # The head shipped its code: the node did not import this checkout by accident.
        assert "/runtime_resources/working_dir_files/" in log.split("code in ", 1)[1].splitlines()[0]
    assert first.node != second.node
    assert first.started_at < second.finished_at and second.started_at < first.finished_at, "they overlapped"
    assert cluster.task_processes(PREFIX) == []


def test_a_worker_killed_on_its_node_fails_as_a_local_sigkill_does(cluster: Remote) -> None:
    code = cluster.submit([["child", 60], ["render", 30]], code=f"{PREFIX}killed")
    cluster.wait_running(code, 5, TASK_TIMEOUT_S)
    cluster.kill_worker(code)
    record = cluster.wait_final(code, 30)
    assert record.state is TaskState.FAILED
    assert record.message.startswith(
        "worker killed by signal 9 (SIGKILL), often the out-of-memory killer, during stage render at "), record.message
    assert cluster.wait_no_task_processes(code, 15) == [], "the worker's ffmpeg children died with it"


def test_a_ray_worker_process_that_dies_takes_the_task_with_it_and_its_guard_cleans_up(cluster: Remote) -> None:
    code = cluster.submit([["child", 60], ["render", 30]], code=f"{PREFIX}runner")
    running = cluster.wait_running(code, 5, TASK_TIMEOUT_S)
    cluster.kill_ray_worker(code)
    record = cluster.wait_final(code, 30)
    assert record.state is TaskState.FAILED
    assert record.message.startswith(f"the Ray worker process running it on worker node 127.0.0.1 (id "
                                     f"{running.node.id[:12]}) died (WorkerCrashedError) during stage render at "), \
        record.message
    assert cluster.wait_no_task_processes(code, 15) == [], "the guard killed the worker and its ffmpeg children"


def test_cancel_leaves_no_process_of_the_task_on_any_node(cluster: Remote) -> None:
    code = cluster.submit([["child", 60], ["render", 30]], code=f"{PREFIX}cancel")
    cluster.wait_running(code, 5, TASK_TIMEOUT_S)
    assert len(cluster.task_processes(code)) >= 3, "guard, worker and its ffmpeg children run on the node"
    record = cluster.cancel(code)
    assert record.state is TaskState.CANCELLED
    assert record.message.startswith("cancelled during stage render at ")
    assert cluster.wait_no_task_processes(code, 15) == []


def test_losing_a_node_mid_render_requeues_the_task_on_the_other_node(cluster: Remote) -> None:
    bystander = cluster.submit([["render", 8]], code=f"{PREFIX}bystander")
    victim = cluster.submit([["render", 8]], code=f"{PREFIX}victim")
    running = cluster.wait_running(victim, 20, TASK_TIMEOUT_S)
    lost = running.node
    cluster.kill_node(lost.id)
    requeued = f"task {victim} queued: requeued: worker node 127.0.0.1 (id {lost.id[:12]}) lost during stage render at "
    record = cluster.wait_final(victim, TASK_TIMEOUT_S)
    assert len(cluster.logged(requeued)) == 1, cluster.logged(victim)
    assert record.state is TaskState.SUCCEEDED, record.message
    assert record.attempts == 2
    assert record.node is not None and record.node.id != lost.id
    # Its history keeps both runs: the one on the lost node, requeued with the loss, and the rerun that succeeded.
    first, second = record.history
    assert (first.node, first.outcome, second.node, second.outcome) == (lost, AttemptOutcome.REQUEUED, record.node,
                                                                        AttemptOutcome.SUCCEEDED)
    assert first.message.startswith(f"worker node 127.0.0.1 (id {lost.id[:12]}) lost during stage render at ")
    assert f"resumed from the start after {first.message}" in record.summary
    assert is_valid_video(cluster.outside(record.result_path))
    other = cluster.wait_final(bystander, TASK_TIMEOUT_S)
    assert other.state is TaskState.SUCCEEDED and other.attempts == 1, "the task on the other node was untouched"
    assert cluster.task_processes(PREFIX) == []
    nodes = {node["id"]: node for node in cluster.system_info()["nodes"]}
    assert nodes[lost.id]["alive"] is False


def test_gpu_tasks_share_a_gpu_by_their_declared_memory_and_the_fifth_waits_in_the_queue(
        cluster: Remote, tmp_path: Path) -> None:
    gpu_node = cluster.add_worker(1, gpus=1)  # a fake GPU: Ray counts it, nothing uses it
    # 5 GB each on 21 GB GPUs with 1 GB kept free: a quarter of a GPU each, so four share it.
    cluster.start_supervisor({**SETTINGS, "max_workers": 5}, {"gpu_memory_gb": 21, "gpu_task_cpus": 0})
    go_on = tmp_path / "go-on"
    codes = [cluster.submit([["await", str(go_on)], ["env", "CUDA_VISIBLE_DEVICES"]], code=f"{PREFIX}gpu-{index}",
                            engine="tests.scripted_engine:GpuScriptedEngine") for index in range(5)]
    for code in codes[:4]:
        cluster.wait_running(code, 0, TASK_TIMEOUT_S)
    waiting = cluster.wait_message(codes[4], "waiting for a Ray node with 0.25 GPU free", 30)
    assert waiting.state is TaskState.QUEUED and waiting.queue_position == 1
    assert {cluster.status(code).node.id for code in codes[:4]} == {gpu_node}
    go_on.touch()
    records = [cluster.wait_final(code, TASK_TIMEOUT_S) for code in codes]
    assert [record.state for record in records] == [TaskState.SUCCEEDED] * 5, [r.message for r in records]
    assert {record.report["CUDA_VISIBLE_DEVICES"] for record in records} == {"0"}
    assert records[4].started_at >= min(record.finished_at for record in records[:4])


def test_a_task_no_node_can_ever_run_waits_and_says_so(cluster: Remote) -> None:
    cluster.start_supervisor(SETTINGS, {"task_cpus": 4})
    code = cluster.submit([["render", 1]], code=f"{PREFIX}too-big")
    record = cluster.wait_message(code, "no node of the Ray cluster can run this task", 30)
    assert record.message == ("no node of the Ray cluster can run this task: it needs 4 CPU, and the largest alive "
                              "node has 1 CPU and 1 GPU; it waits for a node that has (ray start --num-cpus/"
                              "--num-gpus), or lower ray.task_cpus / ray.gpu_task_cpus")
    assert record.state is TaskState.QUEUED and record.queue_position == 1
    assert cluster.cancel(code).message == "cancelled while queued"


def test_a_deadline_ends_the_task_and_leaves_nothing_on_its_node(cluster: Remote) -> None:
    # Past a worker's start on its node, however loaded the machine (at a load of 12, 8 s ran out while it started).
    cluster.start_supervisor({**SETTINGS, "task_timeout_s": 20})
    code = cluster.submit([["child", 60], ["render", 60]], code=f"{PREFIX}deadline")
    record = cluster.wait_final(code, TASK_TIMEOUT_S)
    assert record.state is TaskState.FAILED
    assert record.message.startswith("timed out after 20 s in stage render at "), record.message
    assert cluster.wait_no_task_processes(code, 15) == []


def test_the_app_shows_the_cluster_and_a_head_restart_requeues_its_task(
        cluster: Remote, speech_file: Path, astronaut_file: Path) -> None:
    nodes = cluster.nodes()
    cluster.start_app({"HEYGEM_SUPERVISOR__BACKEND": "ray", "HEYGEM_RAY__ADDRESS": "127.0.0.1:6379",
                       "HEYGEM_RAY__AUTH_TOKEN_FILE": "/mnt/h/cluster/ray-token",
                       "HEYGEM_SUPERVISOR__REQUEUE_INTERRUPTED": "true"})
    status, health = cluster.http("GET", "/healthz")
    assert status == 200 and health["backend"] == "ray"
    assert health["cluster"]["nodes_alive"] == 3
    assert sorted(node["cpus"] for node in health["cluster"]["nodes"]) == [0, 1, 1]
    assert all("address" not in node for node in health["cluster"]["nodes"]), "/healthz is public: no addresses"
    status, metrics = cluster.http("GET", "/metrics")
    assert 'heygem_cluster_nodes_alive 3' in metrics
    assert f'heygem_node_cpus{{node="{nodes["head"][:12]}",address="127.0.0.1",head="true"}} 0.0' in metrics

    code = f"{PREFIX}app"
    body = {"audio_url": cluster.app_input(str(speech_file)), "video_url": cluster.app_input(str(astronaut_file)),
            "code": code}
    status, answer = cluster.http("POST", "/easy/submit", body)
    assert status == 200 and answer["success"], answer
    task = wait_http(cluster, code, lambda task: task["state"] == "running")
    assert task["node"] == {"id": task["node"]["id"], "address": "127.0.0.1"}
    assert task["node"]["id"] in nodes["workers"]
    assert cluster.stop_app("SIGKILL") == -signal.SIGKILL
    assert cluster.wait_no_task_processes(code, 15) == [], "Ray ended the dead head's task on its node"

    cluster.start_app({"HEYGEM_SUPERVISOR__BACKEND": "ray", "HEYGEM_RAY__ADDRESS": "auto",
                       "HEYGEM_RAY__AUTH_TOKEN_FILE": "/mnt/h/cluster/ray-token",
                       "HEYGEM_SUPERVISOR__REQUEUE_INTERRUPTED": "true"})
    task = wait_http(cluster, code, lambda task: task["state"] in ("succeeded", "failed"))
    assert task["state"] == "succeeded", task["message"]
    assert task["attempts"] == 2
    assert task["node"]["id"] in nodes["workers"]
    assert task["report"]["frames_without_face"] == 0
    # The live stream was written on the node and came home: the head serves it, ended, with its segments.
    status, playlist = cluster.http("GET", f"/api/v1/tasks/{code}/live.m3u8")
    assert status == 200 and END_TAG in playlist, playlist
    segments = [line for line in playlist.splitlines() if line.startswith("live-")]
    assert segments, playlist
    assert all(cluster.http("GET", f"/api/v1/tasks/{code}/{name}")[0] == 200 for name in segments)
    assert_stops_cleanly(cluster)


def assert_stops_cleanly(harness: Remote) -> None:
    # uvicorn ends a graceful SIGTERM shutdown by raising the signal again, as the default action expects.
    assert harness.stop_app() == -signal.SIGTERM
    assert "task supervisor stopped" in harness.app_log()


def wait_http(cluster: Remote, code: str, done: Any, timeout_s: float = TASK_TIMEOUT_S) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def there() -> dict[str, Any] | None:
        status, task = cluster.http("GET", f"/api/v1/tasks/{code}")
        assert status == 200, task
        seen[:] = [task]
        return task if done(task) else None

    try:
        return wait_until(there, timeout_s, f"task {code} to get there", interval_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(seen)}") from None


@pytest.fixture(scope="module")
def lonely(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """No cluster at all: the app starts a private Ray runtime of its own."""
    with harness(tmp_path_factory.mktemp("ray-private"), workers="0") as remote:
        yield remote


def test_an_empty_address_starts_a_private_runtime_that_runs_tasks_here(
        lonely: Remote, speech_file: Path, astronaut_file: Path) -> None:
    token = Path.home() / ".ray" / "auth_token"
    token_before = token.exists()
    lonely.start_app({"HEYGEM_SUPERVISOR__BACKEND": "ray"})
    status, health = lonely.http("GET", "/healthz")
    assert status == 200 and health["backend"] == "ray" and health["cluster"]["nodes_alive"] == 1
    (node,) = health["cluster"]["nodes"]
    assert node["head"] and node["cpus"] >= 1, "the app's own machine runs the tasks"
    code = f"{PREFIX}private"
    status, answer = lonely.http("POST", "/easy/submit", {
        "audio_url": lonely.app_input(str(speech_file)), "video_url": lonely.app_input(str(astronaut_file)),
        "code": code})
    assert status == 200 and answer["success"], answer
    task = wait_http(lonely, code, lambda task: task["state"] in ("succeeded", "failed"))
    assert task["state"] == "succeeded", task["message"]
    assert task["node"] == {"id": node["id"], "address": "127.0.0.1"}
    assert is_valid_video(lonely.outside(task["result"]))
    assert_stops_cleanly(lonely)
    assert token.exists() == token_before, "Ray wrote ~/.ray/auth_token: RAY_AUTH_MODE was not set before import"


def test_an_address_where_no_head_answers_stops_the_start_at_once_with_one_sentence(tmp_path: Path) -> None:
    """ray.init() retried such an address for 14 minutes, the app deaf to SIGTERM meanwhile, then printed a
    traceback naming the machine's other address instead of the one configured."""
    from tests.server_process import free_port

    pytest.importorskip("ray", reason="the ray backend needs requirements-ray.txt (make test installs it)")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HEYGEM_", "GRADIO_", "RAY_"))}
    env.update(HEYGEM_PATHS__DATA_DIR=str(tmp_path / "data"), HEYGEM_SUPERVISOR__BACKEND="ray",
               HEYGEM_RAY__ADDRESS=address)
    # Ray's retries took 14 minutes: the timeout catches them coming back.
    result = subprocess.run([sys.executable, str(REPO_ROOT / "app.py"), "--port", str(free_port())], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert (f"ERROR:    error: could not start the ray backend: nothing answers at ray.address {address} (Connection "
            "refused). Start the cluster's head there first") in result.stderr
    assert "Traceback" not in result.stderr
