"""The HeyGem-compatible API and our JSON API, spoken by a real HTTP client to `python app.py` in a subprocess.

One server serves the whole module (one worker, a queue of three); the restart test comes last.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.option_cases import OUT_OF_RANGE, WRONG_KIND, case_id
from tests.server_process import ServerProcess
from tests.studio_server import query, submit, wait_done, write_inputs

pytestmark = pytest.mark.server

QUEUE_MAX = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("api"), HEYGEM_SUPERVISOR__MAX_WORKERS=1,
                           HEYGEM_SUPERVISOR__QUEUE_MAX=QUEUE_MAX)
    write_inputs(server.input_dir)
    (server.input_dir / "escape.wav").symlink_to("/etc/hosts")
    with server:
        yield server


def test_health_and_metrics(client: httpx.Client) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["max_workers"] == 1 and health["device"]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for line in ('heygem_tasks{state="queued"}', "heygem_queue_length ", "heygem_workers_busy ",
                 "heygem_workers_max 1", "# TYPE heygem_gpu_memory_used_bytes gauge"):
        assert line in metrics.text


def test_a_job_runs_end_to_end_and_its_answer_never_goes_away(server: ServerProcess, client: httpx.Client) -> None:
    answer = submit(client, code="first-job", pn=0, digital_auth=1)
    assert answer["code"] == 10000 and answer["success"] is True
    # Waiting, or already starting when a worker was free: either way running (1), with words for it.
    assert answer["data"]["status"] == 1 and answer["data"]["msg"], answer
    seen = wait_done(client, "first-job")
    progress = [data["progress"] for data in seen]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    final = seen[-1]
    assert final["status"] == 2 and final["progress"] == 100 and final["msg"]
    # As the reference answers: the result's place in the folder the client shares with the service (input_dir).
    assert final["result"] == "/first-job-r.mp4"
    shared = server.input_dir / "first-job-r.mp4"
    with av.open(str(shared)) as video:
        assert video.streams.video and video.streams.audio
    # One file under two names (a hard link: both folders lie on one file system here).
    assert shared.stat().st_ino == (server.data_dir / "results" / "first-job-r.mp4").stat().st_ino
    # The reference forgets a task at its first finished read; here it answers again and again.
    assert [query(client, "first-job")["data"] for _ in range(3)] == [final] * 3


def test_the_json_api_shows_timings_result_and_serves_only_the_result(client: httpx.Client) -> None:
    task = client.get("/api/v1/tasks/first-job").json()
    assert task["state"] == "succeeded" and task["progress"] == 100 and task["stage"]
    # Resolved once at submit: the given values, and the server's defaults for the rest (the options it ran with).
    assert task["options"].items() >= {"loop_mode": "loop", "ai_label": True, "watermark": False}.items()
    assert set(task["options"]) == {"loop_mode", "mouth_intensity", "ai_label", "watermark", "speech_language"}
    assert task["started_at"] >= task["created_at"] and task["finished_at"] >= task["started_at"]
    assert task["duration_s"] > 0 and task["worker_pid"] > 0 and task["message"] == ""
    assert Path(task["result"]) == Path(task["result_path"]) and Path(task["result"]).name == "first-job-r.mp4"
    assert Path(task["shared_result_path"]).parent.name == "inputs"
    download = client.get("/api/v1/tasks/first-job/result")
    assert download.status_code == 200 and download.content == Path(task["result"]).read_bytes()
    listed = client.get("/api/v1/tasks").json()["tasks"]
    assert "first-job" in [entry["code"] for entry in listed]
    assert client.get("/api/v1/tasks/no-such-task").status_code == 404
    assert client.get("/api/v1/tasks/no-such-task/result").json() == {"error": "no task with code 'no-such-task'"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"audio_url": None}, "audio_url is required"),
    ({"video_url": ""}, "video_url is required"),
    ({"audio_url": "../../etc/passwd"}, "audio_url: '../../etc/passwd' is outside the folders"),
    ({"video_url": "/etc/passwd"}, "video_url: '/etc/passwd' is outside the folders"),
    ({"audio_url": "escape.wav"}, "audio_url: 'escape.wav' is outside the folders"),
    ({"audio_url": "absent.wav"}, "audio_url: file not found"),
    ({"video_url": "speech.wav"}, "video_url: this is an audio file"),
    ({"audio_url": "http://127.0.0.1:9/a.wav"}, "URL downloads are disabled"),
    ({"code": "../../evil"}, "task code '../../evil' is invalid"),
    ({"pn": "sideways"}, "pn must be 0 or 1"),
    ({"engine": "os:system"}, "engine must be one of"),
    ({"engine": "wav2lip", "mouth_intensity": 1.5}, "mouth_intensity is not an option of the wav2lip engine (its "
                                                     "options: loop_mode, ai_label, watermark)"),
    ({"code": "first-job"}, "already used"),
])
def test_bad_parameters_answer_10002_naming_the_problem(client: httpx.Client, fields: dict[str, Any],
                                                         message: str) -> None:
    answer = submit(client, **fields)
    assert answer == {"code": 10002, "data": {}, "msg": answer["msg"], "success": False}
    assert message in answer["msg"]


@pytest.mark.parametrize("case", [case for case in OUT_OF_RANGE + WRONG_KIND
                                  if case[0] in ("mouth_intensity", "speech_language")],
                         ids=case_id)
def test_an_option_out_of_range_answers_10002_with_the_one_message(client: httpx.Client,
                                                                    case: tuple[str, Any, str]) -> None:
    name, value, message = case
    assert submit(client, **{name: value}) == {"code": 10002, "data": {}, "msg": message, "success": False}


def test_malformed_requests_and_unknown_codes(client: httpx.Client) -> None:
    not_json = client.post("/easy/submit", content=b"{oops", headers={"content-type": "application/json"})
    assert not_json.status_code == 200 and not_json.json()["code"] == 10002
    # No code finds no task: 10004, which the desktop client ignores (10002 would fail its video).
    assert client.get("/easy/query").json() == {"code": 10004, "data": {}, "success": False,
                                                "msg": "no task code given: ask /easy/query?code=<task code>"}
    unknown = client.get("/easy/query", params={"code": "never-submitted"}).json()
    assert unknown == {"code": 10004, "data": {}, "msg": "no task with code 'never-submitted'", "success": False}
    assert client.post("/easy/cancel", params={"code": "never-submitted"}).json()["code"] == 10004
    too_big = client.post("/easy/submit", content=b" " * 300_000)
    assert too_big.status_code == 413


def test_three_submissions_at_once_are_all_accepted_and_all_finish(client: httpx.Client) -> None:
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: submit(client), range(3)))
    assert [answer["code"] for answer in answers] == [10000] * 3
    for answer in answers:
        assert wait_done(client, answer["data"]["code"])[-1]["status"] == 2


def test_a_full_queue_answers_10001_and_cancel_ends_tasks_with_a_reason(client: httpx.Client) -> None:
    accepted = [submit(client) for _ in range(QUEUE_MAX)]
    assert all(answer["code"] == 10000 for answer in accepted)
    busy = submit(client)
    if busy["code"] == 10000:  # the first task may already have left the queue for the worker
        accepted.append(busy)
        busy = submit(client)
    assert busy["code"] == 10001 and "queue" in busy["msg"] and busy["success"] is False
    for answer in accepted:
        code = answer["data"]["code"]
        cancelled = client.post("/easy/cancel", params={"code": code}).json()
        assert cancelled["code"] == 10000 and cancelled["data"]["status"] == 3
        assert "cancelled" in cancelled["data"]["msg"]
        assert query(client, code)["data"]["status"] == 3
    again = client.post("/easy/cancel", params={"code": accepted[0]["data"]["code"]}).json()
    assert again["code"] == 10002 and "already ended" in again["msg"]


def test_a_restart_keeps_finished_answers_and_runs_what_was_queued(server: ServerProcess,
                                                                  client: httpx.Client) -> None:
    submit(client, code="finished-before-stop")
    before = wait_done(client, "finished-before-stop")[-1]
    assert before["status"] == 2
    running, queued = submit(client, code="running-at-stop"), submit(client, code="queued-at-stop")
    assert running["code"] == queued["code"] == 10000
    pids = [task["worker_pid"] for task in client.get("/api/v1/tasks").json()["tasks"] if task["worker_pid"]]
    # uvicorn finishes the app's shutdown, then re-raises SIGTERM so the exit status still says why it ended.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_tail()
    for pid in pids:
        assert not pid_alive(pid), f"worker {pid} outlived the server"
    server.start()
    assert query(client, "finished-before-stop")["data"] == before
    assert wait_done(client, "queued-at-stop")[-1]["status"] == 2
    interrupted = query(client, "running-at-stop")["data"]
    # Interrupted tasks fail with a reason unless requeue_interrupted is set; one still queued just runs.
    assert interrupted["status"] in (2, 3) and interrupted["msg"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; only the test runner could reap it, and it is no child of ours.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
