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

    code_shown, status, live, result, _, timer, shown = studio.attach(code)
    assert code_shown == code and "30 %" in status and result is None and timer.active and live == ""
    assert (shown.code, shown.progress) == (code, 30)

    assert f"data-code='{code}'" in studio.cancel_task(f" {code} ") and "Cancelled" in studio.table()
    assert "Cancelled" in studio.poll(shown)[0]
    retried = studio.retry_task(code)
    assert any(label in retried for label in ("Waiting", "Starting", "Generating"))
    supervisor.cancel(code)

    tabs, *view = studio.open_task(code)
    assert tabs.selected == "generate" and view[0] == code

    selected, table = studio.delete_task(code)
    assert selected == "" and "No tasks yet" in table
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
    _, status, live, result, download, timer, _ = studio.attach(code)
    assert "Done" in status and result == record.result_path and live == ""
    assert download.visible and not timer.active
    assert studio.poll(None)[0] == IDLE_HTML
    code_shown, status, *_ = studio.attach("no-such-task")
    assert code_shown == "" and "No task with code <b>no-such-task</b>" in status
    assert studio.attach("")[1] == IDLE_HTML


def test_a_refused_generate_says_why_under_each_slot_at_fault(start_supervisor, tmp_path) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    not_a_video = tmp_path / "holiday.mp4"
    not_a_video.write_text("not a video")
    code, card, _, result, _, timer, shown, speech_note, video_note = studio.generate_on_page(
        None, str(not_a_video), "meshwarp", "pingpong", 1.0, False, False, "en")
    assert code == "" and "Not started" in card and "under the speech and under the video" in card
    assert "Add the speech first" in speech_note and "Video file is not a readable media file" in video_note
    assert result is None and not timer.active and shown is None and "Error" not in card
    with pytest.raises(gr.Error, match=r"Add the speech first.*; Video: video file is not a readable"):
        studio.generate(None, str(not_a_video), "meshwarp", "pingpong", 1.0, False, False, "en")
    assert not list((supervisor.config.paths.data_dir / "uploads").glob("*")), "nothing refused is kept"


def test_options_an_engine_does_not_take_are_hidden_and_go_back_to_the_default(start_supervisor) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    intensity, language = studio.engine_options("wav2lip")
    defaults = supervisor.config.option_defaults
    assert intensity == {"__type__": "update", "visible": False, "value": defaults.mouth_intensity}
    assert language == {"__type__": "update", "visible": False, "value": defaults.speech_language}
    assert all(control == {"__type__": "update", "visible": True} for control in studio.engine_options("meshwarp"))
