"""The files the API serves (a task's result, the segments of its live stream), answered from a file opened first.

Starlette's FileResponse opens its path only when it sends the body: a task deleted in between (its files removed)
made that a 500, or an answer cut off after its headers. Here the route opens the file in its thread
(heygem.files.open_regular_file: a regular file, never through a link, never blocking on a FIFO) and answers 404 when
there is none; the answer then reads that open file, which stays whole whatever happens to its name. Starlette still
does the rest (Range, HEAD, ETag); it is pinned in requirements-base.txt because `_open_file` is its hook for the file
(uvicorn offers no `pathsend`, the one way Starlette sends a file by its name).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO

import anyio
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from heygem.hooks import PrivateHook

OPEN_FILE_HOOK = PrivateHook("starlette", "starlette.responses", "FileResponse", ("_open_file",),
                             "heygem/api/served_files.py", "requirements-base.txt")


class OpenFileResponse(FileResponse):
    """A FileResponse of a file the route has opened; it closes the file once answered."""

    def __init__(self, file: BinaryIO, media_type: str, headers: Mapping[str, str] | None = None,
                 filename: str | None = None) -> None:
        super().__init__(file.name, media_type=media_type, headers=headers, filename=filename,
                         stat_result=os.fstat(file.fileno()))
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()  # no disk work: the file was only read

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        yield anyio.wrap_file(self.file)  # already open; __call__ closes it
