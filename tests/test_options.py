"""TaskOptions: one check and one message for every way in, typed from submit to the engine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from heygem.cli import main
from heygem.config import load_config
from heygem.errors import ConfigError, InputError
from heygem.options import LOOP_MODES, MOUTH_INTENSITY, TaskOptions
from heygem.supervisor import TaskSupervisor
from heygem.supervisor.lifecycle import TaskLifecycle
from heygem.supervisor.store import TaskStore
from heygem.ui.studio import Studio
from tests.conftest import SUPERVISOR_TEST_SETTINGS
from tests.option_cases import OUT_OF_RANGE, WRONG_KIND, case_id
from tests.supervision import SCRIPTED, script_file, submit, wait_final


@pytest.mark.parametrize("case", OUT_OF_RANGE + WRONG_KIND, ids=case_id)
def test_the_constructor_refuses_with_the_one_message(case: tuple[str, Any, str]) -> None:
    name, value, message = case
    with pytest.raises(InputError) as refusal:
        TaskOptions(**{name: value})
    assert str(refusal.value) == message


def test_values_at_the_edges_and_defaults_are_accepted() -> None:
    assert TaskOptions() == TaskOptions(None, None, None, None)
    assert TaskOptions(mouth_intensity=MOUTH_INTENSITY.low).mouth_intensity == 0.0
    assert TaskOptions(mouth_intensity=2).mouth_intensity == 2.0
    assert isinstance(TaskOptions(mouth_intensity=1).mouth_intensity, float), "an int from JSON becomes a float"
    assert [TaskOptions(loop_mode=mode).loop_mode for mode in LOOP_MODES] == ["pingpong", "loop"]
    with pytest.raises(InputError, match=r"got nan$"):
        TaskOptions(mouth_intensity=math.nan)


def test_json_round_trip_keeps_only_what_was_given() -> None:
    options = TaskOptions(loop_mode="loop", ai_label=True)
    assert options.to_json() == {"loop_mode": "loop", "ai_label": True}
    assert TaskOptions.from_json(options.to_json()) == options
    with pytest.raises(InputError, match=r"^unknown option 'mouth_intesity': the options are loop_mode, "
                                         r"mouth_intensity, ai_label, watermark, speech_language$"):
        TaskOptions.from_json({"mouth_intesity": 1})
    with pytest.raises(InputError, match=r"^options must be a JSON object"):
        TaskOptions.from_json([1, 2])


def test_form_fields_are_read_from_their_text() -> None:
    fields = {"loop_mode": "loop", "mouth_intensity": " 1.25 ", "ai_label": "on", "watermark": "false",
              "code": "not an option", "audio": ""}
    assert TaskOptions.from_form(fields) == TaskOptions("loop", 1.25, True, False)
    assert TaskOptions.from_form({"mouth_intensity": ""}) == TaskOptions()


@pytest.mark.parametrize("case", OUT_OF_RANGE + [case for case in WRONG_KIND if isinstance(case[1], str)],
                         ids=case_id)
def test_form_fields_are_refused_with_the_one_message(case: tuple[str, Any, str]) -> None:
    name, value, message = case
    with pytest.raises(InputError) as refusal:
        TaskOptions.from_form({name: str(value)})
    assert str(refusal.value) == message


@pytest.mark.parametrize("case", [case for case in OUT_OF_RANGE], ids=case_id)
def test_the_cli_refuses_with_the_one_message(capsys: pytest.CaptureFixture[str], case: tuple[str, Any, str],
                                              tmp_path: Path) -> None:
    name, value, message = case
    flag = "--" + name.replace("_", "-")
    code = main(["generate", "--audio", str(tmp_path / "a.wav"), "--video", str(tmp_path / "v.mp4"),
                 "--out", str(tmp_path / "o.mp4"), flag, str(value)])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_the_cli_help_shows_the_declared_choices_and_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = capsys.readouterr().out
    assert "--loop-mode {pingpong,loop}" in help_text and "--mouth-intensity 0..2" in help_text
    assert "--speech-language {en,other}" in help_text


@pytest.mark.parametrize("case", OUT_OF_RANGE + WRONG_KIND, ids=case_id)
def test_the_studio_handler_refuses_with_the_one_message(start_supervisor, case: tuple[str, Any, str]) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    name, value, message = case
    controls: dict[str, Any] = {"loop_mode": "pingpong", "mouth_intensity": 1.0, "ai_label": False,
                                "watermark": False, "speech_language": "en", name: value}
    with pytest.raises(gr.Error) as refusal:
        studio.generate("speech.wav", "face.mp4", "meshwarp", **controls)
    assert refusal.value.message == message
    assert supervisor.list_tasks() == []


def test_the_configured_default_must_lie_in_the_options_range(make_config) -> None:
    with pytest.raises(ConfigError, match=r"^meshwarp.mouth_intensity: must be a number from 0 to 2, got 2.5$"):
        make_config(meshwarp={"mouth_intensity": 2.5})
    with pytest.raises(ConfigError, match=r"^media.loop_mode: expected one of pingpong, loop, got 'sideways'$"):
        load_config(environ={"HEYGEM_MEDIA__LOOP_MODE": "sideways"})


def test_options_reach_the_engine_typed_through_store_spec_and_job(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    options = TaskOptions(loop_mode="loop", mouth_intensity=0.5, watermark=True)
    code = submit(supervisor, inputs, [["options", None]], options=options)
    record = wait_final(supervisor, code)
    # Resolved once, at submit: what was left out has the config's value, in the store and in the engine's Job.
    config = supervisor.config
    resolved = TaskOptions("loop", 0.5, config.media.ai_label, True, config.meshwarp.speech_language)
    assert record.report == {"steps": 1, "options": repr(resolved)}
    assert TaskStore(supervisor.config.paths.db_path).require(code).options == resolved


WAV2LIP_REFUSES = ("mouth_intensity is not an option of the wav2lip engine (its options: loop_mode, ai_label, "
                   "watermark); leave mouth_intensity out, or choose an engine that takes it")


def test_each_engine_declares_the_options_it_takes() -> None:
    from heygem.engines.meshwarp import MeshWarpEngine
    from heygem.engines.wav2lip import Wav2LipEngine

    assert MeshWarpEngine.takes_options == set(TaskOptions.names()), "each name an option's"
    everything = TaskOptions("loop", 1.5, True, True, "other")
    assert MeshWarpEngine.accept_options(everything) is everything
    pipeline_only = TaskOptions(loop_mode="loop", ai_label=True, watermark=False)
    assert Wav2LipEngine.accept_options(pipeline_only) is pipeline_only
    with pytest.raises(InputError) as refusal:
        Wav2LipEngine.accept_options(TaskOptions(mouth_intensity=1.5))
    assert str(refusal.value) == WAV2LIP_REFUSES
    with pytest.raises(InputError, match=r"^speech_language is not an option of the wav2lip engine"):
        Wav2LipEngine.accept_options(TaskOptions(speech_language="en"))


def test_options_resolve_once_against_the_config(make_config) -> None:
    config = make_config(media={"loop_mode": "loop", "watermark": True}, meshwarp={"mouth_intensity": 0.7})
    defaults = config.option_defaults
    assert TaskOptions(ai_label=True).resolve(defaults) == TaskOptions("loop", 0.7, True, True, "en")
    assert TaskOptions(mouth_intensity=0.3).resolve(defaults).mouth_intensity == 0.3, "a given value stands"
    # The studio's controls start at the defaults: only what differs from them is a person's choice.
    assert TaskOptions("loop", 0.7, True, True, "en").without(defaults) == TaskOptions(ai_label=True)


def test_the_cli_refuses_an_option_the_engine_does_not_take(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    audio, video = tmp_path / "a.wav", tmp_path / "v.mp4"
    audio.write_bytes(b"")
    video.write_bytes(b"")
    code = main(["generate", "--audio", str(audio), "--video", str(video), "--out", str(tmp_path / "o.mp4"),
                 "--engine", "wav2lip", "--mouth-intensity", "1.5"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {WAV2LIP_REFUSES}"


def test_the_studio_refuses_only_an_option_the_person_changed(start_supervisor, inputs) -> None:
    supervisor = start_supervisor()
    studio = Studio(supervisor, supervisor.config)
    defaults = supervisor.config.option_defaults
    controls: dict[str, Any] = {"loop_mode": defaults.loop_mode, "mouth_intensity": 1.5, "ai_label": False,
                                "watermark": False, "speech_language": defaults.speech_language}
    with pytest.raises(gr.Error) as refusal:
        studio.generate("speech.wav", "face.mp4", "wav2lip", **controls)
    assert refusal.value.message == WAV2LIP_REFUSES
    # The slider left where it starts (the server's default) is no choice: the refusal is then about something else.
    with pytest.raises(gr.Error) as other:
        studio.generate(*map(str, inputs), "wav2lip", **{**controls, "mouth_intensity": defaults.mouth_intensity})
    assert "mouth_intensity" not in other.value.message
    assert supervisor.list_tasks() == []


def test_the_apis_refuse_an_option_the_engine_does_not_take(start_supervisor, inputs) -> None:
    from heygem.api.easy import submit_task
    from heygem.supervisor import TaskRequest

    supervisor = start_supervisor()
    # /easy: our own mouth_intensity, given with wav2lip, before any URL is fetched.
    body = {"audio_url": "/nowhere/a.wav", "video_url": "/nowhere/v.mp4", "engine": "wav2lip", "mouth_intensity": 1.5}
    with pytest.raises(InputError) as refusal:
        submit_task(body, supervisor, supervisor.config)
    assert str(refusal.value) == WAV2LIP_REFUSES
    # /api/v1 and every other way in end in the supervisor's submit, the one place options are settled.
    with pytest.raises(InputError) as refusal:
        supervisor.submit(TaskRequest(*inputs, engine="wav2lip", options=TaskOptions(mouth_intensity=1.5)))
    assert str(refusal.value) == WAV2LIP_REFUSES
    assert supervisor.list_tasks() == []


@pytest.mark.slow  # it spawns a worker
def test_a_task_queued_with_unresolved_options_by_an_older_version_runs_resolved(make_config, inputs) -> None:
    config = make_config(supervisor=SUPERVISOR_TEST_SETTINGS)
    audio, video = inputs
    script = script_file(video.parent, [["options", None]])
    result = config.paths.results_dir / "from-0.2-r.mp4"
    TaskLifecycle(TaskStore(config.paths.db_path)).queue("from-0.2", SCRIPTED, str(audio), str(script),
                                                          TaskOptions(mouth_intensity=0.5), str(result))
    supervisor = TaskSupervisor(config).start()
    try:
        record = wait_final(supervisor, "from-0.2")
    finally:
        supervisor.shutdown()
    assert record.report["options"] == repr(TaskOptions(mouth_intensity=0.5).resolve(config.option_defaults))
