"""Issue 11 over HTTP against `python app.py`: submit with multipart/form-data, follow the task's Server-Sent Events,
play its live stream; refusals and interrupted uploads leave nothing on disk; shutdown ends open event streams.

One server serves the module (uploads capped at 1 MB, a 60 s shutdown grace); the shutdown test comes last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from heygem.api.live import START_TAG
from heygem.pipeline.live import END_TAG
from tests.media import astronaut_video, spoken_wav, transcode
from tests.server_process import ServerProcess
from tests.studio_server import JOB_TIMEOUT_S
from tests.supervision import wait_until

pytestmark = pytest.mark.server

MAX_UPLOAD_MB = 1
SHUTDOWN_GRACE_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("live-api"), HEYGEM_SUPERVISOR__MAX_WORKERS=1,
                       HEYGEM_SERVER__MAX_UPLOAD_MB=MAX_UPLOAD_MB,
                       HEYGEM_SERVER__SHUTDOWN_GRACE_S=SHUTDOWN_GRACE_S) as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live-api-media")
    too_big = spoken_wav(folder / "long-speech.wav", 40.0)  # 1.3 MB of 16 kHz PCM
    return {"speech": spoken_wav(folder / "speech.wav", 8.0), "video": astronaut_video(folder / "portrait.mp4", 4.0),
            "too_big": too_big, "long": transcode(too_big, folder / "long-speech.m4a", "-c:a", "aac", "-b:a", "32k")}


def upload(client: httpx.Client, files: dict[str, Path], fields: dict[str, str] | None = None,
           **parts: str | None) -> httpx.Response:
    """POST /api/v1/tasks with the speech and video of `files`; `parts` names other files for audio/video (None:
    leave the field out)."""
    chosen = {"audio": "speech", "video": "video", **parts}
    sent = {field: (files[name].name, files[name].read_bytes()) for field, name in chosen.items() if name}
    return client.post("/api/v1/tasks", files=sent, data=fields or {})


def stored_files(server: ServerProcess) -> set[Path]:
    return set((server.data_dir / "uploads").rglob("*"))


def events_of(client: httpx.Client, code: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every event of the task's stream until the server ends it: {"id", "event", "data"} per event."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/api/v1/tasks/{code}/events", headers=headers,
                       timeout=httpx.Timeout(10, read=JOB_TIMEOUT_S)) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return events


def test_a_multipart_task_runs_and_its_events_follow_it_to_the_end(server: ServerProcess, client: httpx.Client,
                                                                   files: dict[str, Path]) -> None:
    code = f"multipart-{uuid.uuid4().hex[:8]}"
    answer = upload(client, files, {"code": code, "loop_mode": "loop", "mouth_intensity": "1.2", "ai_label": "yes",
                                    "engine": "meshwarp"})
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"code": code, "state": answer.json()["state"], "position": answer.json()["position"]}
    assert answer.json()["state"] in ("queued", "initializing", "running")
    assert answer.headers["location"] == f"/api/v1/tasks/{code}"

    events = events_of(client, code)
    states = [event["data"]["state"] for event in events]
    progress = [event["data"]["progress"] for event in events]
    assert states[0] in ("queued", "initializing", "running") and states[-1] == "succeeded", states
    assert progress == sorted(progress) and progress[-1] == 100, progress
    # The store takes the worker's progress every supervisor.poll_interval_s; fast hardware renders this clip in
    # about a second, which leaves one figure between 0 and 100 to send. None means the events skipped rendering.
    assert [value for value in progress if 0 < value < 100], f"no progress seen while rendering: {progress}"
    assert "rendering" in [event["data"]["stage"] for event in events]
    assert "id" not in events[0] and events[-1]["id"] == "end-1"  # only the final event has an id

    task = client.get(f"/api/v1/tasks/{code}").json()
    # Resolved once at submit: the given values, and the server's defaults for the rest.
    assert task["options"].items() >= {"loop_mode": "loop", "mouth_intensity": 1.2, "ai_label": True}.items()
    assert set(task["options"]) == {"loop_mode", "mouth_intensity", "ai_label", "watermark", "speech_language"}
    with av.open(task["result"]) as video:
        assert video.streams.video and video.streams.audio
    uploads = sorted(path.name for path in (server.data_dir / "uploads").iterdir() if path.is_file())
    assert any(name.endswith("-audio-speech.wav") for name in uploads)
    assert any(name.endswith("-video-portrait.mp4") for name in uploads)
    assert not list((server.data_dir / "uploads" / "incoming").iterdir())

    # A client that connects after the end gets the final state at once, and the stream ends; an EventSource
    # reconnecting with the final event's id is told (204) that nothing more will come.
    late = events_of(client, code)
    assert [event["data"]["state"] for event in late] == ["succeeded"]
    assert client.get(f"/api/v1/tasks/{code}/events", headers={"Last-Event-ID": "end-1"}).status_code == 204


def test_the_stream_of_a_task_is_served_with_its_segments(server: ServerProcess, client: httpx.Client,
                                                          files: dict[str, Path]) -> None:
    code = upload(client, files).json()["code"]
    def playlist_served() -> httpx.Response | None:
        answer = client.get(f"/api/v1/tasks/{code}/live.m3u8")
        if answer.status_code == 404:
            assert answer.json()["error"].startswith(f"task {code} has ")  # not started, or no segment yet
            return None
        return answer

    playlist = wait_until(playlist_served, JOB_TIMEOUT_S, f"the live playlist of task {code}", interval_s=0.1)
    assert playlist.status_code == 200
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert playlist.headers["cache-control"] == "no-cache"
    assert playlist.text.startswith(f"#EXTM3U\n{START_TAG}\n")
    for name in ("live-init.mp4", "live-00000.m4s"):
        segment = client.get(f"/api/v1/tasks/{code}/{name}")
        assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp4" and segment.content
    client.post("/easy/cancel", params={"code": code})


def test_only_the_segment_files_of_the_task_are_served(server: ServerProcess, client: httpx.Client,
                                                       files: dict[str, Path]) -> None:
    answer = client.get("/api/v1/tasks/no-such-task/live.m3u8")
    assert answer.status_code == 404 and answer.json() == {"error": "no task with code 'no-such-task'"}
    tasks = client.get("/api/v1/tasks").json()["tasks"]
    code = next(task["code"] for task in tasks if task["state"] == "succeeded")  # it has a whole stream
    folder = server.data_dir / "live" / code
    assert END_TAG in (folder / "live.m3u8").read_text()
    os.mkfifo(folder / "live-09999.m4s")  # a FIFO would hang a server that opened it
    (folder / "live-09998.m4s").symlink_to("/etc/passwd")
    (folder / "live-09997.m4s.tmp").write_bytes(b"half a segment")
    for name in ("live-09999.m4s", "live-09998.m4s", "live-09997.m4s.tmp", "live-1.m4s", "live-init.mp4.tmp",
                 "live-..%2Flive.m3u8", "live-%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "live-00000.m4s%00", "live-00000.ts"):
        answer = client.get(f"/api/v1/tasks/{code}/{name}", timeout=10)
        assert answer.status_code == 404, name
        assert "passwd" not in answer.text.replace(name, "") and b"root:" not in answer.content


@pytest.mark.parametrize(("parts", "fields", "status", "message"), [
    ({"video": "speech"}, {}, 400, "video: this is an audio file, but the video slot needs a video of a person"),
    ({"audio": "video"}, {}, 400, "audio: audio file has no audio stream: 'portrait.mp4'"),
    ({"video": None}, {}, 400, "video is required: send the video as a file field named video"),
    ({"audio": "too_big"}, {}, 413, f"audio: the speech file is larger than the limit of {MAX_UPLOAD_MB} MB"),
    ({}, {"mouth": "1"}, 400, "unknown form field 'mouth': the fields are audio, video, engine, code, loop_mode"),
    ({}, {"mouth_intensity": "5"}, 400, "mouth_intensity must be a number from 0 to 2, got 5"),
    ({}, {"loop_mode": "sideways"}, 400, "loop_mode must be one of pingpong, loop, got 'sideways'"),
    ({}, {"engine": "os:system"}, 400, "engine must be one of meshwarp, wav2lip"),
    ({}, {"engine": "wav2lip", "speech_language": "en"}, 400, "speech_language is not an option of the wav2lip engine"),
    ({}, {"code": "../../evil"}, 400, "task code '../../evil' is invalid"),
])
def test_a_refused_upload_says_why_and_leaves_nothing(server: ServerProcess, client: httpx.Client,
                                                      files: dict[str, Path], parts: dict[str, str | None],
                                                      fields: dict[str, str], status: int, message: str) -> None:
    before = stored_files(server)
    answer = upload(client, files, fields, **parts)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert stored_files(server) == before


def test_malformed_submissions_are_refused_with_their_reason(server: ServerProcess, client: httpx.Client,
                                                             files: dict[str, Path]) -> None:
    before = stored_files(server)
    as_json = client.post("/api/v1/tasks", json={"audio": "speech.wav"})
    assert as_json.status_code == 415 and "multipart/form-data" in as_json.json()["error"]
    as_text = client.post("/api/v1/tasks", files={"video": ("v.mp4", files["video"].read_bytes())},
                          data={"audio": "speech.wav"})
    assert as_text.json()["error"] == "audio must be a file (a form field with a filename), not text"
    as_file = client.post("/api/v1/tasks", files={"loop_mode": ("mode.txt", b"loop")})
    assert as_file.json()["error"] == "loop_mode must be a text field, not a file"
    speech = ("speech.wav", files["speech"].read_bytes())
    twice = client.post("/api/v1/tasks", files=[("audio", speech), ("audio", speech)])
    assert twice.json()["error"] == "form field audio is sent twice"
    garbage = client.post("/api/v1/tasks", content=b"\x00" * 5000,
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert garbage.status_code == 400
    assert stored_files(server) == before


def raw_upload(server: ServerProcess, declared: int, sent: bytes) -> socket.socket:
    """A multipart upload over a plain socket that declares `declared` bytes and sends `sent` of them."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
                       + f"Content-Length: {declared}\r\n\r\n".encode() + sent)
    return connection


