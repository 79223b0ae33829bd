"""Request bodies are read whole before any route sees them: capped in size and in time, then checked.

Calls of the studio page (Gradio's /gradio_api/ routes) have a cap of their own, server.max_call_kb: their values
wait in Gradio's queue, and the page's own calls are a few KB.

Uploads are exempt: the page's (Gradio streams them to disk and enforces server.max_upload_mb itself, as
mount_gradio_app's max_file_size) and the API's multipart submit (heygem.api.submit streams them to disk with the
same cap). Each holds a connection and a file while it arrives, so only server.max_concurrent_uploads are received
at once (UploadSlots); the HTTP protocol (heygem.api.slow_clients) bounds their pauses and their whole time.

Whatever a route does, a process out of file descriptors answers 503, never a 500 (PlainFailures).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Awaitable, Callable

import anyio
from loguru import logger
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Gradio's own routes: the page's calls, its uploads and its files.
GRADIO_API = "/gradio_api/"
# Routes whose bodies are uploads, streamed to disk by the route itself.
UPLOAD_PATHS = frozenset({"/gradio_api/upload", "/api/v1/tasks"})
# ASCII digits only (str.isdigit() takes '²'), and few enough for int().
CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")
# Seconds a client refused for want of a free upload slot or file descriptor is asked to wait (Retry-After).
RETRY_AFTER_S = 5

# Inspects a request's whole body before the app gets it; a response refuses the request, None lets it through.
BodyCheck = Callable[[Scope, bytes], Awaitable[Response | None]]


class BodyTooLarge(Exception):
    """The body grew past the cap (a chunked body declares no length up front)."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, call_max_bytes: int, timeout_s: float,
                 check: BodyCheck | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.call_max_bytes = call_max_bytes
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
        is_call = scope["path"].startswith(GRADIO_API)
        max_bytes = self.call_max_bytes if is_call else self.max_bytes
        too_large = refuse(413, f"request body larger than {max_bytes // 1024} KB "
                                f"({'server.max_call_kb' if is_call else 'server.max_request_kb'})")
        if declared is not None and (not CONTENT_LENGTH.fullmatch(declared) or int(declared) > max_bytes):
            await too_large(scope, receive, send)
            return
        try:
            with anyio.fail_after(self.timeout_s):
                body = await read_body(receive, max_bytes)
        except BodyTooLarge:
            await too_large(scope, receive, send)
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


class UploadSlots:
    """At most `slots` uploads are received at once; one more is refused at once, before its body is read."""

    def __init__(self, app: ASGIApp, slots: int) -> None:
        self.app = app
        self.slots = slots
        self.receiving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in UPLOAD_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.receiving >= self.slots:
            await refuse(503, f"the server is receiving {self.slots} uploads already (server.max_concurrent_uploads); "
                              f"send this one again in a few seconds", retry_after_s=RETRY_AFTER_S)(
                scope, receive, send)
            return
        self.receiving += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.receiving -= 1


class PlainFailures:
    """Two failures that are no fault of the server's code, kept from the framework's bare 500 and its traceback:

    - a request that found the process out of file descriptors (EMFILE, ENFILE) is answered 503 with a Retry-After:
      the condition passes as other connections and uploads end;
    - a route that lost its client in the middle of the body (an upload cut by heygem.api.slow_clients, a client
      gone) ends quietly: there is nobody to answer.

    Installed in our app and in Gradio's (each has its own error middleware, which would answer 500 first)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except ClientDisconnect:
            if started:
                raise
        except OSError as exc:
            if started or exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            logger.error("out of file descriptors ({}) while answering {} {}: answered 503; raise the limit "
                         "(ulimit -n, systemd LimitNOFILE) or lower server.max_concurrent_uploads", exc.strerror,
                         scope["method"], scope["path"])
            await refuse(503, "the server has too many connections and files open at the moment; try again in a "
                              "few seconds", retry_after_s=RETRY_AFTER_S)(scope, receive, send)


def refuse(status_code: int, message: str, retry_after_s: int | None = None) -> Response:
    # The rest of a refused body is not worth reading: the connection closes after the answer.
    headers = {"Connection": "close"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


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
