"""uvicorn's HTTP/1.1 protocol (h11) with the time limits it lacks, for `python app.py`.

uvicorn only times out idle keep-alive connections. A client that opens a connection and sends its headers a byte
at a time, or stops halfway through a body, would hold the connection (and, mid-body, the route waiting for it)
forever. Here a request's headers must be complete within the limit from its first byte (or from the connection's
opening), and a body may never pause longer than the limit. Whole bodies of calls are also timed by
heygem.api.limits; uploads, which may take long, are only held to the pause limit.
"""

from __future__ import annotations

import asyncio

import h11
from loguru import logger
from uvicorn.protocols.http.h11_impl import H11Protocol

from heygem.hooks import PrivateHook

# What the protocol below reads of uvicorn's and h11's insides.
H11_HOOKS = (
    PrivateHook("uvicorn", "uvicorn.protocols.http.h11_impl", "H11Protocol",
                ("conn", "flow", "loop", "transport", "client", "connection_made", "data_received", "connection_lost"),
                "heygem/api/slow_clients.py", "requirements-base.txt"),
    PrivateHook("uvicorn", "uvicorn.protocols.http.flow_control", "FlowControl", ("read_paused",),
                "heygem/api/slow_clients.py", "requirements-base.txt"),
    PrivateHook("h11", "h11", "Connection", ("their_state",), "heygem/api/slow_clients.py", "requirements-base.txt"),
    PrivateHook("h11", "h11", "", ("SEND_BODY", "IDLE"), "heygem/api/slow_clients.py", "requirements-base.txt"),
)


def timed_protocol(timeout_s: float) -> type[H11Protocol]:
    """The protocol class to hand uvicorn (`http=`), with `timeout_s` (server.request_timeout_s) built in."""

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # the first request's headers are due from now

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._arm()  # each piece of a body restarts the pause limit
            elif state is h11.IDLE:
                if self._deadline is None:
                    self._arm()  # a new request's headers began; they are due as a whole
            else:
                self._disarm()  # the request is complete; the answer takes as long as it takes

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.flow.read_paused:  # we stopped reading (the app is busy), not the client
                self._arm()
                return
            if not self.transport.is_closing():
                logger.info("client {} sent no complete request within {:g} s (server.request_timeout_s); closing",
                            self.client, timeout_s)
                self.transport.close()

    return TimedH11Protocol
