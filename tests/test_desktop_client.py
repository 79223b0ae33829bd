"""Issue 9: HeyGem.ai / Duix.Avatar's desktop client, replayed from its source, finishes videos against us.

The client's logic is in tests/desktop_client.py, which quotes what it replays and where it was read. The server
is started as the README tells a user to: `python app.py --heygem-client`, here with a home folder of its own that
holds the client's folder ~/duix_avatar_data/face2face/temp. One server serves the whole module, in order: English
first, then a restart into Chinese (easy.language: zh), which must keep every earlier answer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from heygem.desktop_client import find_client_folder
from tests.desktop_client import (
    FFPROBE,
    DesktopClient,
    JSTypeError,
    Query,
    Video,
    js_number_is,
    node_path_join,
    parse_ffprobe_output,
)
from tests.server_process import ServerProcess
from tests.studio_server import client_media

pytestmark = pytest.mark.server

FRAME_S = 1 / 25  # the test video's frame: the result's length is a whole number of frames


def has_chinese(text: Any) -> bool:
    return isinstance(text, str) and any("\u4e00" <= char <= "\u9fff" for char in text)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's home folder where the desktop client has run: its shared folder exists."""
    home = tmp_path_factory.mktemp("home")
    (home / "duix_avatar_data" / "face2face" / "temp").mkdir(parents=True)
    return home


