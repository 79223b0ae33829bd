"""The upload routes refuse a body at once, before reading it, when the disk is nearly full (HTTP 507)."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from heygem.api.limits import UPLOAD_PATHS, refuse
from heygem.config import Config
from heygem.errors import StorageFullError
from heygem.intake.disk_space import require_free_space


class FreeSpaceGate:
    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            try:
                await anyio.to_thread.run_sync(require_free_space, self.config)
            except StorageFullError as exc:
                await refuse(507, str(exc))(scope, receive, send)
                return
        await self.app(scope, receive, send)
