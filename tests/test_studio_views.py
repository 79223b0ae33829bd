"""What the studio and the API say about a task, and the metrics text, from plain records (no server)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from heygem.api.easy import answer
from heygem.api.easy_answers import SYSTEM_ERROR, heygem_data
from heygem.api.metrics import render_metrics
from heygem.pipeline.engine import Availability
from heygem.supervisor.states import TaskState
from heygem.ui.views import (
    display_name,
    engine_note,
    status_html,
    steady,
    system_markdown,
    task_list_html,
)
from tests.records import NOW, RECORD, record


def test_heygem_status_follows_the_state() -> None:
    assert heygem_data(RECORD, "en") == {"code": "abc", "status": 1, "progress": 0,
                                   "msg": "waiting in queue (position 2)", "result": ""}
    running = heygem_data(record(state=TaskState.RUNNING, stage="rendering", progress=42.7, started_at=NOW - 10),
                          "en")
    assert (running["status"], running["progress"], running["msg"], running["result"]) == (1, 42, "rendering", "")
    done = record(state=TaskState.SUCCEEDED, progress=99.0, started_at=NOW - 10, finished_at=NOW)
    # A task of the studio or /api/v1: the absolute path; one submitted through /easy: its copy in the shared folder.
    assert (heygem_data(done, "en")["status"], heygem_data(done, "en")["progress"]) == (2, 100)
    assert heygem_data(done, "en")["result"] == "/data/results/abc-r.mp4"
    shared = dataclasses.replace(done, shared_result_path="/home/u/duix_avatar_data/face2face/temp/abc-r.mp4")
    assert heygem_data(shared, "en")["result"] == "/abc-r.mp4"
    for state in (TaskState.FAILED, TaskState.CANCELLED):
        ended = heygem_data(record(state=state, message=""), "en")
        assert ended["status"] == 3 and ended["msg"] and ended["result"] == ""


def test_an_unexpected_error_answers_9999_with_a_message() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    body = answer(broken, "en").body
    assert b'"code":9999' in body and b"internal error: RuntimeError: disk on fire" in body
    assert SYSTEM_ERROR == 9999


def test_the_status_card_shows_percent_eta_and_failures_in_plain_words() -> None:
    running = status_html(record(state=TaskState.RUNNING, stage="rendering", progress=25.0,
                                 started_at=time.time() - 10), eta=30.0)
    assert "25 %" in running and "about 30 s left" in running and "rendering" in running
    failed = status_html(record(state=TaskState.FAILED, message="no face found in the video", started_at=NOW - 5,
                                finished_at=NOW))
    assert "Failed" in failed and "no face found in the video" in failed
    assert "&lt;script&gt;" in status_html(record(message="<script>"))
    warned = status_html(record(state=TaskState.SUCCEEDED, warning="the speech track is silent", finished_at=NOW))
    assert "hg-warning'>Check the result: the speech track is silent" in warned


def test_the_page_never_shows_a_task_going_back_within_an_attempt() -> None:
    at_66 = record(state=TaskState.RUNNING, stage="rendering", progress=66.0, attempts=1)
    shown_record, shown = steady(at_66, None)
    assert (shown_record.progress, shown.progress) == (66.0, 66.0)
    # A late look (or a backend that reported the wrong figure) says 40 % and "initializing": the page keeps 66 %.
    late = record(state=TaskState.INITIALIZING, stage="init", progress=40.0, attempts=1)
    again, shown = steady(late, shown)
    assert (again.state, again.progress) == (TaskState.RUNNING, 66.0) and "66 %" in status_html(again)
    # The next attempt starts from nothing, and the end is shown as it is.
    retried, _ = steady(record(state=TaskState.INITIALIZING, progress=0.0, attempts=2), shown)
    assert (retried.state, retried.progress) == (TaskState.INITIALIZING, 0.0)
    done, _ = steady(record(state=TaskState.FAILED, progress=10.0, attempts=1), shown)
    assert (done.state, done.progress) == (TaskState.FAILED, 10.0)


def test_the_task_list_shows_names_a_picture_and_one_progress_figure() -> None:
    cancelled = record(code="c1", state=TaskState.CANCELLED, progress=37.0, message="cancelled at 50 %",
                       started_at=NOW - 65, finished_at=NOW)
    done = record(code="d1", state=TaskState.SUCCEEDED, started_at=NOW - 65, finished_at=NOW)
    text = task_list_html([cancelled, done], {"d1": "data:image/jpeg;base64,AAAA"})
    assert "<b>hello.wav</b><span>face.mp4</span><code>c1</code>" in text
    assert "37 %" not in text and "cancelled at 50 %" in text and "100 %" in text and "1 min 05 s" in text
    assert "<img src='data:image/jpeg;base64,AAAA'" in text and text.count("<img") == 1
    assert display_name("/x/plain.wav") == "plain.wav"
    assert "No tasks yet" in task_list_html([], {})


@pytest.fixture
def system_info() -> dict[str, Any]:
    return {"backend": "local", "nodes": [],
            "device": "NVIDIA H200", "workers_busy": 1, "max_workers": 2, "queue_length": 3, "version": "0.1.0",
            "gpus": [{"index": 0, "name": 'NVIDIA "H200"', "memory_total_gb": 139.8, "memory_used_gb": 20.5,
                      "memory_free_gb": 119.3}],
            "tasks_by_state": {"queued": 3, "running": 1, "succeeded": 7}}


def test_the_system_tab_names_the_gpu_workers_and_why_an_engine_is_unavailable(system_info: dict[str, Any]) -> None:
    engines = {"meshwarp": Availability(True), "wav2lip": Availability(False, "model wav2lip_gan_96 is missing")}
    text = system_markdown(system_info, engines)
    assert "NVIDIA H200" in text and "20.5 GB used, 119.3 GB free of 139.8 GB" in text
    assert "1 busy, 1 idle" in text and "3 waiting" in text
    assert "| wav2lip | unavailable: model wav2lip_gan_96 is missing |" in text
    # The Generate page names what a person cannot choose; the why (a path, a command) is for the System tab.
    assert engine_note(engines) == "Not installed on this server: wav2lip."


def test_metrics_are_prometheus_text(system_info: dict[str, Any]) -> None:
    class Supervisor:
        def system_info(self) -> dict[str, Any]:
            return system_info

    text = render_metrics(Supervisor())  # type: ignore[arg-type]
    assert 'heygem_tasks{state="succeeded"} 7' in text and 'heygem_tasks{state="failed"} 0' in text
    assert "heygem_queue_length 3" in text and "heygem_workers_busy 1" in text
    assert 'heygem_gpu_memory_used_bytes{gpu="0",name="NVIDIA \\"H200\\""} 22011707392' in text
    assert text.endswith("\n") and all(line.startswith(("#", "heygem_")) for line in text.splitlines())


CLUSTER = [
    {"id": "a" * 56, "address": "10.0.0.1", "alive": True, "head": True, "cpus": 0.0, "cpus_free": 0.0, "gpus": 0.0,
     "gpus_free": 0.0, "memory_gb": 22.8, "tasks": 0},
    {"id": "b" * 56, "address": "10.0.0.7", "alive": True, "head": False, "cpus": 8.0, "cpus_free": 6.0,
     "gpus": 1.0, "gpus_free": 0.72, "memory_gb": 90.1, "tasks": 2},
    {"id": "c" * 56, "address": "10.0.0.8", "alive": False, "head": False, "cpus": 8.0, "cpus_free": 0.0,
     "gpus": 1.0, "gpus_free": 0.0, "memory_gb": 90.1, "tasks": 0},
]


@pytest.fixture
def cluster_info(system_info: dict[str, Any]) -> dict[str, Any]:
    return {**system_info, "backend": "ray", "nodes": CLUSTER, "gpus": [],
            "device": "Ray cluster: 2 nodes alive, 8 CPUs, 1 GPUs"}


def test_the_system_tab_lists_the_cluster_nodes_alive_first(cluster_info: dict[str, Any]) -> None:
    text = system_markdown(cluster_info, {"meshwarp": Availability(True)})
    assert "### Cluster" in text and "### Machine" not in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == ["| `aaaaaaaaaaaa` | 10.0.0.1 | head | 0 / 0 | 0 / 0 | 22.8 GB | 0 |",
                    "| `bbbbbbbbbbbb` | 10.0.0.7 | alive | 6 / 8 | 0.72 / 1 | 90.1 GB | 2 |",
                    "| `cccccccccccc` | 10.0.0.8 | lost | 0 / 8 | 0 / 1 | 90.1 GB | 0 |"]


def test_metrics_show_each_alive_node_and_the_backend(cluster_info: dict[str, Any],
                                                      system_info: dict[str, Any]) -> None:
    class Supervisor:
        def __init__(self, info: dict[str, Any]) -> None:
            self.info = info

        def system_info(self) -> dict[str, Any]:
            return self.info

    text = render_metrics(Supervisor(cluster_info))  # type: ignore[arg-type]
    assert "heygem_cluster_nodes_alive 2" in text
    assert 'heygem_node_gpus_free{node="bbbbbbbbbbbb",address="10.0.0.7",head="false"} 0.72' in text
    assert 'heygem_node_tasks{node="bbbbbbbbbbbb",address="10.0.0.7",head="false"} 2' in text
    assert 'node="cccccccccccc"' not in text, "a lost node is counted, not listed"
    assert 'heygem_info{version="0.1.0",backend="ray"} 1' in text
    local = render_metrics(Supervisor(system_info))  # type: ignore[arg-type]
    assert "heygem_node_" not in local and "heygem_cluster_" not in local
    assert 'heygem_info{version="0.1.0",backend="local"} 1' in local


def test_healthz_shows_the_cluster_without_addresses() -> None:
    from heygem.api.rest import cluster_health

    assert cluster_health([]) is None
    health = cluster_health(CLUSTER)
    assert health is not None
    assert (health["nodes_alive"], health["nodes_lost"]) == (2, 1)
    assert [node["id"] for node in health["nodes"]] == ["a" * 56, "b" * 56]
    assert all("address" not in node for node in health["nodes"])
