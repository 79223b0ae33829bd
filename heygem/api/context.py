"""What every route needs from the running app: the config and the supervisor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from heygem.config import Config
from heygem.supervisor import TaskSupervisor


def get_config(request: Request) -> Config:
    return request.app.state.config


def get_supervisor(request: Request) -> TaskSupervisor:
    return request.app.state.supervisor


SupervisorDep = Annotated[TaskSupervisor, Depends(get_supervisor)]
ConfigDep = Annotated[Config, Depends(get_config)]
