"""Issue 8, the low findings, each replayed against `python app.py` in a subprocess.

The server polls its workers only every 30 s, so anything that reads a worker's stage from the last poll says
"init"; the stage in a message must come from the worker's live status instead.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from heygem.errors import InputError
from heygem.pipeline.media import VideoWriter
from heygem.supervisor.worker import describe_exception
from tests.media import ffmpeg
from tests.security import HealthWatch
from tests.server_process import ServerProcess
from tests.studio_server import make_speech, query, submit, wait_done, write_inputs
from tests.supervision import wait_until

pytestmark = pytest.mark.server

REQUEST_TIMEOUT_S = 2
# Long enough that a task is still rendering when the test acts on it (meshwarp renders ~10x faster than real time).
LONG_SPEECH, LONG_SPEECH_S = "long-speech.wav", 120.0
WAIT_S = 90.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("low")
    (root / "tmp").mkdir()
    server = ServerProcess(root, HEYGEM_SUPERVISOR__POLL_INTERVAL_S=30,
                           HEYGEM_SERVER__REQUEST_TIMEOUT_S=REQUEST_TIMEOUT_S, TMPDIR=root / "tmp")
    write_inputs(server.input_dir)
    make_speech(server.input_dir / LONG_SPEECH, LONG_SPEECH_S)
    with server:
        yield server


def wait_rendering(server: ServerProcess, client: httpx.Client, code: str) -> None:
    """Until the render has written frames. The store hears of it only at the next poll (30 s here), so the test
    watches the file the render grows: what the server then says must come from the worker, not a stale poll."""
    partial = server.data_dir / "temp" / code / f"{code}-r.partial.mp4"

    def rendering() -> bool:
        assert query(client, code)["data"]["status"] == 1, f"task {code} ended before it rendered"
        return partial.is_file() and partial.stat().st_size > 0

    wait_until(rendering, WAIT_S, f"task {code} to render frames", interval_s=0.2)


def wait_gone(path: Path) -> None:
    wait_until(lambda: not path.exists(), WAIT_S, f"{path} to be gone", interval_s=0.2)


def test_a_render_grows_out_of_sight_and_a_cancel_names_the_live_stage(server: ServerProcess,
                                                                       client: httpx.Client) -> None:
    code = submit(client, audio_url=LONG_SPEECH)["data"]["code"]
    wait_rendering(server, client, code)
    partial = server.data_dir / "temp" / code / f"{code}-r.partial.mp4"
    assert partial.is_file(), "the render grows in the task's work folder"
    assert list((server.data_dir / "results").iterdir()) == [], "nothing half-made in results/"
    assert client.get(f"/gradio_api/file={partial}").status_code in (403, 404), "the work folder is not served"
    cancelled = client.post("/easy/cancel", params={"code": code}).json()["data"]
    assert cancelled["status"] == 3
    assert cancelled["msg"].startswith("cancelled during stage rendering at "), cancelled
    wait_gone(partial.parent)


def test_a_killed_worker_names_the_live_stage(server: ServerProcess, client: httpx.Client) -> None:
    code = submit(client, audio_url=LONG_SPEECH)["data"]["code"]
    wait_rendering(server, client, code)
    os.kill(client.get(f"/api/v1/tasks/{code}").json()["worker_pid"], signal.SIGKILL)
    final = wait_done(client, code, WAIT_S)[-1]
    assert final["status"] == 3
    assert final["msg"].startswith("worker killed by signal 9 (SIGKILL)"), final
    assert "during stage rendering at " in final["msg"], final
    wait_gone(server.data_dir / "temp" / code)


def test_a_truncated_aac_fails_the_task_instead_of_cutting_the_speech_short(server: ServerProcess,
                                                                           client: httpx.Client) -> None:
    whole = server.input_dir / "whole.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "aac", "-b:a", "64k",
           "-movflags", "+faststart", str(whole))
    # A download cut off halfway: the header still says 2 s, half of the frames are gone.
    (server.input_dir / "truncated.m4a").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    answer = submit(client, audio_url="truncated.m4a")
    assert answer["code"] == 10000, answer
    final = wait_done(client, answer["data"]["code"], WAIT_S)[-1]
    assert final["status"] == 3
    assert final["msg"].startswith("reading inputs: audio file is damaged or truncated: only 0."), final
    assert "s of its 2.00 s decode: " in final["msg"] and final["msg"].endswith("-audio-truncated.m4a"), final


def test_bad_inputs_get_10002_naming_what_is_wrong(server: ServerProcess, client: httpx.Client) -> None:
    os.mkfifo(server.input_dir / "pipe.wav")
    (server.input_dir / "folder.wav").mkdir()
    cases = {"a" * 300: "audio_url: file has a name too long for the file system: 'aaaa",
             "pipe.wav": "audio_url: file is a named pipe (FIFO), not a regular file: 'pipe.wav'",
             "folder.wav": "audio_url: file is a folder, not a regular file: 'folder.wav'"}
    with HealthWatch(server.url):
        for audio_url, message in cases.items():
            answer = submit(client, audio_url=audio_url)
            assert answer["code"] == 10002 and answer["msg"].startswith(message), answer
            assert len(answer["msg"]) < 250, "a long value is not echoed whole"


def test_an_overlong_code_is_not_echoed_back_whole(client: httpx.Client) -> None:
    code = "c" * 3000
    refused = submit(client, code=code)
    assert refused["code"] == 10002 and "(3000 characters) is invalid" in refused["msg"]
    unknown = client.get("/easy/query", params={"code": code}).json()
    assert unknown["code"] == 10004 and "(3000 characters)" in unknown["msg"]
    assert max(len(refused["msg"]), len(unknown["msg"])) < 250


def test_odd_bodies_get_a_clear_refusal_never_a_bare_500(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only while reading
        for _ in range(40):
            yield b" " * 10_000

    chunked = client.post("/easy/submit", content=chunks())
    assert chunked.status_code == 413
    assert chunked.json() == {"error": "request body larger than 256 KB (server.max_request_kb)"}
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = client.post("/easy/submit", content=deep)
    assert nested.status_code == 200 and nested.json()["code"] == 10002 and "nested too deeply" in nested.json()["msg"]
    studio = client.post("/gradio_api/queue/join", content=deep[84_000:-84_000])  # under server.max_call_kb
    assert studio.status_code == 400 and studio.json() == {"error": "the body of a studio call must be a JSON document"}


def raw_request(server: ServerProcess, payload: bytes, pause_s: float, pieces: int) -> bytes:
    """Sends `payload` in `pieces` with pauses between them, then waits for the server to close the connection;
    returns what it sent first (b"" for nothing). A server that never closes fails it with socket.timeout: the
    trickles below never complete a request, so only the server's time limits end them."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10 * REQUEST_TIMEOUT_S) as connection:
        size = max(1, -(-len(payload) // pieces))
        received = b""
        try:
            for start in range(0, len(payload), size):
                connection.sendall(payload[start:start + size])
                time.sleep(pause_s)
            while chunk := connection.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):  # closed by the server while we were still sending
            pass
        return received


@pytest.mark.parametrize(("name", "payload", "pause_s", "pieces"), [
    ("silent", b"", 0.0, 1),
    ("headers never finished", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0.0, 1),
    ("headers a byte at a time", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 60, 0.5, 62),
    ("body stopped halfway", b"POST /easy/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{", 0.0, 1),
    ("body a byte at a time",
     b"POST /easy/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b" " * 40, 0.5, 44),
])
def test_slow_clients_are_cut_off_and_the_server_keeps_answering(server: ServerProcess, name: str, payload: bytes,
                                                                 pause_s: float, pieces: int) -> None:
    with HealthWatch(server.url) as health:
        received = raw_request(server, payload, pause_s, pieces)
    health.assert_always_answered()
    # Closed without a word, or with the body's time limit (408).
    assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received[:200]


def test_ffmpeg_errors_become_one_line_task_messages(tmp_path: Path) -> None:
    not_audio = tmp_path / "speech.wav"
    not_audio.write_text("not audio at all")
    writer = VideoWriter(tmp_path / "out.mp4", (64, 64), 25, not_audio, 1.0, "superfast", 23, "64k")
    with pytest.raises(RuntimeError) as failure:
        writer.close()
    assert "\n" in str(failure.value), "ffmpeg explains itself on several lines"
    message = describe_exception(failure.value, "finishing")
    assert message.startswith("finishing: EncoderError: ffmpeg failed to encode out.mp4: ") and "\n" not in message
    assert " | " in message
    assert describe_exception(InputError("a\n\n  b  \n"), "rendering") == "rendering: a | b"


def test_a_killed_app_leaves_no_partial_files_and_no_temp_folders(server: ServerProcess,
                                                                 client: httpx.Client) -> None:
    legacy = server.data_dir / "results" / ".old-task-r.partial.mp4"  # as version 0.1 left them
    legacy.write_bytes(b"half a video")
    assert (server.data_dir / "run" / "status-manager.sock").exists(), "the status Manager listens in run/"
    code = submit(client, audio_url=LONG_SPEECH)["data"]["code"]
    wait_rendering(server, client, code)
    assert server.process is not None
    server.process.kill()
    server.process.wait(30)
    server.start()
    interrupted = query(client, code)["data"]
    # The stage is the last one the store recorded: a dead app's live statuses are gone with it.
    assert interrupted["status"] == 3 and interrupted["msg"].startswith("interrupted: the service stopped"), interrupted
    assert not legacy.exists() and not (server.data_dir / "temp" / code).exists()
    assert not [path for path in (server.data_dir / "results").iterdir() if "partial" in path.name]
    assert list((server.root / "tmp").glob("pymp-*")) == [], "multiprocessing left nothing in the temp folder"
