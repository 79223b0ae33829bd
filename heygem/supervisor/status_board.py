"""The workers' live statuses as the supervisor reads them: the Manager process that serves their shared dict,
started with the supervisor, started again when it dies (workers reconnect), read at each poll."""

from __future__ import annotations

import time
from collections.abc import Mapping
from multiprocessing.context import SpawnContext
from multiprocessing.managers import DictProxy
from pathlib import Path

from loguru import logger

from heygem.supervisor.backends.base import ExecutionBackend
from heygem.supervisor.processes import serve_status_manager
from heygem.supervisor.protocol import CONNECTION_ERRORS, LiveStatus, StatusManager, write_manager_address


class StatusBoard:
    def __init__(self, backend: ExecutionBackend, context: SpawnContext, address_file: Path) -> None:
        self._backend = backend
        self._context = context
        # Where workers find the Manager (heygem.supervisor.protocol.write_manager_address).
        self.address_file = address_file
        self._manager: StatusManager | None = None
        self._statuses: DictProxy | None = None
        # When the Manager now serving started: a worker cannot have beaten into it before.
        self.started_at = 0.0

    def start(self) -> None:
        manager = StatusManager(address=self._backend.manager_address(), authkey=self._backend.manager_authkey(),
                                ctx=self._context)
        manager.start(initializer=serve_status_manager)
        self._manager = manager
        self._statuses = manager.statuses()  # type: ignore[attr-defined]
        self.started_at = time.time()
        address = manager.address
        assert isinstance(address, (str, tuple)), address  # a Unix socket path, or (host, port)
        self._backend.manager_started(address)
        write_manager_address(self.address_file, address)

    def read(self, known: Mapping[str, LiveStatus]) -> dict[str, LiveStatus]:
        """Every worker's status. A Manager that died is started again, given the `known` statuses (the live
        workers', as last read) to go on from; that read answers nothing new."""
        assert self._statuses is not None
        try:
            return self._statuses.copy()
        except CONNECTION_ERRORS:
            self._restart(known)
            return {}

    def latest(self, code: str, known: LiveStatus) -> LiveStatus:
        """One worker's status as it is now (between polls the supervisor's copy lags); `known` if unreadable."""
        try:
            if self._statuses is not None:
                return self._statuses.get(code, known)
        except CONNECTION_ERRORS:
            pass
        return known

    def forget(self, code: str) -> None:
        """The worker has ended."""
        try:
            if self._statuses is not None:
                self._statuses.pop(code, None)
        except CONNECTION_ERRORS:
            pass

    def shutdown(self) -> None:
        try:
            if self._manager is not None:
                self._manager.shutdown()
        except Exception as exc:  # it may be dead already
            logger.debug("Manager shutdown: {}", exc)

    def _restart(self, known: Mapping[str, LiveStatus]) -> None:
        logger.error("the status Manager process died; starting a new one (workers reconnect)")
        self.shutdown()
        self.start()
        assert self._statuses is not None
        for code, status in known.items():
            self._statuses[code] = status
