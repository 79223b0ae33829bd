"""HeyGem.ai's synthesis API (/easy/*), so its existing clients work unchanged.

Every answer is HTTP 200 with {"code", "data", "msg", "success"}; the numeric code says what happened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.concurrency import run_in_threadpool

from heygem.api.context import ConfigDep, SupervisorDep
from heygem.api.tasks_view import heygem_data
from heygem.config import Config
from heygem.engines.registry import DEFAULT_ENGINE, ENGINES
from heygem.errors import InputError, QueueFullError, TaskNotFoundError
from heygem.intake.uploads import accept_api_input, discard_downloads
from heygem.options import TaskOptions
from heygem.supervisor import TaskSupervisor
from heygem.supervisor.states import TaskRequest, check_task_code

SUCCESS = 10000
BUSY = 10001
BAD_PARAMETER = 10002
NOT_FOUND = 10004
SYSTEM_ERROR = 9999

# True == 1 and False == 0, so these sets also hold the booleans.
TRUE_VALUES = {1, "1", "true", "True", "yes"}
FALSE_VALUES = {0, "0", "false", "False", "no", None, ""}

router = APIRouter(prefix="/easy", tags=["HeyGem compatible"])


def envelope(code: int, data: dict[str, Any] | None = None, msg: str = "", status_code: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "data": data or {}, "msg": msg, "success": code == SUCCESS},
                        status_code=status_code)


def answer(action: Callable[[], dict[str, Any]]) -> JSONResponse:
    """Run one API action and translate its outcome into HeyGem's envelope."""
    try:
        data = action()
    except QueueFullError as exc:
        return envelope(BUSY, msg=str(exc))
    except InputError as exc:
        return envelope(BAD_PARAMETER, msg=str(exc))
    except TaskNotFoundError as exc:
        return envelope(NOT_FOUND, msg=str(exc))
    except Exception as exc:
        logger.exception("unexpected error in the HeyGem API")
        return envelope(SYSTEM_ERROR, msg=f"internal error: {type(exc).__name__}: {exc}")
    return envelope(SUCCESS, data, data.get("msg", ""))


@router.post("/submit")
async def submit(request: Request, supervisor: SupervisorDep,
                 config: ConfigDep) -> JSONResponse:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        return envelope(BAD_PARAMETER, msg="the request body must be a JSON object")
    except RecursionError:  # JSON nested thousands of levels deep
        return envelope(BAD_PARAMETER, msg="the request body is nested too deeply; send a flat JSON object")
    if not isinstance(body, dict):
        return envelope(BAD_PARAMETER, msg="the request body must be a JSON object")
    # Probing inputs and downloading URLs block; keep them off the event loop.
    return await run_in_threadpool(answer, lambda: submit_task(body, supervisor, config))


@router.get("/query")
def query(supervisor: SupervisorDep, code: str = "") -> JSONResponse:
    return answer(lambda: heygem_data(supervisor.status(required_code(code))))


@router.post("/cancel")
def cancel(supervisor: SupervisorDep, code: str = "") -> JSONResponse:
    return answer(lambda: heygem_data(supervisor.cancel(required_code(code))))


def submit_task(body: dict[str, Any], supervisor: TaskSupervisor, config: Config) -> dict[str, Any]:
    code = check_task_code(body.get("code") or str(uuid.uuid4()))
    refuse_known_code(code, supervisor)
    options = task_options(body)
    engine = body.get("engine") or DEFAULT_ENGINE
    # Only registered engines: the supervisor would also import any "module:Class" a caller names.
    if not isinstance(engine, str) or engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}")
    inputs: list[Path] = []
    try:
        inputs.append(accept_api_input(body.get("audio_url"), "audio_url", "audio", config))
        inputs.append(accept_api_input(body.get("video_url"), "video_url", "video", config))
        code = supervisor.submit(TaskRequest(audio_path=inputs[0], video_path=inputs[1], engine=engine,
                                             options=options, code=code))
    except Exception:
        discard_downloads(inputs, config)
        raise
    data = heygem_data(supervisor.status(code))
    if flag(body, "chaofen", False):
        data["msg"] += "; chaofen (face super-resolution) is not supported here and was ignored"
    return data


def refuse_known_code(code: str, supervisor: TaskSupervisor) -> None:
    """Fail fast on a reused code, before a URL is downloaded for nothing (submit checks again, atomically)."""
    try:
        supervisor.status(code)
    except TaskNotFoundError:
        return
    raise InputError(f"code {code!r} is already used by another task; codes must be unique")


def task_options(body: dict[str, Any]) -> TaskOptions:
    """HeyGem's own fields, with their HeyGem defaults, and our mouth_intensity (absent: the server default)."""
    return TaskOptions(loop_mode="pingpong" if flag(body, "pn", True) else "loop",
                       ai_label=flag(body, "digital_auth", False), watermark=flag(body, "watermark_switch", False),
                       mouth_intensity=body.get("mouth_intensity"))


def flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if isinstance(value, (bool, int, str)) or value is None:
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
    raise InputError(f"{name} must be 0 or 1, got {value!r}")


def required_code(code: str) -> str:
    if not code:
        raise InputError("code is required (?code=<task code>)")
    return code
