"""Request bodies are read whole before any route sees them: capped in size and in time, then checked.

Uploads are exempt: the page's (Gradio streams them to disk and enforces server.max_upload_mb itself, as
mount_gradio_app's max_file_size) and the API's multipart submit (heygem.api.submit streams them to disk with the
same cap). The HTTP protocol's timeout (heygem.api.slow_clients) bounds their pauses.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import anyio
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Routes whose bodies are uploads, streamed to disk by the route itself.
UPLOAD_PATHS = frozenset({"/gradio_api/upload", "/api/v1/tasks"})
# ASCII digits only (str.isdigit() takes '²'), and few enough for int().
CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")

# Inspects a request's whole body before the app gets it; a response refuses the request, None lets it through.
BodyCheck = Callable[[Scope, bytes], Awaitable[Response | None]]


class BodyTooLarge(Exception):
    """The body grew past the cap (a chunked body declares no length up front)."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, check: BodyCheck | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:  # no body at all (GET, event streams)
            await self.app(scope, receive, send)
            return
        if declared is not None and (not CONTENT_LENGTH.fullmatch(declared) or int(declared) > self.max_bytes):
            await self.too_large()(scope, receive, send)
            return
        try:
            with anyio.fail_after(self.timeout_s):
                body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await self.too_large()(scope, receive, send)
            return
        except TimeoutError:
            await refuse(408, f"the request body did not arrive within {self.timeout_s:g} s "
                              "(server.request_timeout_s)")(scope, receive, send)
            return
        except ClientDisconnect:  # nobody left to answer
            return
        if self.check is not None:
            refusal = await self.check(scope, body)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, replay(body, receive), send)

    def too_large(self) -> Response:
        return refuse(413, f"request body larger than {self.max_bytes // 1024} KB (server.max_request_kb)")


def refuse(status_code: int, message: str) -> Response:
    # The rest of a refused body is not worth reading: the connection closes after the answer.
    return JSONResponse({"error": message}, status_code=status_code, headers={"Connection": "close"})


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """The app reads the body we already hold; after that, receive() waits for the disconnect as usual."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
