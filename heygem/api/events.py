"""GET /api/v1/tasks/{code}/events: a task's changes as Server-Sent Events, ending with its final state.

The first event is the task as it is now (a client that connects late, or again, starts from there); then one
event for every new version of its record in the store (a change of state, stage, progress, message, warning, node
or history) or of its place in the queue, each holding the whole task as GET /api/v1/tasks/{code} shows it; the
last one holds the final state, and the stream ends. The store is the only source, so within an attempt the events
never go back. Changes are read
every server.events_interval_s: changes closer together than that arrive as one event with the latest values.
A comment line goes out after server.events_heartbeat_s of silence, so that proxies keep the stream open.

The final event carries an id; a browser's EventSource reconnects after the stream ends and sends that id back as
Last-Event-ID, and is then answered 204, which tells it to stop. No thread is held for a stream: each look at
the task borrows one of a few pool threads for a moment. However many streams follow a task, it is looked at once
per interval: the streams wake at the same ticks of the clock, and the first to wake looks for them all
(TaskLook), so a crowd of streams costs the server little more than one. When the server begins to stop, every
stream ends at its next tick (EventStreamServer), instead of holding the shutdown for server.shutdown_grace_s.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from types import FrameType
from typing import Annotated, Any

import anyio
import uvicorn
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from heygem.api.context import ConfigDep, SupervisorDep
from heygem.api.tasks_view import task_json
from heygem.errors import TaskNotFoundError
from heygem.supervisor import TaskRecord, TaskSupervisor

# Looks at tasks run in these few threads, whatever the number of open streams; each takes milliseconds.
_LOOKS = anyio.CapacityLimiter(4)
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # the latter: nginx must not buffer the stream

router = APIRouter(prefix="/api/v1/tasks", tags=["HeyGem studio"])


class EventStreams:
    """What the open event streams of one app share: whether the server is stopping, and the latest look at each
    task that streams follow."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        self._looks: dict[str, TaskLook] = {}

    @contextlib.contextmanager
    def following(self, code: str) -> Iterator[TaskLook]:
        """The look at task `code` that a stream shares with the others that follow it, while it follows it."""
        look = self._looks.setdefault(code, TaskLook(code))
        look.followers += 1
        try:
            yield look
        finally:
            look.followers -= 1
            if not look.followers:
                del self._looks[code]


class TaskLook:
    """The latest look at one task, shared by the streams that follow it."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.followers = 0
        self._lock = anyio.Lock()
        self._tick = -1
        self._record: TaskRecord | None = None

    async def at(self, tick: int, supervisor: TaskSupervisor) -> TaskRecord | None:
        """The task as it was at `tick` or later (None: deleted); the first stream to ask at a tick looks."""
        async with self._lock:
            if self._tick < tick:
                try:
                    self._record = await anyio.to_thread.run_sync(supervisor.status, self.code, limiter=_LOOKS)
                except TaskNotFoundError:
                    self._record = None
                self._tick = tick
            return self._record


@router.get("/{code}/events")
async def task_events(code: str, request: Request, supervisor: SupervisorDep, config: ConfigDep,
                      last_event_id: Annotated[str, Header()] = "") -> Response:
    record = await anyio.to_thread.run_sync(supervisor.status, code, limiter=_LOOKS)  # 404 for an unknown code
    if record.state.is_final and last_event_id == end_id(record):
        return Response(status_code=204)  # this client has seen the end already
    streams: EventStreams = request.app.state.event_streams
    events = follow(supervisor, record, streams, config.server.events_interval_s, config.server.events_heartbeat_s)
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


async def follow(supervisor: TaskSupervisor, record: TaskRecord, streams: EventStreams, interval_s: float,
                 heartbeat_s: float) -> AsyncIterator[str]:
    """The task's events from `record` on: one per change, the final state last."""
    sent = change_key(record)
    yield event(record)
    quiet_since = time.monotonic()
    with streams.following(record.code) as look:
        while not record.state.is_final:
            tick = await next_tick(interval_s)
            if streams.closing.is_set():
                yield ": the server is stopping\n\n"
                return
            latest = await look.at(tick, supervisor)
            if latest is None:
                yield f"event: deleted\ndata: {json.dumps({'code': record.code})}\n\n"
                return
            record = latest
            if change_key(record) != sent:
                sent = change_key(record)
                quiet_since = time.monotonic()
                yield event(record)
            elif time.monotonic() - quiet_since >= heartbeat_s:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"


async def next_tick(interval_s: float) -> int:
    """Sleep until the clock's next multiple of `interval_s`, the same moment for every stream; returns its number."""
    tick = int(time.monotonic() // interval_s) + 1
    await anyio.sleep(tick * interval_s - time.monotonic())
    return tick


def change_key(record: TaskRecord) -> Hashable:
    """What an event is sent for: a new version of the task's record (every write to the store makes one), or a
    new place in the queue; times and estimates change on every look and are not changes of the task."""
    return record.version, record.queue_position


def event(record: TaskRecord) -> str:
    data: dict[str, Any] = task_json(record)
    lines = [f"data: {json.dumps(data)}"]
    if record.state.is_final:
        lines.insert(0, f"id: {end_id(record)}")
    return "\n".join(lines) + "\n\n"


def end_id(record: TaskRecord) -> str:
    """The id of a task's final event: a retried task ends again, with a new one."""
    return f"end-{record.attempts}"


class EventStreamServer(uvicorn.Server):
    """uvicorn's server, which tells the app's event streams to end as soon as a signal asks it to stop.

    uvicorn waits for open responses before it shuts the app down, and an event stream has no end of its own.
    """

    def __init__(self, config: uvicorn.Config, streams: EventStreams) -> None:
        super().__init__(config)
        self.streams = streams

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.streams.closing.set()
