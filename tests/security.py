"""What the security tests share: Gradio call bodies naming files, the route table, and a /healthz watch."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Mount

# The studio's "generate" inputs after the two files: engine, loop mode, mouth intensity, AI label, watermark,
# speech language.
GENERATE_OPTIONS = ["meshwarp", "pingpong", 1.0, False, False, "en"]
PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def file_data(path: str) -> dict[str, Any]:
    """A FileData as Gradio's clients send it: the server is meant to take the path from an upload."""
    return {"path": path, "orig_name": path.rsplit("/", 1)[-1], "meta": {"_type": "gradio.FileData"}}


def generate_inputs(audio_path: str, video_path: str | None = None) -> list[Any]:
    video = {"video": file_data(video_path), "subtitles": None} if video_path else None
    return [file_data(audio_path), video, *GENERATE_OPTIONS]


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app routes, mounted apps (the studio) included, path parameters filled in."""
    return sorted(set(_routes(app.routes, "")))


def _routes(routes: list[BaseRoute], prefix: str) -> Iterator[tuple[str, str]]:
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, Mount):
            yield from _routes(route.routes, prefix + route.path)
            continue
        path = PATH_PARAMETER.sub("x", prefix + (context.path or ""))
        for method in context.methods or ("GET",):
            yield method, path


class HealthWatch:
    """Polls /healthz from a thread while the block runs; every answer must come within `limit_s`."""

    def __init__(self, base_url: str, limit_s: float = 1.0, interval_s: float = 0.1) -> None:
        self.url = f"{base_url}/healthz"
        self.limit_s = limit_s
        self.interval_s = interval_s
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="healthz-watch", daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        with httpx.Client(timeout=self.limit_s) as client:
            while True:  # at least one poll, however short the block
                started = time.monotonic()
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    self.failures.append(f"no answer within {self.limit_s} s: {exc!r}")
                else:
                    if status != 200:
                        self.failures.append(f"HTTP {status} after {time.monotonic() - started:.2f} s")
                    self.answers += 1
                if self._stop.wait(self.interval_s):
                    return

    def assert_always_answered(self) -> None:
        assert self.answers > 0 and not self.failures, f"/healthz stalled: {self.failures}"
