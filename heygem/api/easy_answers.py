"""What HeyGem's API (/easy/*) answers: the envelope and its codes, a task's `data`, and every `msg` text in the
language `easy.language` names (en or zh).

HeyGem.ai's desktop client reads the numbers with JavaScript's `===`: code, status and progress are always JSON
numbers, `data` always an object. It shows the texts to its users as they are (a failed video shows data.msg, a
refused submit its msg), and most of them read Chinese: the reference service answers in Chinese ("音频特征提取完成",
"任务完成"). English is our own wording: TaskRecord.summary, and the refusal itself. Chinese names the state and
the stage in Chinese; a failure or a refusal gets a Chinese lead-in naming its kind, followed by our English detail,
which names the file, the stage and the figures precisely (the words of ffmpeg or of an engine cannot be translated
faithfully). The numbers are the same in both languages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from heygem.config import EasyLanguage
from heygem.pipeline.generate import NO_FACE_MESSAGE
from heygem.supervisor.states import QUEUED_MESSAGE, TaskRecord, TaskState

SUCCESS = 10000
BUSY = 10001
BAD_PARAMETER = 10002
NOT_FOUND = 10004
SYSTEM_ERROR = 9999
# The Chinese lead-in of each refusal, before our English detail.
REFUSALS_ZH = {BUSY: "队列已满", BAD_PARAMETER: "参数错误", NOT_FOUND: "任务不存在", SYSTEM_ERROR: "系统错误"}

# HeyGem's query status: 1 running (waiting included), 2 success, 3 error.
HEYGEM_STATUS = {
    TaskState.QUEUED: 1,
    TaskState.INITIALIZING: 1,
    TaskState.RUNNING: 1,
    TaskState.SUCCEEDED: 2,
    TaskState.FAILED: 3,
    TaskState.CANCELLED: 3,
}

# Every stage a worker reports (heygem.supervisor.protocol and heygem.pipeline.generate), as the task's state text.
# tests/test_easy_answers.py checks that each stage the code reports is here.
STAGES_ZH = {
    "init": "正在初始化",
    "run": "开始合成",
    "reading inputs": "正在读取音频和视频",
    "analysing audio": "正在提取音频特征",
    "analysing video": "正在分析视频中的人脸",
    "rendering": "正在合成视频",
    "finishing": "正在生成视频文件",
}
# A failure in a stage, when nothing more specific is known: the worker's message starts with "<stage>: ".
STAGE_FAILURES_ZH = {
    "init": "初始化失败",
    "run": "合成失败",
    "reading inputs": "音频或视频无法使用",
    "analysing audio": "音频特征提取失败",
    "analysing video": "视频人脸分析失败",
    "rendering": "视频合成失败",
    "finishing": "视频文件生成失败",
}
# Kinds of failure (and of waiting) told by a fragment of our English message, most specific first.
KINDS_ZH = (
    (NO_FACE_MESSAGE, "视频中未检测到人脸"),
    ("could not be placed in the shared folder", "无法把结果写入共享文件夹"),
    ("timed out after", "任务超时"),
    ("initialisation did not finish", "初始化超时"),
    ("no heartbeat for", "处理进程无响应"),
    ("stalled: no progress for", "处理停滞"),
    ("worker killed by signal", "处理进程被系统终止"),
    ("worker exited", "处理进程意外退出"),
    ("could not start a worker", "无法启动处理进程"),
    ("interrupted: the service stopped", "服务已停止，任务中断"),
    ("requeued: the service stopped", "服务重启后重新排队"),
    ("GB of GPU memory", "等待显存"),
    ("is unavailable", "引擎不可用"),
)
SUCCEEDED_ZH = "任务完成"
FAILED_ZH = "任务失败"
CANCELLED_ZH = "任务已取消"
QUEUED_ZH = "排队中"


def envelope(code: int, data: dict[str, Any] | None = None, msg: str = "", status_code: int = 200) -> JSONResponse:
    """An /easy answer, `data` always an object. HTTP 200 but for a missing credential (heygem.api.auth): the
    desktop client stops polling for good on any other status."""
    return JSONResponse({"code": code, "data": data or {}, "msg": msg, "success": code == SUCCESS},
                        status_code=status_code)


def refusal(code: int, detail: str, language: EasyLanguage) -> JSONResponse:
    """An answer that refuses a request (queue full, bad parameter, no such task, system error)."""
    return envelope(code, msg=detail if language == "en" else f"{REFUSALS_ZH[code]}：{detail}")


def heygem_data(record: TaskRecord, language: EasyLanguage) -> dict[str, Any]:
    """`data` of /easy/query. `result`, once the task succeeded: for a task submitted through /easy, the path of its
    copy in the shared folder as the desktop client joins it onto that folder ("/<code>-r.mp4", like the reference
    service); for any other task, the absolute path of the result."""
    succeeded = record.state is TaskState.SUCCEEDED
    result = ""
    if succeeded and record.shared_result_path:
        result = f"/{Path(record.shared_result_path).name}"
    elif succeeded:
        result = record.result_path or ""
    return {
        "code": record.code,
        "status": HEYGEM_STATUS[record.state],
        "progress": 100 if succeeded else int(record.progress),
        "msg": task_text(record, language),
        "result": result,
    }


def task_text(record: TaskRecord, language: EasyLanguage) -> str:
    """data.msg of a task: where it waits, the stage it is in, or how it ended."""
    if language == "en":
        return record.summary
    state = record.state
    if state is TaskState.QUEUED:
        place = f"（第 {record.queue_position} 位）" if record.queue_position else ""
        waiting = record.message if record.message and record.message != QUEUED_MESSAGE else ""
        return f"{QUEUED_ZH}{place}" + (f"：{kind_zh(waiting, QUEUED_ZH)}：{waiting}" if waiting else "")
    rerun = f"（第 {record.attempts} 次运行，上次运行中断后从头重新开始：{record.resumed_after}）" \
        if record.resumed_after else ""
    if state.is_active:
        return STAGES_ZH.get(record.stage, f"处理中（{record.stage}）" if record.stage else STAGES_ZH["init"]) + rerun
    if state is TaskState.SUCCEEDED:
        return (f"{SUCCEEDED_ZH}（提示：{record.warning}）" if record.warning else SUCCEEDED_ZH) + rerun
    detail = record.summary
    if state is TaskState.CANCELLED:
        return f"{CANCELLED_ZH}：{detail}"
    return f"{kind_zh(detail, FAILED_ZH)}：{detail}"


def kind_zh(message: str, fallback: str) -> str:
    """The Chinese lead-in for an English message: its kind, else the stage it failed in, else `fallback`."""
    for fragment, lead in KINDS_ZH:
        if fragment in message:
            return lead
    stage = message.split(": ", 1)[0] if ": " in message else ""
    return STAGE_FAILURES_ZH.get(stage, fallback)


def chaofen_note(language: EasyLanguage) -> str:
    """Appended to data.msg when a submit asks for chaofen, which is accepted and ignored."""
    if language == "en":
        return "; chaofen (face super-resolution) is not supported here and was ignored"
    return "；本服务不支持 chaofen（人脸超分辨率），已忽略"
