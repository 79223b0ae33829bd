"""The studio page's sessions inside Gradio: capped, and freed once they go quiet.

For each session hash (a page load, a gradio_client, any queue/join naming a new one) Gradio 6.31 keeps a copy of
the page's component configs (`state_holder.session_data`, about 0.2 MB for the studio) and the messages its calls
produce until a stream reads them (`_queue.pending_messages_per_session`, `pending_event_ids_session`). It frees
none of them until 10,000 sessions (the state) or 2,000 (the messages) push the oldest out: joins that named new
sessions and never read their answers grew the server by 0.6 MB each, never given back after their calls ended.

Here the state is capped at server.page_sessions_max sessions (Gradio's own least-recently-used limit), and a sweep
frees every session that has no call waiting or running, no stream open (SessionStreams counts them), and has not
been used for server.page_session_idle_s. An open studio page calls every few seconds, so it is never swept; a
page coming back after that gets a fresh session, as after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from urllib.parse import parse_qs

import gradio as gr
from loguru import logger
from starlette.types import ASGIApp, Receive, Scope, Send

from heygem.api.limits import GRADIO_API

# Gradio's routes that stream a session's messages while they are open: the page's and gradio_client's.
HEARTBEAT = GRADIO_API + "heartbeat/"
QUEUE_DATA = GRADIO_API + "queue/data"
CALL = GRADIO_API + "call/"


class PageSessions:
    def __init__(self, page: gr.Blocks, idle_s: float) -> None:
        self.page = page
        self.idle_s = idle_s
        self.open_streams: Counter[str] = Counter()
        self._quiet_since: dict[str, float] = {}

    async def run(self) -> None:
        """Sweeps until cancelled (at the server's shutdown)."""
        while True:
            await asyncio.sleep(min(5.0, self.idle_s / 2))
            freed = self.sweep(time.time())
            if freed:
                logger.debug("freed the state and messages of {} idle page sessions", freed)

    def sweep(self, now: float) -> int:
        """Frees the sessions quiet for idle_s; on the event loop, where Gradio changes these tables."""
        queue = self.page._queue
        holder = self.page.state_holder
        busy = {event.session_hash for event in list(queue.event_ids_to_events.values())}
        busy.update(session for session, count in self.open_streams.items() if count)
        known = set(holder.session_data) | set(queue.pending_messages_per_session) | set(
            queue.pending_event_ids_session)
        freed = 0
        for session in known:
            if session in busy:
                self._quiet_since.pop(session, None)
                continue
            used = holder.time_last_used.get(session)
            quiet_since = max(self._quiet_since.setdefault(session, now), used.timestamp() if used else 0.0)
            if now - quiet_since >= self.idle_s:
                self.free(session)
                freed += 1
        for gone in set(self._quiet_since) - known:
            del self._quiet_since[gone]
        return freed

    def free(self, session: str) -> None:
        holder = self.page.state_holder
        holder.delete_state(session)  # runs the delete callbacks of gr.State values, as Gradio's own expiry does
        with holder.lock:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
        queue = self.page._queue
        queue.pending_messages_per_session.pop(session, None)
        queue.pending_event_ids_session.pop(session, None)
        self._quiet_since.pop(session, None)


class SessionStreams:
    """Counts the open streams of each session (PageSessions.open_streams): a session being listened to is in use."""

    def __init__(self, app: ASGIApp, sessions: PageSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = stream_session(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if session is None:
            await self.app(scope, receive, send)
            return
        streams = self.sessions.open_streams
        streams[session] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            streams[session] -= 1
            if not streams[session]:
                del streams[session]


def stream_session(scope: Scope) -> str | None:
    """The session (or, for /call/<api>/<event>, the event, which names the session of a call without one) whose
    messages a GET streams; None for other requests."""
    path: str = scope["path"]
    if path.startswith(HEARTBEAT):
        return path.removeprefix(HEARTBEAT)
    if path == QUEUE_DATA:
        return next(iter(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [])), None)
    if path.startswith(CALL):
        return path.rstrip("/").rpartition("/")[2]
    return None
