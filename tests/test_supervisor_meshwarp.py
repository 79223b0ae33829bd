"""The real built-in engine inside real supervisor workers: a result, and an input error as the task message."""

from __future__ import annotations

from pathlib import Path

import pytest

from heygem.supervisor import TaskRequest, TaskState
from tests import media
from tests.media import built_once, faceless_video

pytestmark = pytest.mark.slow

astronaut_file, media_dir, speech_file = media.astronaut_file, media.media_dir, media.speech_file


def test_a_meshwarp_task_succeeds_with_its_report(start_supervisor, speech_file: Path, astronaut_file: Path) -> None:
    supervisor = start_supervisor()
    code = supervisor.submit(TaskRequest(speech_file, astronaut_file, engine="meshwarp"))
    record = supervisor.wait(code, 120)
    assert record.state is TaskState.SUCCEEDED, record.message
    assert record.report["engine"] == "meshwarp"
    assert record.report["frames_without_face"] == 0
    assert Path(record.result_path).stat().st_size > 0
    log = (supervisor.config.paths.logs_dir / "tasks" / f"{code}.log").read_text()
    assert "stage rendering begins" in log and "finishing ended after" in log
    assert "phones come from the recognition started before the engine was loaded" in log  # on the other core
    # Another task over the same video, in another worker, finds the video's analysis (tracking, mouth bank).
    assert record.report["video_analysis"] == "computed"
    again = supervisor.wait(supervisor.submit(TaskRequest(speech_file, astronaut_file, engine="meshwarp")), 120)
    assert again.state is TaskState.SUCCEEDED, again.message
    assert again.report["video_analysis"] == "cached"


def test_an_input_error_reaches_the_task_with_its_stage(start_supervisor, speech_file: Path, media_dir: Path) -> None:
    faceless = built_once(media_dir / "faceless.mp4", faceless_video)
    supervisor = start_supervisor()
    record = supervisor.wait(supervisor.submit(TaskRequest(speech_file, faceless, engine="meshwarp")), 120)
    assert record.state is TaskState.FAILED
    assert record.message == "rendering: no face found in the video"
