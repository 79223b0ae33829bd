"""What the live stream's routes, the event stream and the studio's preview say about a task, from plain records."""

from __future__ import annotations

import json
from pathlib import Path

from heygem.api.events import end_id, event
from heygem.api.live import for_players, no_stream
from heygem.pipeline.live import live_stream, playlist_url
from heygem.supervisor.states import TaskState
from heygem.ui.live import gradio_hls_module, live_value
from tests.conftest import ConfigFactory
from tests.records import NOW, record

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:2.000000,\nlive-00000.m4s\n"


def test_why_there_is_nothing_to_play_is_one_sentence(make_config: ConfigFactory) -> None:
    config = make_config()
    assert no_stream(record(), config) == ("task abc has not started yet (waiting in queue (position 2)): its live "
                                           "stream begins once it renders")
    running = record(state=TaskState.RUNNING, stage="rendering", started_at=NOW)
    assert no_stream(running, config) == ("task abc has no live segment yet: the first one is ready when rendering "
                                          "reaches 1 s of video; try again in a moment")
    assert no_stream(running, make_config(live={"enabled": False})) == (
        "task abc has no live stream: this server writes none (live.enabled is false)")
    assert no_stream(record(state=TaskState.SUCCEEDED), config) == (
        "task abc has no live stream (any more); its result is at /api/v1/tasks/abc/result")
    assert no_stream(record(state=TaskState.FAILED), config) == "task abc failed before its live stream had a segment"


def test_players_are_asked_to_start_at_the_beginning() -> None:
    served = for_players(PLAYLIST)
    assert served.splitlines()[:2] == ["#EXTM3U", "#EXT-X-START:TIME-OFFSET=0"]
    assert served.replace("#EXT-X-START:TIME-OFFSET=0\n", "") == PLAYLIST


def test_only_the_final_event_has_an_id() -> None:
    running = event(record(state=TaskState.RUNNING, stage="rendering", progress=12.5, attempts=1))
    assert running.startswith("data: ") and running.endswith("\n\n") and "\nid:" not in running
    assert json.loads(running[len("data: "):])["progress"] == 12.5
    final = record(state=TaskState.SUCCEEDED, attempts=2)
    assert event(final).startswith(f"id: {end_id(final)}\ndata: ") and end_id(final) == "end-2"


def test_the_studio_plays_a_stream_only_while_the_task_renders_and_has_a_segment(make_config: ConfigFactory) -> None:
    config = make_config()
    running = record(state=TaskState.RUNNING, stage="rendering", started_at=NOW)
    stream = live_stream(config, running.code)
    assert live_value(running, config) == ""  # no playlist yet
    stream.folder.mkdir(parents=True)
    stream.playlist.write_text("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n")
    assert live_value(running, config) == ""  # a playlist without a segment
    stream.playlist.write_text(PLAYLIST)
    assert live_value(running, config) == playlist_url("abc") == "api/v1/tasks/abc/live.m3u8"
    assert live_value(record(state=TaskState.SUCCEEDED), config) == ""  # the result takes its place
    assert live_value(None, config) == ""
    assert live_value(running, make_config(live={"enabled": False})) == ""


def test_the_page_imports_the_hls_player_gradio_ships() -> None:
    import gradio

    module = gradio_hls_module()
    assert module.startswith("assets/hls-") and module.endswith(".js")
    assert (Path(gradio.__file__).parent / "templates" / "frontend" / module).is_file()
