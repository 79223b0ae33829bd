"""What the studio and API tests share: lean real inputs, and polling a task over the HeyGem API."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.media import astronaut_video, faceless_video, speech_wav

CLIP_S = 2.0
JOB_TIMEOUT_S = 90.0


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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = query(client, code)
        assert answer["code"] == 10000, answer
        seen.append(answer["data"])
        if answer["data"]["status"] != 1:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"task {code} still running after {timeout_s} s: {seen[-1]}")
