"""What the studio and API tests share: lean real inputs, and polling a task over the HeyGem API."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.media import astronaut_video, faceless_video, speech_wav
from tests.supervision import wait_until

if TYPE_CHECKING:
    from gradio_client import Client

CLIP_S = 2.0
JOB_TIMEOUT_S = 90.0
# Debian's chromium, for Playwright (executable_path), with what a headless test run needs of it.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# The studio's generate options, in the order of its /generate endpoint: engine, loop mode, mouth intensity, AI
# label, watermark.
OPTIONS = ("meshwarp", "pingpong", 1.0, True, False, "en")


def make_speech(path: Path, seconds: float) -> Path:
    return speech_wav(path, seconds, bursts=((0.2, 0.9), (1.2, 1.8)), breath=False)


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A 2 s speech and a 2 s small portrait video (the built-in engine needs a real face)."""
    folder.mkdir(parents=True, exist_ok=True)
    return make_speech(folder / "speech.wav", CLIP_S), astronaut_video(folder / "portrait.mp4", CLIP_S, size=(256, 256))


def client_media(folder: Path) -> dict[str, Path]:
    """write_inputs' speech and portrait, and a faceless video of the same length, by name."""
    speech, video = write_inputs(folder)
    return {"speech": speech, "video": video, "faceless": faceless_video(folder / "faceless.mp4", CLIP_S)}


def submit(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    """POST /easy/submit of the inputs write_inputs() made, with a fresh code; `fields` override any of it."""
    body = {"audio_url": "speech.wav", "video_url": "portrait.mp4", "code": str(uuid.uuid4()), **fields}
    answer = client.post("/easy/submit", json=body)
    assert answer.status_code == 200
    return answer.json()


def query(client: httpx.Client, code: str) -> dict[str, Any]:
    answer = client.get("/easy/query", params={"code": code})
    assert answer.status_code == 200
    return answer.json()


def wait_done(client: httpx.Client, code: str, timeout_s: float = JOB_TIMEOUT_S) -> list[dict[str, Any]]:
    """Poll like HeyGem's client does (faster) until the task ends; returns every `data` seen."""
    seen: list[dict[str, Any]] = []

    def ended() -> bool:
        answer = query(client, code)
        assert answer["code"] == 10000, answer
        seen.append(answer["data"])
        return answer["data"]["status"] != 1

    wait_until(ended, timeout_s, f"task {code} to end (last seen: {seen[-1:]})", interval_s=0.25)
    return seen


def wait_for_result(client: Client, code: str) -> str:
    """The path of the task's result video, polled through the studio's /task_status like the page does."""

    def result() -> str | None:
        status, video, _, _ = client.predict(code, api_name="/task_status")
        assert "Failed" not in status, status
        return video if isinstance(video, str) else None

    return wait_until(result, JOB_TIMEOUT_S, f"the result of {code}", interval_s=0.3)