@pytest.fixture(scope="module")
def shared(home: Path) -> Path:
    """config.js: path.join(os.homedir(), 'duix_avatar_data', 'face2face', 'temp')."""
    return Path(node_path_join(str(home), "duix_avatar_data", "face2face", "temp"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator[ServerProcess]:
    if not FFPROBE.exists():
        pytest.skip(f"{FFPROBE} is missing: the client reads results with ffprobe (make test installs Debian's ffmpeg)")
    with ServerProcess(tmp_path_factory.mktemp("desktop-client"), args=["--heygem-client"], HOME=str(home),
                       HEYGEM_SUPERVISOR__MAX_WORKERS=1) as server:
        yield server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return client_media(tmp_path_factory.mktemp("desktop-client-media"))


def ffprobe_seconds(path: Path) -> float:
    run = subprocess.run([str(FFPROBE), "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True)
    return float(run.stdout)


def replay(server: ServerProcess, shared: Path, video: Path, speech: Path) -> tuple[DesktopClient, Video]:
    """The client is running (its poll loop too) when the person adds a model and asks for a video."""
    client = DesktopClient(server.url, shared).start()
    try:
        made = client.make_video(client.add_model(video), speech)
        client.wait_finished(made)
    finally:
        client.stop()
    assert client.loop_error is None
    return client, made


@pytest.fixture(scope="module")
def made_video(server: ServerProcess, shared: Path, media: dict[str, Path]) -> tuple[DesktopClient, Video]:
    """The stock client's video of the module, made in English; later tests read it back (any -k selection)."""
    return replay(server, shared, media["video"], media["speech"])


@pytest.fixture(scope="module")
def faceless_video(server: ServerProcess, shared: Path, media: dict[str, Path]) -> tuple[DesktopClient, Video]:
    """The client's video of a model video without a face, made in English."""
    return replay(server, shared, media["faceless"], media["speech"])


def answers_the_client_survives(queries: list[Query]) -> None:
    """Every answer of the loop: HTTP 200, an object with an integer code, `data` an object, never null."""
    for query in queries:
        body = query.body
        assert query.status_code == 200 and isinstance(body, dict), query
        assert type(body["code"]) is int and isinstance(body["data"], dict) and isinstance(body["msg"], str), query
        if js_number_is(body["code"], 10000):
            data = body["data"]
            assert type(data["status"]) is int and type(data["progress"]) is int and 0 <= data["progress"] <= 100
            assert isinstance(data["msg"], str) and data["msg"] and isinstance(data["result"], str), query


def null_queries(client: DesktopClient) -> list[Query]:
    return [query for query in client.queries if query.code == "null"]


def test_the_server_uses_the_client_s_folder_and_says_so(server: ServerProcess, shared: Path) -> None:
    assert f"HeyGem desktop client's shared folder: {shared}" in server.log_path.read_text()


def test_a_stock_client_finishes_a_video_and_shows_it(server: ServerProcess, shared: Path, media: dict[str, Path],
                                                       made_video: tuple[DesktopClient, Video]) -> None:
    client, video = made_video
    assert video.status == "success", video.shown
    code = str(video.code)
    # The client's own names went out: a time-stamped model video and the TTS service's <uuid>.wav.
    (param, status_code, answer), = client.submits
    assert re.fullmatch(r"[0-9]{17}\.mp4", param["video_url"]) and (shared / param["video_url"]).is_file()
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.wav", param["audio_url"])
    assert status_code == 200 and js_number_is(answer["code"], 10000), answer
    # While its speech was made, the client asked for ?code=null: "no such task", which it ignores.
    assert null_queries(client), "the replay never asked for ?code=null"
    for query in null_queries(client):
        assert query.body == {"code": 10004, "data": {}, "msg": "no task with code 'null'", "success": False}
    answers_the_client_survives(client.queries)
    # What the client shows: the result it found in its folder with ffprobe, as long as the speech.
    assert video.file_path == f"/{code}-r.mp4" and video.progress == 100
    assert type(video.duration) is float
    assert abs(video.duration - ffprobe_seconds(media["speech"])) <= FRAME_S, video.duration
    # One file under two names: the result in data_dir, and its hard link in the shared folder.
    assert (shared / f"{code}-r.mp4").stat().st_ino == (server.data_dir / "results" / f"{code}-r.mp4").stat().st_ino


def test_a_video_without_a_face_ends_failed_with_the_reason(shared: Path,
                                                            faceless_video: tuple[DesktopClient, Video]) -> None:
    client, video = faceless_video
    assert video.status == "failed", video.shown
    assert isinstance(video.message, str) and "no face found in the video" in video.message
    answers_the_client_survives(client.queries)
    assert not (shared / f"{video.code}-r.mp4").exists()


def test_codes_that_name_no_task_answer_10004(client: httpx.Client) -> None:
    for params in ({"code": "null"}, {"code": "3f2c9a1e-0000-4000-8000-000000000000"}, {"code": ""}, {}):
        answer = client.get("/easy/query", params=params)
        assert answer.status_code == 200 and answer.json()["code"] == 10004 and answer.json()["data"] == {}
    # A task of that name would answer in the place of the client's pending video.
    refused = client.post("/easy/submit", json={"audio_url": "a.wav", "video_url": "b.mp4", "code": "null"}).json()
    assert refused["code"] == 10002 and "reserved" in refused["msg"]


def test_after_a_restart_in_chinese_the_answers_stay_and_read_chinese(
        server: ServerProcess, shared: Path, client: httpx.Client, media: dict[str, Path],
        made_video: tuple[DesktopClient, Video], faceless_video: tuple[DesktopClient, Video]) -> None:
    made, faceless = str(made_video[1].code), str(faceless_video[1].code)
    server.settings["HEYGEM_EASY__LANGUAGE"] = "zh"
    server.restart()
    done = client.get("/easy/query", params={"code": made}).json()["data"]
    assert done["status"] == 2 and done["result"] == f"/{made}-r.mp4" and done["msg"] == "任务完成"
    failed = client.get("/easy/query", params={"code": faceless}).json()["data"]
    assert failed["status"] == 3 and failed["msg"].startswith("视频中未检测到人脸：")
    assert "no face found in the video" in failed["msg"]

    replayed, video = replay(server, shared, media["video"], media["speech"])
    assert video.status == "success" and video.message == "任务完成", video.shown
    answers_the_client_survives(replayed.queries)
    # Waiting or running (status 1): the submit's answer, and any query the loop made before the video was done.
    running = [replayed.submits[0][2]["data"]["msg"]] + [
        query.body["data"]["msg"] for query in replayed.queries
        if query.body["code"] == 10000 and query.body["data"]["status"] == 1]
    assert all(has_chinese(text) for text in running), running
    refused = client.post("/easy/submit", json={"audio_url": "absent.wav", "video_url": video.model_video}).json()
    assert refused["code"] == 10002 and refused["msg"].startswith("参数错误：audio_url: file not found")
    assert (shared / f"{video.code}-r.mp4").is_file()


def test_deleting_a_task_removes_the_result_and_its_shared_copy(server: ServerProcess, shared: Path,
                                                                client: httpx.Client,
                                                                made_video: tuple[DesktopClient, Video]) -> None:
    code = str(made_video[1].code)
    assert client.delete(f"/api/v1/tasks/{code}").json() == {"deleted": code}
    assert not (shared / f"{code}-r.mp4").exists()
    assert not (server.data_dir / "results" / f"{code}-r.mp4").exists()


JOIN_CASES = [
    ["/home/u/duix_avatar_data/face2face/temp", "/3f2c-r.mp4"],
    ["/home/u/duix_avatar_data/face2face/temp", "/srv/heygem/data/results/3f2c-r.mp4"],
    ["/a/b", "../c"], ["/a", "../../.."], ["/", ".."], ["..", "a"], ["a", "..", ".."], ["a/..", ""],
    ["a", "", "b/"], ["a/b/..", "/"], ["", ""], ["./a", "./b"], ["/a//b", "c/./d"], ["/a/b", ""],
]


def test_the_replay_joins_paths_as_node_does() -> None:
    """tests.desktop_client.node_path_join against Node's own path.join, where Node is installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed; the cases below hold Node's answers as well")
    script = "const path = require('path'); console.log(JSON.stringify(JSON.parse(process.argv[1])" \
             ".map((parts) => path.posix.join(...parts))))"
    run = subprocess.run([node, "-e", script, json.dumps(JOIN_CASES)], capture_output=True, text=True, check=True)
    assert [node_path_join(*parts) for parts in JOIN_CASES] == json.loads(run.stdout)
    assert subprocess.run([node, "-e", "require('path').join('/a', null)"], capture_output=True).returncode != 0
    with pytest.raises(JSTypeError):
        node_path_join("/a", None)


def test_the_replay_joins_the_results_the_way_that_matters() -> None:
    # A leading "/" does not restart at the root: our old absolute `result` led into the client's folder.
    assert node_path_join("/home/u/temp", "/3f2c-r.mp4") == "/home/u/temp/3f2c-r.mp4"
    assert node_path_join("/home/u/temp", "/srv/data/results/3f2c-r.mp4") == "/home/u/temp/srv/data/results/3f2c-r.mp4"


def test_the_replay_reads_ffprobe_output_as_fluent_ffmpeg_does() -> None:
    text = "[STREAM]\nindex=0\ncodec_name=h264\nduration=2.000000\nTAG:language=und\n[/STREAM]\n" \
           "[STREAM]\nindex=1\nduration=N/A\n[/STREAM]\n[FORMAT]\nduration=2.021000\n[/FORMAT]\n"
    parsed = parse_ffprobe_output(text)
    assert parsed["streams"] == [{"index": 0, "codec_name": "h264", "duration": 2.0, "TAG:language": "und"},
                                 {"index": 1, "duration": "N/A"}]
    assert parsed["format"] == {"duration": 2.021}


@pytest.mark.parametrize(("present", "chosen"), [
    (["home/duix_avatar_data"], "home/duix_avatar_data"),
    (["home/heygem_data"], "home/heygem_data"),
    (["home/heygem_data", "home/duix_avatar_data"], "home/duix_avatar_data"),
    (["d/duix_avatar_data"], "d/duix_avatar_data"),
    (["d/heygem_data", "home/heygem_data"], "home/heygem_data"),
])
def test_heygem_client_picks_the_client_s_folder_that_exists(tmp_path: Path, present: list[str],
                                                             chosen: str) -> None:
    for root in present:
        (tmp_path / root / "face2face" / "temp").mkdir(parents=True)
    found = find_client_folder(home=tmp_path / "home", drive_d=tmp_path / "d")
    assert found.path == tmp_path / chosen / "face2face" / "temp"
    assert str(found.path) in found.note
    for other in set(present) - {chosen}:
        assert str(tmp_path / other / "face2face" / "temp") in found.note


def test_heygem_client_creates_the_newest_client_s_folder_when_none_exists(tmp_path: Path) -> None:
    found = find_client_folder(home=tmp_path / "home", drive_d=tmp_path / "d")
    assert found.path == tmp_path / "home" / "duix_avatar_data" / "face2face" / "temp" and found.path.is_dir()
    assert "created" in found.note and "heygem_data" in found.note
