"""Issue 17, findings 1, 2 and 8: media is a language too, replayed against `python app.py` in a subprocess.

- A playlist or concat list names other files: uploaded as speech, an HLS playlist made a task render a private
  recording. Every way in (the JSON API's upload, Gradio's /predict, /easy/submit, the CLI) refuses it by the
  demuxer's own verdict, with a sentence that says what it is.
- A 1.5 KB H.264 file declaring 16000x16000 frames grew the server by 600 MB per upload while it was probed. Now it
  is refused by its declared size before a frame is decoded, and probes run two at a time: the server's memory is
  measured under six such uploads at once.
- /gradio_api/file=<URL> made the server fetch the URL. Now it is refused before any connection is made.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from heygem.api.gradio_files import NO_URLS
from heygem.cli import main
from tests.media import ffmpeg, frame_size_bomb
from tests.server_process import ServerProcess
from tests.studio_server import make_speech, write_inputs

pytestmark = pytest.mark.server

BOMB_SIDE = 16000
BOMB_UPLOADS = 6
# Six bombs at once, two probes at a time (server.max_concurrent_probes), each refused before a frame is decoded:
# measured about 0.17 GB over the idle server; before, six grew it by 3.4 GB.
MAX_GROWTH_MB = 400
REQUEST_TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def earlier_tasks(server: ServerProcess) -> set[str]:
    """Writes the module's inputs into the shared server's input folder; returns the codes of the tasks that other
    modules left there."""
    write_inputs(server.input_dir)
    return {task["code"] for task in httpx.get(f"{server.url}/api/v1/tasks").json()["tasks"]}


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def private_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording outside every folder the server reads from (MP3: a kind HLS reads as a segment)."""
    folder = tmp_path_factory.mktemp("private")
    ffmpeg("-i", str(make_speech(folder / "memo.wav", 2.0)), str(folder / "memo.mp3"))
    return folder / "memo.mp3"


def hls_playlist(private: Path) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{private}\n#EXT-X-ENDLIST\n".encode()


# (file name, content maker, what the refusal says). The .mp3-named playlist: libavformat's HLS demuxer claims only
# .m3u8/.m3u names, and no other demuxer reads it; the refusal still names it for what it is.
HOSTILE = [
    ("memo.m3u8", hls_playlist, "audio file is an HLS playlist, which names other files"),
    ("memo.mp3", hls_playlist, "audio file is an HLS playlist, which names other files"),
    ("memo.ffconcat", lambda private: f"ffconcat version 1.0\nfile '{private}'\n".encode(),
     "audio file is a concat list, which names other files"),
]


@pytest.mark.parametrize(("name", "content", "message"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_a_file_naming_other_files_is_refused_at_every_way_in(
        server: ServerProcess, client: httpx.Client, private_speech: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], earlier_tasks: set[str], name: str,
        content: object, message: str) -> None:
    hostile = server.input_dir / name
    hostile.write_bytes(content(private_speech))  # type: ignore[operator]
    video = server.input_dir / "portrait.mp4"

    api = client.post("/api/v1/tasks", files={"audio": (name, hostile.read_bytes()),
                                              "video": ("portrait.mp4", video.read_bytes())})
    assert api.status_code == 400, api.text
    assert api.json()["error"].startswith(f"audio: {message}: '{name}'"), api.text

    easy = client.post("/easy/submit", json={"audio_url": name, "video_url": "portrait.mp4", "code": f"e-{name}"})
    assert easy.json()["code"] == 10002 and message in easy.json()["msg"], easy.json()

    with pytest.raises(AppError, match=re.escape(message)):
        Client(server.url, verbose=False).predict(handle_file(str(hostile)), handle_file(str(video)),
                                                  api_name="/predict")

    # The CLI runs the pipeline in this process, as a worker does: the same rule, with no intake in front.
    assert main(["generate", "--audio", str(hostile), "--video", str(video), "--out", str(tmp_path / "out.mp4")]) == 2
    assert f"error: {message}: {name}" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()
    # Nothing this module sends is ever accepted.
    assert {task["code"] for task in client.get("/api/v1/tasks").json()["tasks"]} == earlier_tasks


def test_a_playlist_in_the_video_slot_is_refused_as_one(client: httpx.Client, server: ServerProcess,
                                                        private_speech: Path) -> None:
    speech = (server.input_dir / "speech.wav").read_bytes()
    answer = client.post("/api/v1/tasks", files={"audio": ("speech.wav", speech),
                                                 "video": ("clip.m3u8", hls_playlist(private_speech))})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("video: video file is an HLS playlist, which names other files")
    assert "this server reads MP4/MOV/M4V/3GP, MKV/WebM, AVI, WMV/ASF" in answer.json()["error"]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the status Manager, workers), in MB."""
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # it ended meanwhile
            continue
        total_kb += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        pending += [int(child) for child in children]
    return total_kb / 1024


def test_frame_size_bombs_are_refused_by_their_declared_size_within_a_memory_ceiling(
        server: ServerProcess, client: httpx.Client, tmp_path: Path) -> None:
    bomb = frame_size_bomb(tmp_path / "bomb.mp4", BOMB_SIDE)
    assert bomb.stat().st_size < 4096
    speech = (server.input_dir / "speech.wav").read_bytes()
    assert server.process is not None
    baseline = tree_rss_mb(server.process.pid)
    peak = baseline
    flooding = threading.Event()

    def sample() -> None:
        nonlocal peak
        while flooding.is_set():
            peak = max(peak, tree_rss_mb(server.process.pid))  # type: ignore[union-attr]
            time.sleep(0.01)

    def upload(index: int) -> httpx.Response:
        return client.post("/api/v1/tasks", files={"audio": ("speech.wav", speech),
                                                   "video": (f"bomb{index}.mp4", bomb.read_bytes())})

    flooding.set()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(BOMB_UPLOADS) as pool:
            answers = list(pool.map(upload, range(BOMB_UPLOADS)))
    finally:
        flooding.clear()
        sampler.join()
    for index, answer in enumerate(answers):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == (f"video: video frames are {BOMB_SIDE}x{BOMB_SIDE} pixels; the limit is 4096 "
                                          f"pixels per side (media.max_input_side): 'bomb{index}.mp4'")
    print(f"server tree RSS: {baseline:.0f} MB idle, {peak:.0f} MB at most under {BOMB_UPLOADS} bombs")
    assert peak - baseline < MAX_GROWTH_MB


@pytest.mark.parametrize("route", ["/gradio_api/file=http://127.0.0.1:{port}/memo.wav",
                                   "/gradio_api/file=HTTPS://127.0.0.1:{port}/memo.wav",
                                   "/gradio_api/file/http://127.0.0.1:{port}/memo.wav",
                                   "/gradio_api/file=http%3A//127.0.0.1:{port}/memo.wav"])
def test_a_gradio_file_route_naming_a_url_is_refused_without_a_connection(client: httpx.Client, route: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = route.format(port=listener.getsockname()[1])
        for method in ("GET", "HEAD"):
            answer = client.request(method, url)
            assert answer.status_code == 403
            if method == "GET":
                assert answer.json() == {"error": NO_URLS}
        # Gradio would have connected before answering; a connection made later would be waiting here.
        assert select.select([listener], [], [], 0.5)[0] == [], "the server connected to the URL"
