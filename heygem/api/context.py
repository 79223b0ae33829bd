"""What every route needs from the running app: the config, the supervisor, and the token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from heygem.config import Config
from heygem.supervisor import TaskSupervisor


class Unauthorized(Exception):
    """The API token is required and was missing or wrong."""


def get_config(request: Request) -> Config:
    return request.app.state.config


def get_supervisor(request: Request) -> TaskSupervisor:
    return request.app.state.supervisor


def require_token(request: Request) -> None:
    expected = get_config(request).server.api_token
    if not expected:
        return
    if not hmac.compare_digest(presented_token(request).encode(), expected.encode()):
        raise Unauthorized("this server requires an API token: send 'Authorization: Bearer <token>' "
                           "or 'X-API-Token: <token>'")


def presented_token(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return request.headers.get("x-api-token", "")


SupervisorDep = Annotated[TaskSupervisor, Depends(get_supervisor)]
ConfigDep = Annotated[Config, Depends(get_config)]
