"""The Tasks tab's buttons and the Generate tab's reattachment, on a real supervisor with scripted engines."""

from __future__ import annotations

import gradio as gr
import pytest

from heygem.supervisor import TaskState
from heygem.ui.studio import Studio
from heygem.ui.views import IDLE_HTML
from tests.supervision import submit, wait_final, wait_running


def test_cancel_retry_open_and_delete_act_on_the_selected_task(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    code = submit(supervisor, inputs, [["stage", "render"], ["progress", 30], ["sleep", 60]])
    wait_running(supervisor, code)

    code_shown, status, result, _, timer = studio.attach(code)
    assert code_shown == code and "30 %" in status and result is None and timer.active

    assert studio.cancel_task(f" {code} ")[0][4] == "Cancelled"
    assert "Cancelled" in studio.poll(code)[0]
    assert studio.retry_task(code)[0][4] in ("Waiting", "Starting", "Generating")
    supervisor.cancel(code)

    tabs, *view = studio.open_task(code)
    assert tabs.selected == "generate" and view[0] == code

    selected, table = studio.delete_task(code)
    assert selected == "" and table == []
    with pytest.raises(gr.Error, match="no task with code"):
        studio.open_task(code)
    with pytest.raises(gr.Error, match="Select a task"):
        studio.cancel_task("")


def test_a_finished_task_reattaches_with_its_result(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    code = submit(supervisor, inputs, [["render", 0.5]])
    record = wait_final(supervisor, code)
    assert record.state is TaskState.SUCCEEDED
    _, status, result, download, timer = studio.attach(code)
    assert "Done" in status and result == record.result_path
    assert download.visible and not timer.active
    assert studio.poll("no-such-task")[0] == IDLE_HTML
    code_shown, status, *_ = studio.attach("no-such-task")
    assert code_shown == "" and "No task with code <b>no-such-task</b>" in status
    assert studio.attach("")[1] == IDLE_HTML