def test_an_upload_declared_too_large_is_refused_before_its_body(server: ServerProcess) -> None:
    with raw_upload(server, 3 * MAX_UPLOAD_MB * 10**6, b"") as connection:
        pieces = list(iter(lambda: connection.recv(4096), b""))  # until the server closes the connection
    answer = b"".join(pieces).decode()
    assert answer.startswith("HTTP/1.1 413") and f"two files of at most {MAX_UPLOAD_MB} MB" in answer


def test_an_upload_cut_off_midway_leaves_no_file(server: ServerProcess, files: dict[str, Path]) -> None:
    before = stored_files(server)
    speech = files["speech"].read_bytes()
    head = (b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"speech.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n")
    connection = raw_upload(server, len(head) + 2 * len(speech), head + speech[: len(speech) // 2])
    incoming = server.data_dir / "uploads" / "incoming"
    wait_until(lambda: any(incoming.glob("*")), 30, "the server to write the upload's file")
    connection.close()  # the client goes away in the middle of the file
    wait_until(lambda: stored_files(server) == before, 30, "the half-sent upload's file to be removed")


def test_shutdown_ends_open_event_streams_at_once(server: ServerProcess, client: httpx.Client,
                                                  files: dict[str, Path]) -> None:
    """Last: it stops the module's server. With a 60 s shutdown grace, the server is gone well before that."""
    code = upload(client, files, audio="long").json()["code"]
    lines: list[str] = []
    with client.stream("GET", f"/api/v1/tasks/{code}/events",
                       timeout=httpx.Timeout(10, read=SHUTDOWN_GRACE_S)) as stream:
        received = stream.iter_lines()
        for line in received:
            lines.append(line)
            if line.startswith("data:") and json.loads(line[5:])["state"] == "running":
                break
        assert server.process is not None
        server.process.terminate()
        lines.extend(received)  # ends when the server ends the stream
    assert ": the server is stopping" in lines
    # uvicorn ends by re-raising the signal (-15); stop() fails after STOP_TIMEOUT_S (40 s), less than the grace.
    assert server.stop() == -signal.SIGTERM
