"""POST /api/v1/tasks: a task from files sent with the request (multipart/form-data), from any machine.

File fields `audio` (the speech) and `video` (a person facing the camera) are required; text fields `engine`, `code`
and the task options (`loop_mode`, `mouth_intensity`, `ai_label`, `watermark`, `speech_language`, read by
TaskOptions.from_form) are
optional. The answer is 201 {"code", "state", "position"}: `position` is the task's place in the queue, null once
a worker has it.

The body is parsed as it arrives. Each file goes straight to disk, in <data_dir>/uploads/incoming/, a megabyte
at a time from a pool thread, never whole into memory, and at most server.max_upload_mb per file, the studio's
limit (heygem.api.limits exempts this route from the JSON API's cap); the whole body, chunked or not, may hold two
such files and the text fields, and must end with the form's closing boundary. Each file is then checked by its content
as the studio's are (heygem.intake) and moved into the uploads folder; the task is queued. A refused, oversized
or interrupted upload leaves no file: its files are removed before the answer, and whatever a crash left in
incoming/ goes at the next start (clear_incoming).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from heygem.api.context import ConfigDep, SupervisorDep
from heygem.api.limits import CONTENT_LENGTH, refuse
from heygem.config import Config
from heygem.engines.registry import DEFAULT_ENGINE, registered_engine
from heygem.errors import InputError, quote_input
from heygem.intake.media_check import SLOT_NAMES, Slot, check_media
from heygem.intake.uploads import new_upload_path
from heygem.options import TaskOptions
from heygem.supervisor import TaskSupervisor
from heygem.supervisor.states import TaskRequest, check_task_code

FILE_FIELDS: dict[str, Slot] = {"audio": "audio", "video": "video"}
TEXT_FIELDS = ("engine", "code", *TaskOptions.names())
MAX_TEXT_BYTES = 1024
# Room in a body for the text fields and the parts' headers, on top of the two files.
FORM_OVERHEAD_BYTES = 64 * 1024
# Bytes of a file gathered before one write in a pool thread.
WRITE_BYTES = 1 << 20

router = APIRouter(prefix="/api/v1/tasks", tags=["HeyGem studio"])


class Refusal(Exception):
    """The request is refused with this status and sentence (the rest of its body is not wanted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Part:
    name: str
    slot: Slot | None  # a file field's slot; None for a text field
    text: bytearray = dataclasses.field(default_factory=bytearray)
    path: Path | None = None  # where a file part is written (in incoming/)
    original_name: str = ""  # the file's name as the client sent it
    handle: IO[bytes] | None = None
    size: int = 0
    pending: list[bytes] = dataclasses.field(default_factory=list)
    pending_size: int = 0


class UploadForm:
    """One multipart body, parsed as it arrives: text fields are kept (and checked at once), files written.

    python-multipart calls back synchronously; the callbacks only note what happened, and `feed` then does the
    file work in pool threads, off the event loop.
    """

    def __init__(self, boundary: bytes, config: Config) -> None:
        self.config = config
        self.max_file_bytes = int(config.server.max_upload_mb * 1e6)
        self.texts: dict[str, str] = {}
        self.files: dict[str, Part] = {}
        self._parts: list[Part] = []
        self._events: list[tuple[str, bytes]] = []
        self._header = [b"", b""]
        self._disposition = b""
        self._complete = False  # the closing boundary arrived
        self._parser = MultipartParser(boundary, {
            "on_part_begin": lambda: self._note("begin"),
            "on_header_field": lambda data, start, end: self._header_piece(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._header_piece(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self._note("headers", self._disposition),
            "on_part_data": lambda data, start, end: self._note("data", data[start:end]),
            "on_part_end": lambda: self._note("end"),
            "on_end": self._close,
        })

    async def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise Refusal(400, f"the request body is not valid multipart/form-data ({exc})") from None
        events, self._events = self._events, []
        for kind, data in events:
            if kind == "headers":
                await self._begin_part(data)
            elif kind == "data":
                await self._add_data(data)
            elif kind == "end":
                await self._end_part()

    async def finish(self) -> None:
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise Refusal(400, f"the request body ends before its multipart form does ({exc})") from None
        if self._parts and self._parts[-1].handle is not None:
            raise Refusal(400, "the request body ends in the middle of a file")
        if not self._complete:  # a part cut off, or never closed: its field would be lost without a word
            raise Refusal(400, "the request body ends before its multipart form does: the closing boundary "
                               "(--<boundary>--) is missing")

    def discard(self) -> None:
        """Remove every file this form wrote (blocking: run it in a thread)."""
        for part in self._parts:
            if part.handle is not None:
                part.handle.close()
            if part.path is not None:
                part.path.unlink(missing_ok=True)

    def _close(self) -> None:
        self._complete = True

    def _note(self, kind: str, data: bytes = b"") -> None:
        self._events.append((kind, data))
        if kind == "begin":
            self._disposition = b""

    def _header_piece(self, index: int, piece: bytes) -> None:
        self._header[index] += piece  # python-multipart caps a header's size and a part's number of headers

    def _header_end(self) -> None:
        name, value = self._header
        if name.strip().lower() == b"content-disposition":
            self._disposition = value
        self._header = [b"", b""]

    async def _begin_part(self, disposition: bytes) -> None:
        kind, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if kind != b"form-data" or not name:
            raise Refusal(400, "every part of the body needs 'Content-Disposition: form-data; name=...'")
        if name not in FILE_FIELDS and name not in TEXT_FIELDS:
            raise Refusal(400, f"unknown form field {quote_input(name)}: the fields are "
                               f"{', '.join([*FILE_FIELDS, *TEXT_FIELDS])}")
        if any(part.name == name for part in self._parts):
            raise Refusal(400, f"form field {name} is sent twice")
        is_file = b"filename" in options
        slot = FILE_FIELDS.get(name)
        if slot is not None and not is_file:
            raise Refusal(400, f"{name} must be a file (a form field with a filename), not text")
        if slot is None and is_file:
            raise Refusal(400, f"{name} must be a text field, not a file")
        part = Part(name=name, slot=slot)
        self._parts.append(part)
        if slot is not None:
            part.original_name = options[b"filename"].decode("utf-8", errors="replace")
            part.path, part.handle = await anyio.to_thread.run_sync(self._create, slot, part.original_name)

    async def _add_data(self, data: bytes) -> None:
        part = self._parts[-1]
        if part.slot is None:
            part.text += data
            if len(part.text) > MAX_TEXT_BYTES:
                raise Refusal(400, f"form field {part.name} is longer than {MAX_TEXT_BYTES} bytes")
            return
        part.size += len(data)
        if part.size > self.max_file_bytes:
            raise Refusal(413, f"{part.name}: the {SLOT_NAMES[part.slot]} file is larger than the limit of "
                               f"{self.config.server.max_upload_mb:g} MB (server.max_upload_mb)")
        part.pending.append(data)
        part.pending_size += len(data)
        if part.pending_size >= WRITE_BYTES:
            await self._flush(part)

    async def _end_part(self) -> None:
        part = self._parts[-1]
        if part.slot is None:
            try:
                text = part.text.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise Refusal(400, f"form field {part.name} is not UTF-8 text") from None
            check_text_field(part.name, text)
            self.texts[part.name] = text
            return
        await self._flush(part)
        handle, part.handle = part.handle, None
        assert handle is not None
        await anyio.to_thread.run_sync(handle.close)
        self.files[part.name] = part

    async def _flush(self, part: Part) -> None:
        data, part.pending, part.pending_size = b"".join(part.pending), [], 0
        assert part.handle is not None
        await anyio.to_thread.run_sync(part.handle.write, data)

    def _create(self, slot: Slot, original_name: str) -> tuple[Path, IO[bytes]]:
        """A new file in incoming/, under the name it will have in the uploads folder."""
        path = incoming_dir(self.config) / new_upload_path(self.config, slot, original_name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, path.open("xb")


def check_text_field(name: str, text: str) -> None:
    """A text field's value, checked as soon as it arrives: a bad one is refused before any file is sent."""
    if not text:  # an empty field is no choice: the default
        return
    try:
        if name == "code":
            check_task_code(text)
        elif name == "engine":
            registered_engine(text)
        else:
            TaskOptions.from_form({name: text})
    except InputError as exc:
        raise Refusal(400, str(exc)) from None


def incoming_dir(config: Config) -> Path:
    return config.paths.uploads_dir / "incoming"


def clear_incoming(config: Config) -> None:
    """At start: files a crash left behind in the middle of an upload."""
    shutil.rmtree(incoming_dir(config), ignore_errors=True)


@router.post("", status_code=201)
async def submit_task(request: Request, supervisor: SupervisorDep, config: ConfigDep) -> Response:
    max_body = 2 * int(config.server.max_upload_mb * 1e6) + FORM_OVERHEAD_BYTES
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        return refuse(415, "send the task as multipart/form-data with file fields audio and video (HeyGem's "
                           "/easy/submit takes paths as JSON)")
    declared = request.headers.get("content-length", "")
    if CONTENT_LENGTH.fullmatch(declared) and int(declared) > max_body:
        return refuse(413, body_too_large(f"{int(declared) / 1e6:.0f} MB", max_body, config))
    try:
        form = UploadForm(options[b"boundary"], config)
    except FormParserError as exc:  # a boundary longer than multipart allows
        return refuse(400, f"the multipart boundary of the request is unusable ({exc})")
    body = Body(request, max_body, config)
    try:
        async for chunk in body.chunks():
            await form.feed(chunk)
        await form.finish()
        # Probing the files, moving them and queueing the task block: a pool thread does it.
        return await anyio.to_thread.run_sync(queue_task, form, supervisor, config)
    except Refusal as refusal:
        await anyio.to_thread.run_sync(form.discard)
        await body.drain()
        return refuse(refusal.status, str(refusal))
    except ClientDisconnect:  # nobody is left to answer; this one is never read
        await anyio.to_thread.run_sync(form.discard)
        return refuse(400, "the client went away in the middle of the upload")
    except BaseException:  # a refusal of the supervisor (answered by the app), or the server stopping
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(form.discard)
        raise


def queue_task(form: UploadForm, supervisor: TaskSupervisor, config: Config) -> JSONResponse:
    """Check the received files as the studio does, move them into the uploads folder and queue the task."""
    for field, slot in FILE_FIELDS.items():
        if field not in form.files:
            raise Refusal(400, f"{field} is required: send the {SLOT_NAMES[slot]} as a file field named {field}")
    for field, part in form.files.items():
        assert part.path is not None and part.slot is not None
        try:
            check_media(part.path, part.slot, config)
        except InputError as exc:  # it names the file: by the name the client gave it
            message = str(exc).replace(part.path.name, quote_input(part.original_name))
            raise Refusal(400, f"{field}: {message}") from None
    stored: dict[str, Path] = {}
    try:
        for field, part in form.files.items():
            assert part.path is not None
            stored[field] = config.paths.uploads_dir / part.path.name
            os.replace(part.path, stored[field])
        texts = form.texts
        code = supervisor.submit(TaskRequest(
            audio_path=stored["audio"], video_path=stored["video"], engine=texts.get("engine") or DEFAULT_ENGINE,
            options=TaskOptions.from_form(texts), code=texts.get("code") or None))
    except BaseException:
        for path in stored.values():
            path.unlink(missing_ok=True)
        raise
    record = supervisor.status(code)
    return JSONResponse({"code": code, "state": record.state.value, "position": record.queue_position},
                        status_code=201, headers={"Location": f"/api/v1/tasks/{code}"})


def body_too_large(size: str, max_body: int, config: Config) -> str:
    return (f"the request body is {size}; two files of at most {config.server.max_upload_mb:g} MB "
            f"(server.max_upload_mb) and the text fields fit in {max_body / 1e6:.0f} MB")


class Body:
    """A request's body as it arrives, piece by piece, up to `max_bytes`: a chunked body declares no length, and
    python-multipart skips whatever comes before the first boundary or after the last one without a limit."""

    def __init__(self, request: Request, max_bytes: int, config: Config) -> None:
        self.receive = request.receive
        self.max_bytes = max_bytes
        self.config = config
        self.received = 0
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            self.complete = not message.get("more_body", False)
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if self.received > self.max_bytes:
                raise Refusal(413, body_too_large(f"more than {self.max_bytes / 1e6:.0f} MB", self.max_bytes,
                                                  self.config))
            yield chunk

    async def drain(self) -> None:
        """Read (and drop) the rest of a refused body, up to the body limit, so that the client is there to read the
        answer: a server that closes while the client still sends makes most clients report a broken connection."""
        try:
            async for _ in self.chunks():
                pass
        except (ClientDisconnect, Refusal):
            return
