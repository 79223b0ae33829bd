"""HeyGem.ai's synthesis API (/easy/*), so its existing clients work unchanged.

Every answer is HTTP 200 with {"code", "data", "msg", "success"}; the numeric code says what happened
(heygem.api.easy_answers says how, in the language easy.language names).
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
from heygem.api.easy_answers import (
    BAD_PARAMETER,
    BUSY,
    NOT_FOUND,
    SUCCESS,
    SYSTEM_ERROR,
    chaofen_note,
    envelope,
    heygem_data,
    refusal,
)
from heygem.config import Config, EasyLanguage
from heygem.engines.registry import DEFAULT_ENGINE, ENGINES, accept_options
from heygem.errors import InputError, QueueFullError, TaskNotFoundError
from heygem.intake.uploads import accept_api_input, discard_downloads
from heygem.options import TaskOptions
from heygem.supervisor import TaskSupervisor
from heygem.supervisor.states import TaskRequest, check_task_code

# True == 1 and False == 0, so these sets also hold the booleans.
TRUE_VALUES = {1, "1", "true", "True", "yes"}
FALSE_VALUES = {0, "0", "false", "False", "no", None, ""}

router = APIRouter(prefix="/easy", tags=["HeyGem compatible"])


def answer(action: Callable[[], dict[str, Any]], language: EasyLanguage) -> JSONResponse:
    """Run one API action and translate its outcome into HeyGem's envelope."""
    try:
        data = action()
    except QueueFullError as exc:
        return refusal(BUSY, str(exc), language)
    except InputError as exc:
        return refusal(BAD_PARAMETER, str(exc), language)
    except TaskNotFoundError as exc:
        return refusal(NOT_FOUND, str(exc), language)
    except Exception as exc:
        logger.exception("unexpected error in the HeyGem API")
        return refusal(SYSTEM_ERROR, f"internal error: {type(exc).__name__}: {exc}", language)
    return envelope(SUCCESS, data, data.get("msg", ""))


@router.post("/submit")
async def submit(request: Request, supervisor: SupervisorDep,
                 config: ConfigDep) -> JSONResponse:
    language = config.easy.language
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        return refusal(BAD_PARAMETER, "the request body must be a JSON object", language)
    except RecursionError:  # JSON nested thousands of levels deep
        return refusal(BAD_PARAMETER, "the request body is nested too deeply; send a flat JSON object", language)
    if not isinstance(body, dict):
        return refusal(BAD_PARAMETER, "the request body must be a JSON object", language)
    # Probing inputs and downloading URLs block; keep them off the event loop.
    return await run_in_threadpool(answer, lambda: submit_task(body, supervisor, config), language)


@router.get("/query")
def query(supervisor: SupervisorDep, config: ConfigDep, code: str = "") -> JSONResponse:
    # No code finds no task (10004): the desktop client ignores that answer and asks again, where 10002 would make
    # it give the video up.
    def status() -> dict[str, Any]:
        if not code:
            raise TaskNotFoundError("no task code given: ask /easy/query?code=<task code>")
        return heygem_data(supervisor.status(code), config.easy.language)

    return answer(status, config.easy.language)


@router.post("/cancel")
def cancel(supervisor: SupervisorDep, config: ConfigDep, code: str = "") -> JSONResponse:
    return answer(lambda: heygem_data(supervisor.cancel(required_code(code)), config.easy.language),
                  config.easy.language)


def submit_task(body: dict[str, Any], supervisor: TaskSupervisor, config: Config) -> dict[str, Any]:
    code = check_task_code(body.get("code") or str(uuid.uuid4()))
    refuse_known_code(code, supervisor)
    options = task_options(body)
    engine = body.get("engine") or DEFAULT_ENGINE
    # Only registered engines: the supervisor would also import any "module:Class" a caller names.
    if not isinstance(engine, str) or engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}")
    accept_options(engine, options)  # before a URL is downloaded for nothing (submit checks again)
    inputs: list[Path] = []
    try:
        inputs.append(accept_api_input(body.get("audio_url"), "audio_url", "audio", config))
        inputs.append(accept_api_input(body.get("video_url"), "video_url", "video", config))
        # The result is also placed in paths.input_dir: the desktop client opens it there.
        code = supervisor.submit(TaskRequest(audio_path=inputs[0], video_path=inputs[1], engine=engine,
                                             options=options, code=code, shared_result=True))
    except Exception:
        discard_downloads(inputs, config)
        raise
    data = heygem_data(supervisor.status(code), config.easy.language)
    if flag(body, "chaofen", False):
        data["msg"] += chaofen_note(config.easy.language)
    return data


def refuse_known_code(code: str, supervisor: TaskSupervisor) -> None:
    """Fail fast on a reused code, before a URL is downloaded for nothing (submit checks again, atomically)."""
    try:
        supervisor.status(code)
    except TaskNotFoundError:
        return
    raise InputError(f"code {code!r} is already used by another task; codes must be unique")


def task_options(body: dict[str, Any]) -> TaskOptions:
    """HeyGem's own fields, with their HeyGem defaults, and our mouth_intensity and speech_language (absent: the
    server defaults)."""
    return TaskOptions(loop_mode="pingpong" if flag(body, "pn", True) else "loop",
                       ai_label=flag(body, "digital_auth", False), watermark=flag(body, "watermark_switch", False),
                       mouth_intensity=body.get("mouth_intensity"), speech_language=body.get("speech_language"))


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
