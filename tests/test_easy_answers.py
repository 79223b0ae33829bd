"""What /easy/* says, in English and in Chinese (easy.language), from plain records: every state, stage and failure."""

from __future__ import annotations

import ast
import dataclasses
import json
import time
from typing import Any

import pytest

from heygem.api.easy_answers import (
    BAD_PARAMETER,
    BUSY,
    NOT_FOUND,
    STAGE_FAILURES_ZH,
    STAGES_ZH,
    SYSTEM_ERROR,
    chaofen_note,
    heygem_data,
    refusal,
    task_text,
)
from heygem.options import TaskOptions
from heygem.pipeline.generate import NO_FACE_MESSAGE
from heygem.supervisor.processes import describe_exit
from heygem.supervisor.states import QUEUED_MESSAGE, TaskRecord, TaskState
from tests.conftest import REPO_ROOT

NOW = time.time()
QUEUED = TaskRecord(
    code="abc", state=TaskState.QUEUED, stage="", progress=0.0, message=QUEUED_MESSAGE, warning="", engine="meshwarp",
    audio_path="/in/a.wav", video_path="/in/v.mp4", options=TaskOptions(), result_path="/data/results/abc-r.mp4",
    worker_pid=None, created_at=NOW, started_at=None, finished_at=None, updated_at=NOW, attempts=0, report={},
    queue_position=3)


def record(**changes: Any) -> TaskRecord:
    return dataclasses.replace(QUEUED, **changes)


def failed(message: str) -> TaskRecord:
    return record(state=TaskState.FAILED, message=message, queue_position=None, finished_at=NOW)


def reported_stages() -> set[str]:
    """Every stage name the code reports: `<reporter>.stage("<name>")` anywhere in heygem/, and the first, "init"."""
    stages = {"init"}
    for path in (REPO_ROOT / "heygem").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "stage"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                stages.add(node.args[0].value)
    return stages


def test_every_stage_a_worker_reports_has_a_chinese_text() -> None:
    stages = reported_stages()
    assert {"run", "reading inputs", "analysing audio", "rendering", "finishing"} <= stages
    assert stages == set(STAGES_ZH) == set(STAGE_FAILURES_ZH)


def test_english_is_the_task_summary() -> None:
    for task in (QUEUED, record(state=TaskState.RUNNING, stage="rendering"), failed("rendering: " + NO_FACE_MESSAGE)):
        assert task_text(task, "en") == task.summary


@pytest.mark.parametrize(("task", "text"), [
    (QUEUED, "排队中（第 3 位）"),
    (record(queue_position=None), "排队中"),
    (record(message="waiting for 7.0 GB of GPU memory, 2.0 GB free", queue_position=1),
     "排队中（第 1 位）：等待显存：waiting for 7.0 GB of GPU memory, 2.0 GB free"),
    (record(message="requeued: the service stopped during stage rendering at 40 %", queue_position=1),
     "排队中（第 1 位）：服务重启后重新排队：requeued: the service stopped during stage rendering at 40 %"),
    (record(state=TaskState.INITIALIZING, stage="init", queue_position=None), "正在初始化"),
    (record(state=TaskState.RUNNING, stage="analysing audio", queue_position=None), "正在提取音频特征"),
    (record(state=TaskState.RUNNING, stage="rendering", queue_position=None), "正在合成视频"),
    (record(state=TaskState.RUNNING, stage="load model", queue_position=None), "处理中（load model）"),
    (record(state=TaskState.SUCCEEDED, queue_position=None), "任务完成"),
    (record(state=TaskState.SUCCEEDED, warning="12 frames had no face", queue_position=None),
     "任务完成（提示：12 frames had no face）"),
    (record(state=TaskState.CANCELLED, message="cancelled while queued", queue_position=None),
     "任务已取消：cancelled while queued"),
])
def test_chinese_names_the_state_and_the_stage(task: TaskRecord, text: str) -> None:
    assert task_text(task, "zh") == text


@pytest.mark.parametrize(("message", "lead"), [
    (f"rendering: {NO_FACE_MESSAGE}", "视频中未检测到人脸"),
    ("reading inputs: audio file has no audio stream: a.wav", "音频或视频无法使用"),
    ("analysing audio: ValueError: bad mel", "音频特征提取失败"),
    ("rendering: RuntimeError: ffmpeg exited with code 1", "视频合成失败"),
    ("finishing: the result could not be placed in the shared folder as /t/abc-r.mp4 (Permission denied); it is "
     "kept as /data/results/abc-r.mp4", "无法把结果写入共享文件夹"),
    ("timed out after 600 s in stage rendering at 40 %", "任务超时"),
    ("no heartbeat for 31 s (worker frozen) in stage rendering at 40 %", "处理进程无响应"),
    ("initialisation did not finish within 30 s (stage init)", "初始化超时"),
    (describe_exit(-9, "stage rendering at 40 %"), "处理进程被系统终止"),
    (describe_exit(3, "stage rendering at 40 %"), "处理进程意外退出"),
    ("init: could not start a worker: [Errno 12] Cannot allocate memory", "无法启动处理进程"),
    ("interrupted: the service stopped during stage rendering at 40 %", "服务已停止，任务中断"),
    ("init: engine 'wav2lip' is unavailable: model file missing", "引擎不可用"),
    ("something nobody foresaw", "任务失败"),
])
def test_a_failure_reads_a_chinese_lead_in_then_our_english_detail(message: str, lead: str) -> None:
    assert task_text(failed(message), "zh") == f"{lead}：{message}"


def test_numbers_and_result_are_the_same_in_both_languages() -> None:
    done = record(state=TaskState.SUCCEEDED, progress=99.5, queue_position=None,
                  shared_result_path="/home/u/duix_avatar_data/face2face/temp/abc-r.mp4")
    english, chinese = heygem_data(done, "en"), heygem_data(done, "zh")
    assert english == {**chinese, "msg": "done"} and chinese["msg"] == "任务完成"
    assert (chinese["status"], chinese["progress"], chinese["result"]) == (2, 100, "/abc-r.mp4")
    assert type(chinese["progress"]) is int and type(heygem_data(QUEUED, "zh")["progress"]) is int


@pytest.mark.parametrize(("code", "lead"), [(BUSY, "队列已满"), (BAD_PARAMETER, "参数错误"),
                                            (NOT_FOUND, "任务不存在"), (SYSTEM_ERROR, "系统错误")])
def test_every_refusal_has_a_chinese_lead_in(code: int, lead: str) -> None:
    detail = "audio_url is required (a path or an http(s) URL)"
    english, chinese = json.loads(refusal(code, detail, "en").body), json.loads(refusal(code, detail, "zh").body)
    assert english == {"code": code, "data": {}, "msg": detail, "success": False}
    assert chinese == {**english, "msg": f"{lead}：{detail}"}
    assert refusal(code, detail, "zh").status_code == 200


def test_the_chaofen_note_in_both_languages() -> None:
    assert "chaofen" in chaofen_note("en") and "不支持" in chaofen_note("zh")

