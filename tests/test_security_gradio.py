"""Issue 8, findings 1 and 2: the studio's Gradio routes, attacked with FileData naming files of the server.

Against `python app.py` in a subprocess: a FileData path that did not come from the upload route gets one refusal,
whatever it names, before Gradio opens, hashes or copies anything; /dev/zero and a FIFO never stall the server.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio import processing_utils
from gradio.context import LocalContext
from gradio.exceptions import InvalidPathError

from heygem.api.gradio_files import NOT_UPLOADED
from heygem.server import create_app
from tests.conftest import ConfigFactory
from tests.security import HealthWatch, generate_inputs
from tests.server_process import ServerProcess
from tests.studio_server import make_speech

pytestmark = pytest.mark.server

NOT_UPLOADED_ANSWER = {"error": NOT_UPLOADED}
CallRoutes = Callable[[list[Any]], list[tuple[str, dict[str, Any]]]]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files outside every root of the server: a speech recording a user keeps private, and a secret."""
    folder = tmp_path_factory.mktemp("private")
    secret = folder / "secret.txt"
    secret.write_text("the launch codes")
    return {"speech": make_speech(folder / "private-speech.wav", 2.0), "secret": secret}


@pytest.fixture(scope="module")
def call_routes(client: httpx.Client) -> CallRoutes:
    """Each Gradio route that runs the studio's generate handler, with a body carrying the given inputs."""
    generate = next(event["id"] for event in client.get("/config").json()["dependencies"]
                    if event["api_name"] == "generate")

    def bodies(inputs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("/gradio_api/call/generate", {"data": inputs}),
            ("/gradio_api/call/v2/generate", {"audio": inputs[0], "video": inputs[1]}),
            ("/gradio_api/run/generate", {"data": inputs}),
            ("/gradio_api/queue/join", {"data": inputs, "fn_index": generate, "session_hash": secrets.token_hex(8)}),
        ]

    return bodies


def task_codes(client: httpx.Client) -> set[str]:
    return {task["code"] for task in client.get("/api/v1/tasks").json()["tasks"]}


def gradio_cache(server: ServerProcess) -> list[str]:
    return sorted(str(path.relative_to(server.data_dir)) for path in (server.data_dir / "gradio").rglob("*")
                  if not path.is_dir())


def test_a_path_that_was_not_uploaded_gets_one_answer_whatever_it_names(
        server: ServerProcess, client: httpx.Client, call_routes: CallRoutes, private: dict[str, Path]) -> None:
    upload_root = server.data_dir / "gradio"
    before = gradio_cache(server)
    tasks_before = task_codes(client)  # of other modules: the server is shared
    planted_link = upload_root / "planted" / "speech.wav"  # as if a link could be made there: it is followed
    planted_link.parent.mkdir(parents=True, exist_ok=True)
    planted_link.symlink_to(private["speech"])
    names = [str(private["speech"]), str(private["secret"]), "/etc/passwd", "/no/such/file.wav",
             str(upload_root / "no-such-upload.wav"), str(upload_root / ".." / "tasks.sqlite3"),
             str(upload_root), str(planted_link), "private-speech.wav", "http://127.0.0.1:9/speech.wav",
             str(upload_root / "nul\0byte.wav")]
    for name in names:
        for route, body in call_routes(generate_inputs(name)):
            answer = client.post(route, json=body)
            assert (answer.status_code, answer.json()) == (400, NOT_UPLOADED_ANSWER), (route, name)
        # The same path deep inside the video slot, where Gradio looks for files as well.
        answer = client.post("/gradio_api/call/generate", json={"data": generate_inputs(name, name)})
        assert (answer.status_code, answer.json()) == (400, NOT_UPLOADED_ANSWER), name
    shutil.rmtree(planted_link.parent)
    assert gradio_cache(server) == before, "nothing was copied into Gradio's cache"
    assert task_codes(client) == tasks_before, "no task was made of a private file"


def test_dev_zero_and_a_fifo_are_refused_and_the_server_keeps_answering(
        server: ServerProcess, client: httpx.Client, call_routes: CallRoutes, tmp_path: Path) -> None:
    fifo = tmp_path / "speech.wav"
    os.mkfifo(fifo)
    fifo_inside = server.data_dir / "gradio" / "pipe" / "speech.wav"  # a FIFO among the uploads is no upload either
    fifo_inside.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo_inside)
    with HealthWatch(server.url) as health:
        for name in ("/dev/zero", "/dev/urandom", str(fifo), str(fifo_inside)):
            for route, body in call_routes(generate_inputs(name)):
                answer = client.post(route, json=body)
                assert (answer.status_code, answer.json()) == (400, NOT_UPLOADED_ANSWER), (route, name)
    health.assert_always_answered()
    for pipe in (fifo, fifo_inside):
        # Opening a FIFO for writing without blocking fails with ENXIO exactly when nobody has it open to read.
        with pytest.raises(OSError) as no_reader:
            os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        assert no_reader.value.errno == errno.ENXIO, f"the server opened {pipe}"
    shutil.rmtree(fifo_inside.parent)


def test_an_upload_through_the_upload_route_is_accepted(server: ServerProcess, client: httpx.Client,
                                                        private: dict[str, Path]) -> None:
    with private["speech"].open("rb") as speech:
        uploaded = client.post("/gradio_api/upload", files={"files": ("speech.wav", speech, "audio/wav")})
    assert uploaded.status_code == 200
    path = uploaded.json()[0]
    assert Path(path).resolve().is_relative_to((server.data_dir / "gradio").resolve())
    # Past the file check, the handler itself answers: the video is missing.
    accepted = client.post("/gradio_api/call/generate", json={"data": generate_inputs(path)})
    assert accepted.status_code == 200
    with client.stream("GET", f"/gradio_api/call/generate/{accepted.json()['event_id']}") as events:
        text = "".join(events.iter_text())
    assert "event: error" in text and "Add the video of a person facing the camera." in text


@pytest.mark.parametrize(("body", "message"), [
    (b"[" * 16_000 + b"]" * 16_000, "the body of a studio call must be a JSON document"),  # under max_call_kb
    (b"[" * 40 + b"]" * 40, "the body of a studio call nests more than 32 levels deep"),
    (b"path=/etc/passwd", "the body of a studio call must be a JSON document"),
])
def test_studio_calls_must_be_shallow_json(client: httpx.Client, body: bytes, message: str) -> None:
    answer = client.post("/gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (400, {"error": message})


def test_gradio_s_own_upload_folder_check_is_on_as_a_second_line(make_config: ConfigFactory) -> None:
    """mount_gradio_app never sets has_launched, which Gradio's own check waits for; create_app sets it."""
    app = create_app(make_config())
    try:
        page = next(route.app for route in app.routes if hasattr(route, "app") and hasattr(route.app, "get_blocks"))
        token = LocalContext.blocks.set(page.get_blocks())
        try:
            with pytest.raises(InvalidPathError, match="it was not uploaded by a user"):
                processing_utils._check_allowed("/etc/passwd", check_in_upload_folder=True)
        finally:
            LocalContext.blocks.reset(token)
    finally:
        app.state.supervisor.shutdown()
