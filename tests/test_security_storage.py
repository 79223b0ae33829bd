"""Issue 17, finding 7: the disk. Against `python app.py` in a subprocess, restarted as an operator would.

- storage.keep_days: a finished task whose end is older than that is deleted with its uploads when the server
  starts (and hourly); a recent one stays.
- storage.min_free_mb: below it, every upload route refuses new files with one sentence (here forced with a
  threshold no disk meets).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from heygem.config import load_config
from tests.server_process import ServerProcess
from tests.studio_server import write_inputs
from tests.supervision import wait_until

pytestmark = pytest.mark.server

WAIT_S = 60
NO_ROOM = "the server's disk is nearly full"
DAY_S = 86400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("storage"), HEYGEM_STORAGE__KEEP_DAYS=1)
    write_inputs(server.input_dir)
    with server:
        yield server


def cancelled_task(client: httpx.Client, code: str) -> None:
    answer = client.post("/easy/submit", json={"audio_url": "speech.wav", "video_url": "portrait.mp4", "code": code})
    assert answer.json()["code"] == 10000, answer.json()
    client.post(f"/api/v1/tasks/{code}/cancel")
    wait_until(lambda: client.get(f"/api/v1/tasks/{code}").json()["state"] == "cancelled", WAIT_S, f"{code} cancelled")


def test_finished_tasks_older_than_keep_days_go_with_their_files_and_full_disks_take_no_uploads(
        server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
        cancelled_task(client, "old")
        cancelled_task(client, "recent")
    database = load_config(environ={}, overrides={"paths": {"data_dir": str(server.data_dir)}}).paths.db_path
    server.stop()
    with sqlite3.connect(database) as db:
        uploads = [Path(path) for row in db.execute("SELECT audio_path, video_path FROM tasks WHERE code = 'old'")
                   for path in row]
        db.execute("UPDATE tasks SET finished_at = ? WHERE code = 'old'", (time.time() - 2 * DAY_S,))
    assert all(path.is_file() for path in uploads)

    server.settings["HEYGEM_STORAGE__MIN_FREE_MB"] = str(10**12)  # a petabyte: no disk has that free
    server.start()
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
        wait_until(lambda: client.get("/api/v1/tasks/old").status_code == 404, WAIT_S, "the old task to be deleted")
        assert not any(path.exists() for path in uploads)
        assert client.get("/api/v1/tasks/recent").json()["state"] == "cancelled"

        speech, video = server.input_dir / "speech.wav", server.input_dir / "portrait.mp4"
        api = client.post("/api/v1/tasks", files={"audio": speech.open("rb"), "video": video.open("rb")})
        page_upload = client.post("/gradio_api/upload", files={"files": speech.open("rb")})
        for answer in (api, page_upload):
            assert answer.status_code == 507
            assert answer.json()["error"].startswith(NO_ROOM), answer.text
            assert "(storage.min_free_mb); it takes no new uploads until space is freed" in answer.json()["error"]
        easy = client.post("/easy/submit", json={"audio_url": "speech.wav", "video_url": "portrait.mp4"}).json()
        assert easy["code"] == 10001 and NO_ROOM in easy["msg"], easy
        with pytest.raises(httpx.HTTPStatusError, match="507"):
            Client(server.url, verbose=False).predict(handle_file(str(speech)), handle_file(str(video)),
                                                      api_name="/predict")
        assert [task["code"] for task in client.get("/api/v1/tasks").json()["tasks"]] == ["recent"]
