"""Issue 13: scripts written for HeyGem-Linux-Python-Hack's Gradio app work unchanged against `python app.py`.

That app's users call `Client(url).predict(handle_file("speech.wav"), handle_file("person.mp4"),
api_name="/predict")` and get the finished video's path back (heygem/ui/predict.py). Here with gradio_client
against a real server: the video, two calls at once, a failure's message, a client that goes away, the file rule.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import av
import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from heygem.api.gradio_files import NOT_UPLOADED
from heygem.options import TaskOptions
from heygem.supervisor import TaskState
from heygem.ui.predict import DEADLINE_MARGIN_S, Predict
from tests.option_cases import OUT_OF_RANGE, case_id
from tests.security import file_data
from tests.server_process import ServerProcess
from tests.studio_server import JOB_TIMEOUT_S, client_media
from tests.supervision import wait_until

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return client_media(tmp_path_factory.mktemp("predict-media"))


def seconds(path: Path | str, stream: str) -> float:
    with av.open(str(path)) as container:
        media = container.streams.video[0] if stream == "video" else container.streams.audio[0]
        assert media.duration is not None
        return float(media.duration * media.time_base)


def tasks(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {task["code"]: task for task in client.get("/api/v1/tasks").json()["tasks"]}


def test_the_seed_s_script_gets_the_finished_video(server: ServerProcess, client: httpx.Client,
                                                    media: dict[str, Path], tmp_path: Path) -> None:
    before = set(tasks(client))
    # The script from the issue, word for word but for the address.
    video = Client(server.url, download_files=str(tmp_path)).predict(
        handle_file(str(media["speech"])), handle_file(str(media["video"])), api_name="/predict")
    assert isinstance(video, str) and Path(video).is_relative_to(tmp_path)
    assert abs(seconds(video, "video") - seconds(media["speech"], "audio")) <= 1 / 25
    (code,) = set(tasks(client)) - before
    task = tasks(client)[code]
    assert (task["state"], task["engine"]) == ("succeeded", "meshwarp")
    assert task["options"]["loop_mode"] == "pingpong", "resolved at submit, as the task ran"
    assert Path(video).read_bytes() == Path(task["result_path"]).read_bytes()


def test_the_endpoint_is_named_hidden_and_takes_optional_engine_and_loop_mode(client: httpx.Client) -> None:
    config = client.get("/config").json()
    (predict,) = [event for event in config["dependencies"] if event["api_name"] == "predict"]
    components = {component["id"]: component for component in config["components"]}
    assert all(components[index]["props"]["visible"] is False for index in predict["inputs"] + predict["outputs"])
    info = Client(str(client.base_url), verbose=False).view_api(return_format="dict")["named_endpoints"]["/predict"]
    parameters = [(item["parameter_name"], item["parameter_has_default"], item["component"])
                  for item in info["parameters"]]
    assert parameters == [("audio", False, "File"), ("video", False, "File"), ("engine", True, "Dropdown"),
                          ("loop_mode", True, "Radio")]
    assert [item["component"] for item in info["returns"]] == ["Video"]


def test_two_calls_at_once_wait_in_our_queue_and_both_finish(server: ServerProcess, client: httpx.Client,
                                                            media: dict[str, Path], tmp_path: Path) -> None:
    before = set(tasks(client))
    script = Client(server.url, verbose=False, download_files=str(tmp_path))
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(script.predict, handle_file(str(media["speech"])), handle_file(str(media["video"])),
                             "meshwarp", mode, api_name="/predict") for mode in ("pingpong", "loop")]
        videos = [call.result(timeout=2 * JOB_TIMEOUT_S) for call in calls]
    assert all(Path(video).stat().st_size > 10_000 for video in videos)
    first, second = sorted((task for code, task in tasks(client).items() if code not in before),
                           key=lambda task: task["created_at"])
    assert first["state"] == second["state"] == "succeeded"
    # Gradio ran both calls at once: the second task was submitted before the first one ended, and waited for the
    # one worker in our queue (Gradio serialising them would have submitted it only after the first call returned).
    assert second["created_at"] < first["finished_at"] <= second["started_at"]


def test_a_video_without_a_face_raises_the_task_s_message(server: ServerProcess, media: dict[str, Path]) -> None:
    with pytest.raises(AppError, match=r"failed: rendering: no face found in the video"):
        Client(server.url, verbose=False).predict(handle_file(str(media["speech"])),
                                                  handle_file(str(media["faceless"])), api_name="/predict")


@pytest.mark.parametrize("case", [case for case in OUT_OF_RANGE if case[0] == "loop_mode"], ids=case_id)
def test_a_bad_loop_mode_is_refused_with_the_one_message(server: ServerProcess, media: dict[str, Path],
                                                         case: tuple[str, Any, str]) -> None:
    with pytest.raises(AppError) as refusal:
        Client(server.url, verbose=False).predict(handle_file(str(media["speech"])), handle_file(str(media["video"])),
                                                  "meshwarp", case[1], api_name="/predict")
    assert refusal.value.message == case[2]


def test_a_client_that_goes_away_leaves_the_task_running(server: ServerProcess, client: httpx.Client,
                                                         media: dict[str, Path]) -> None:
    before = set(tasks(client))
    script = Client(server.url, verbose=False)
    job = script.submit(handle_file(str(media["speech"])), handle_file(str(media["video"])), api_name="/predict")
    (code,) = wait_until(lambda: set(tasks(client)) - before, JOB_TIMEOUT_S, "the call to submit its task",
                         interval_s=0.2)
    job.cancel()
    script.close()
    ended = wait_until(lambda: tasks(client)[code]["state"] in ("succeeded", "failed", "cancelled")
                       and tasks(client)[code]["state"], JOB_TIMEOUT_S, f"task {code} to end", interval_s=0.3)
    assert ended == "succeeded"


def test_a_path_that_was_not_uploaded_is_refused(server: ServerProcess, client: httpx.Client,
                                                 media: dict[str, Path]) -> None:
    before = set(tasks(client))
    for name in (str(media["speech"]), "/etc/passwd", "/dev/zero"):
        body = {"data": [file_data(name), file_data(str(media["video"])), "meshwarp", "pingpong"]}
        answer = client.post("/gradio_api/call/predict", json=body)
        assert (answer.status_code, answer.json()) == (400, {"error": NOT_UPLOADED}), name
    assert set(tasks(client)) == before


class StuckSupervisor:
    """A supervisor whose task started long ago and never ends (the bound of the wait, without a server)."""

    def __init__(self, record: Any) -> None:
        self.record = record

    def status(self, code: str) -> Any:
        return self.record

    def deadline_s(self, record: Any) -> float:
        return 10.0


def test_the_wait_gives_up_long_after_the_task_s_deadline(make_config: Any) -> None:
    config = make_config(server={"ui_refresh_s": 0.01})
    record = SimpleNamespace(state=TaskState.RUNNING, summary="rendering", options=TaskOptions(),
                             started_at=time.time() - 10.0 - DEADLINE_MARGIN_S - config.supervisor.poll_interval_s - 1)
    studio = SimpleNamespace(supervisor=StuckSupervisor(record), config=config)
    with pytest.raises(gr.Error, match=r"did not end within its deadline; it is running \(rendering\)"):
        anyio.run(Predict(studio).wait, "stuck")
    record.started_at += 5  # not yet: the wait goes on (here, until the task ends)
    record.state = TaskState.SUCCEEDED
    assert anyio.run(Predict(studio).wait, "stuck") is record
