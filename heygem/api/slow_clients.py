"""uvicorn's HTTP/1.1 protocol (h11) with the time limits it lacks, for `python app.py`.

uvicorn only times out idle keep-alive connections. A client that opens a connection and sends its headers a byte
at a time, or stops halfway through a body, would hold the connection (and, mid-body, the route waiting for it)
forever. Here a request's headers must be complete within the limit from its first byte (or from the connection's
opening), and a body may never pause longer than the limit. A body, an upload's included, must also be complete
within server.upload_timeout_s of its headers: a client that sends a byte now and then, never pausing long, would
otherwise hold its connection, the upload's file and its slot (heygem.api.limits.UploadSlots) for ever. It is
answered 408 and cut. Whole bodies of calls are also timed, more tightly, by heygem.api.limits.
"""

from __future__ import annotations

import asyncio
import json

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


def timed_protocol(timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to hand uvicorn (`http=`), with `timeout_s` (server.request_timeout_s) and `body_timeout_s`
    (server.upload_timeout_s) built in."""

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # the first request's headers are due from now

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._arm()  # each piece of a body restarts the pause limit
                if self._body_deadline is None:  # the whole body is due from its headers on
                    self._body_deadline = self.loop.call_later(body_timeout_s, self._body_expired)
            elif state is h11.IDLE:
                self._disarm_body()
                if self._deadline is None:
                    self._arm()  # a new request's headers began; they are due as a whole
            else:
                self._disarm()  # the request is complete; the answer takes as long as it takes
                self._disarm_body()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._disarm_body()
            super().connection_lost(exc)

        def _disarm_body(self) -> None:
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None

        def _body_expired(self) -> None:
            if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
                self._body_deadline = None
                return
            if self.flow.read_paused:  # we stopped reading (the app is busy), not the client: look again soon
                self._body_deadline = self.loop.call_later(1.0, self._body_expired)
                return
            self._body_deadline = None
            logger.info("client {} did not finish its request body within {:g} s (server.upload_timeout_s); cut",
                        self.client, body_timeout_s)
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.disconnected = True  # the app reads the end of the body, and its answer goes nowhere
                self._answer_timeout()
            self.transport.close()

        def _answer_timeout(self) -> None:
            message = json.dumps({"error": f"the request body did not arrive within {body_timeout_s:g} s "
                                           "(server.upload_timeout_s)"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(message)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                          h11.Data(data=message), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")

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
