"""The studio's calls may name only files this server received through its upload route.

A Gradio call names files as FileData dicts ({"path": ..., "meta": {"_type": "gradio.FileData"}}), and Gradio
takes the path on trust: it hashes and copies the named file into its cache (which it serves), on the event loop,
before any handler of ours runs. So /etc/shadow would be copied and served, and /dev/zero or a FIFO would freeze
the server. Gradio's own check (`processing_utils._check_allowed`) is skipped in an app mounted with
`mount_gradio_app`, which never sets `blocks.has_launched` (heygem.server sets it, as a second line).

This check runs first, on the whole body (heygem.api.limits reads it): every "path" in a call under /gradio_api/
must resolve, symlinks followed, to a regular file inside Gradio's upload folder. Uploads land there, and so do
Gradio's copies of our results. Any other path, existing or not, gets the same answer, so the answer says nothing
about the server's files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
from loguru import logger
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from heygem.api.limits import GRADIO_API, refuse
from heygem.errors import quote_input
from heygem.files import is_regular_file

# Gradio's own payloads are a few levels deep; its file walk recurses, so deeper ones are refused up front.
MAX_DEPTH = 32
NOT_UPLOADED = ("a file named in this call did not come from this server's upload route; upload it first "
                "(POST /gradio_api/upload) and name the path that route returned")


class TooDeep(Exception):
    """The payload nests deeper than MAX_DEPTH."""


class GradioFileCheck:
    """A BodyCheck (see heygem.api.limits) for calls to Gradio's routes."""

    def __init__(self, upload_root: Path) -> None:
        self.upload_root = upload_root.resolve()

    async def __call__(self, scope: Scope, body: bytes) -> Response | None:
        if not scope["path"].startswith(GRADIO_API) or not body.strip():
            return None
        try:
            paths = named_paths(json.loads(body))
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands of levels deep
            return refuse(400, "the body of a studio call must be a JSON document")
        except TooDeep:
            return refuse(400, f"the body of a studio call nests more than {MAX_DEPTH} levels deep")
        if paths and not await anyio.to_thread.run_sync(self.all_uploaded, paths):
            return refuse(400, NOT_UPLOADED)
        return None

    def all_uploaded(self, paths: list[str]) -> bool:
        """Runs in a worker thread: realpath() and stat() touch the disk. Nothing here opens a file."""
        for path in paths:
            if not self.is_upload(path):
                logger.warning("a studio call named {}, which is not an upload; refused", quote_input(path))
                return False
        return True

    def is_upload(self, path: str) -> bool:
        try:
            real = Path(os.path.realpath(path))
        except ValueError:  # a NUL byte
            return False
        return real.is_relative_to(self.upload_root) and is_regular_file(real)


def named_paths(payload: Any) -> list[str]:
    """Every "path" string of every dict in the payload, at any depth (a FileData's meta is not trusted)."""
    paths: list[str] = []
    pending: list[tuple[Any, int]] = [(payload, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise TooDeep
        if isinstance(value, dict):
            if isinstance(value.get("path"), str):
                paths.append(value["path"])
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
    return paths


# Gradio's file routes fetch and relay any public http(s) URL named after "file=" (or "file/"); nothing turns that
# off, so the request is refused before Gradio sees it. Any "scheme://" is refused, whatever its case.
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")
NO_URLS = ("/gradio_api/file= serves only this server's own files (page uploads and results), never a URL: this "
           "server does not fetch URLs for anyone")


class LocalFilesOnly:
    """Refuses a Gradio file route that names a URL instead of a file (HTTP 403), before any connection is made."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        target = next((path[len(route):] for route in FILE_ROUTES if path.startswith(route)), None)
        if target is not None and URL_LIKE.match(target):
            logger.warning("a file route named a URL, {}; refused", quote_input(target))
            await refuse(403, NO_URLS)(scope, receive, send)
            return
        await self.app(scope, receive, send)
