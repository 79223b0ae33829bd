"""The live HLS stream: written by the same encode as the result, readable by ffprobe while the task renders, equal to
the result when it is done, ended however the task ends, removed with the task.

Tasks run in real supervisor workers; tests.gated_engine holds a render at a known point, so "while it renders" is
certain rather than a race. Debian's own ffprobe and ffmpeg read the streams (make test installs them), as any player
would; the bundled ffmpeg (imageio-ffmpeg) wrote them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from heygem.engines.meshwarp import MeshWarpEngine
from heygem.options import TaskOptions
from heygem.pipeline.engine import Job
from heygem.pipeline.live import END_TAG, SEGMENT_TAG, LiveStream, live_stream, segment_count
from heygem.pipeline.media import LiveOutput, VideoWriter
from heygem.supervisor import TaskRequest, TaskState, TaskSupervisor
from tests import media
from tests.conftest import SUPERVISOR_TEST_SETTINGS, ConfigFactory
from tests.gated_engine import GATED, HOLD_AT_S
from tests.media import FPS, built_once, spoken_wav
from tests.supervision import wait_final, wait_until

pytestmark = pytest.mark.slow

astronaut_file, media_dir = media.astronaut_file, media.media_dir
FFPROBE, FFMPEG = Path("/usr/bin/ffprobe"), Path("/usr/bin/ffmpeg")


@pytest.fixture(scope="module")
def speech_20s(media_dir: Path) -> Path:
    return built_once(media_dir / "spoken-20s.wav", lambda path: spoken_wav(path, 20.0))


@pytest.fixture
def debian_ffprobe() -> Path:
    if not FFPROBE.exists() or not FFMPEG.exists():
        pytest.skip("Debian's ffmpeg (ffprobe) is not installed; make test installs it")
    return FFPROBE


def probe(path: Path, *entries: str, options: tuple[str, ...] = ()) -> dict:
    """ffprobe's JSON of `entries` ("section=key,key") of the file or playlist at `path`."""
    done = subprocess.run([str(FFPROBE), "-v", "error", *options, "-of", "json", "-show_entries", ":".join(entries),
                           str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return json.loads(done.stdout)


def extinf_durations(playlist: str) -> list[float]:
    lines = playlist.splitlines()
    return [float(line[len(SEGMENT_TAG):].rstrip(",")) for line in lines if line.startswith(SEGMENT_TAG)]


def first_segment(supervisor: TaskSupervisor, code: str) -> LiveStream:
    stream = live_stream(supervisor.config, code)

    def segment_written() -> bool:
        record = supervisor.status(code)
        assert not record.state.is_final, f"task {code} ended before its first segment: {record.message}"
        return segment_count(stream.read_playlist() or "") >= 1

    wait_until(segment_written, 60, f"the first segment of task {code}")
    return stream


def open_gate(supervisor: TaskSupervisor, word: str) -> None:
    (supervisor.config.paths.data_dir / "gate").write_text(word)


def test_a_20s_task_streams_while_rendering_and_the_stream_equals_the_result(
        start_supervisor: Callable[..., TaskSupervisor], speech_20s: Path, astronaut_file: Path,
        debian_ffprobe: Path) -> None:
    supervisor = start_supervisor()
    segment_s = supervisor.config.live.segment_s
    code = supervisor.submit(TaskRequest(speech_20s, astronaut_file, engine=GATED))
    stream = first_segment(supervisor, code)

    # The gate holds the render at 6 s of 20: the task is certainly running while players read the stream. A live
    # playlist has no duration yet; ffprobe reads its codecs and the first second of pictures, from the start.
    live = probe(stream.playlist, "format=format_name", "stream=codec_name")
    assert live["format"]["format_name"] == "hls"
    assert {entry["codec_name"] for entry in live["streams"]} == {"h264", "aac"}
    pictures = probe(stream.playlist, "packet=pts_time", options=("-live_start_index", "0", "-select_streams", "v",
                                                                  "-read_intervals", f"%+#{int(FPS)}"))["packets"]
    assert len(pictures) == FPS and float(pictures[0]["pts_time"]) < 0.1
    playlist = stream.read_playlist() or ""
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and END_TAG not in playlist and segment_count(playlist) >= 1
    assert supervisor.status(code).state is TaskState.RUNNING

    open_gate(supervisor, "go")
    record = wait_final(supervisor, code, 120)
    assert record.state is TaskState.SUCCEEDED, record.message
    playlist = stream.read_playlist() or ""
    assert playlist.rstrip().endswith(END_TAG)
    # Every segment but the last lasts exactly segment_s: each begins at a keyframe forced there.
    durations = extinf_durations(playlist)
    assert durations[:-1] == [segment_s] * (len(durations) - 1) and 0 < durations[-1] <= segment_s
    result = Path(record.result_path or "")
    result_s = float(probe(result, "format=duration")["format"]["duration"])
    assert result_s == pytest.approx(20.0, abs=1 / FPS)
    assert sum(durations) == pytest.approx(result_s, abs=1 / FPS)
    stream_s = float(probe(stream.playlist, "format=duration")["format"]["duration"])
    assert stream_s == pytest.approx(result_s, abs=1 / FPS)
    decoded = subprocess.run([str(FFMPEG), "-v", "error", "-xerror", "-i", str(stream.playlist), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
    # The result's keyframes are at most a segment apart: the stream needs them there, and the result shares them.
    assert np.diff(key_times(result)).max() <= segment_s + 1e-6

    supervisor.delete(code)
    assert not stream.folder.exists()


def key_times(video: Path) -> list[float]:
    frames = probe(video, "frame=pts_time", options=("-select_streams", "v:0", "-skip_frame", "nokey"))["frames"]
    return [float(frame["pts_time"]) for frame in frames]


@pytest.mark.parametrize("how", ["cancel", "fail"])
def test_a_task_that_does_not_finish_ends_its_playlist(start_supervisor: Callable[..., TaskSupervisor],
                                                       speech_20s: Path, astronaut_file: Path, debian_ffprobe: Path,
                                                       how: str) -> None:
    """Cancelled (its worker and encoder killed) or failed (the worker's own error): players must not wait forever."""
    supervisor = start_supervisor()
    code = supervisor.submit(TaskRequest(speech_20s, astronaut_file, engine=GATED))
    stream = first_segment(supervisor, code)
    if how == "cancel":
        supervisor.cancel(code)
    else:
        open_gate(supervisor, "fail")
    assert wait_final(supervisor, code, 60).state is (TaskState.CANCELLED if how == "cancel" else TaskState.FAILED)
    wait_until(lambda: END_TAG in (stream.read_playlist() or ""), 30, "the end tag")
    assert not list(stream.folder.glob("*.tmp")), "no half-written segment is left"
    duration = float(probe(stream.playlist, "format=duration")["format"]["duration"])
    assert 0 < duration <= HOLD_AT_S


def test_keep_after_success_false_removes_the_stream_at_success(make_config: ConfigFactory, astronaut_file: Path,
                                                                 media_dir: Path) -> None:
    speech = built_once(media_dir / "spoken-3s.wav", lambda path: spoken_wav(path, 3.0))
    supervisor = TaskSupervisor(make_config(supervisor=SUPERVISOR_TEST_SETTINGS,
                                            live={"keep_after_success": False})).start()
    try:
        record = wait_final(supervisor, supervisor.submit(TaskRequest(speech, astronaut_file, engine="meshwarp")), 120)
        assert record.state is TaskState.SUCCEEDED and Path(record.result_path or "").is_file()
        assert not live_stream(supervisor.config, record.code).folder.exists()
    finally:
        supervisor.shutdown()


def encode_a_second(folder: Path, stream: LiveStream) -> Path:
    """One second of 64x64 video with silence, through VideoWriter with a live output of 0.4 s segments."""
    audio = media.silent_wav(folder / "silence.wav", 1.0)
    writer = VideoWriter(folder / "out.mp4", (64, 64), Fraction(25), audio, 1.0, "ultrafast", 30, "64k",
                         LiveOutput(stream, 0.4))
    for index in range(25):
        writer.write(np.full((64, 64, 3), index * 10, np.uint8))
    writer.close()
    return folder / "out.mp4"


def test_the_encoder_writes_both_outputs_to_any_path(tmp_path: Path) -> None:
    """The tee muxer's own syntax uses '|', ':', '[', ']', quotes and backslashes: paths holding them still work."""
    folder = tmp_path / "na me:|'[x]\\y "
    folder.mkdir()
    stream = LiveStream(folder / "live")
    stream.folder.mkdir()
    assert encode_a_second(folder, stream).stat().st_size > 0
    assert segment_count(stream.read_playlist() or "") == 3 and END_TAG in (stream.read_playlist() or "")
    assert sorted(path.name for path in stream.folder.iterdir()) == [
        "live-00000.m4s", "live-00001.m4s", "live-00002.m4s", "live-init.mp4", "live.m3u8"]


def test_a_stream_that_cannot_be_written_never_costs_the_result(tmp_path: Path) -> None:
    assert encode_a_second(tmp_path, LiveStream(tmp_path / "no such folder" / "live")).stat().st_size > 0


def test_a_stream_folder_that_cannot_be_made_never_costs_the_task(make_config: ConfigFactory, astronaut_file: Path,
                                                                   media_dir: Path, tmp_path: Path) -> None:
    """E.g. a worker on another machine handed the head's folder: the task still renders its result."""
    speech = built_once(media_dir / "spoken-3s.wav", lambda path: spoken_wav(path, 3.0))
    blocker = tmp_path / "a file"
    blocker.write_bytes(b"")
    config = make_config()
    job = Job(code="no-stream", audio_path=speech, video_path=astronaut_file, result_path=tmp_path / "result.mp4",
              work_dir=tmp_path / "work", options=TaskOptions().resolve(config.option_defaults), config=config,
              live_dir=blocker / "live")
    report = MeshWarpEngine(config).run(job, media.QuietReporter())
    assert report["frames"] == 75 and job.result_path.stat().st_size > 0


def test_ending_a_stream_closes_its_playlist_once_and_drops_unfinished_files(tmp_path: Path) -> None:
    stream = LiveStream(tmp_path / "live")
    stream.folder.mkdir()
    (stream.folder / "live-00001.m4s.tmp").write_bytes(b"half")
    stream.playlist.write_text("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:2.000000,\nlive-00000.m4s\n")
    stream.end()
    stream.end()
    assert (stream.read_playlist() or "").count(END_TAG) == 1
    assert sorted(path.name for path in stream.folder.iterdir()) == ["live.m3u8"]


def test_ending_a_stream_without_a_playlist_removes_it(tmp_path: Path) -> None:
    stream = LiveStream(tmp_path / "live")
    stream.folder.mkdir()
    (stream.folder / "live-init.mp4").write_bytes(b"init")
    stream.end()
    assert not stream.folder.exists()
    stream.end()  # nothing there: nothing to do


def test_only_regular_segment_files_are_served(tmp_path: Path) -> None:
    import os

    stream = LiveStream(tmp_path / "live")
    stream.folder.mkdir()
    (stream.folder / "live-00000.m4s").write_bytes(b"segment")
    (stream.folder / "live-00001.m4s").symlink_to("/etc/passwd")
    os.mkfifo(stream.folder / "live-00002.m4s")  # opening it to read would wait for a writer
    (stream.folder / "live-00003.m4s").mkdir()
    (stream.folder / "live-00004.m4s.tmp").write_bytes(b"half")
    segment = stream.open_segment("live-00000.m4s")
    assert segment is not None
    (stream.folder / "live-00000.m4s").unlink()  # the task is deleted while its segment is being served
    with segment:
        assert segment.read() == b"segment"
    for name in ("live-00000.m4s", "live-00001.m4s", "live-00002.m4s", "live-00003.m4s", "live-00004.m4s.tmp",
                 "live.m3u8", "../live/live-00000.m4s", "live-0.m4s", "live-init.mp4", "gate"):
        assert stream.open_segment(name) is None, name
    shutil.rmtree(stream.folder)


def test_a_playlist_that_is_no_regular_file_is_no_playlist(tmp_path: Path) -> None:
    import os

    stream = LiveStream(tmp_path / "live")
    stream.folder.mkdir()
    (tmp_path / "elsewhere.m3u8").write_text("#EXTM3U\n#EXTINF:2.000000,\nlive-00000.m4s\n")
    stream.playlist.symlink_to(tmp_path / "elsewhere.m3u8")
    assert stream.read_playlist() is None, "a link is not the encoder's"
    stream.playlist.unlink()
    os.mkfifo(stream.playlist)
    assert stream.read_playlist() is None, "a FIFO would hold the reading thread until someone writes to it"
    shutil.rmtree(stream.folder)


def test_a_stream_made_on_another_machine_comes_home_segments_before_the_playlist(tmp_path: Path) -> None:
    """The ray backend's node side (_LiveMirror) sends what the encoder added; the head (LiveStream.put) writes it.

    A real encode on the "node", mirrored into the "head" folder a look at a time, as the node task does.
    """
    from heygem.supervisor.backends.ray_node import LIVE, _LiveMirror

    node, head = LiveStream(tmp_path / "node" / "live"), LiveStream(tmp_path / "head" / "live")
    node.folder.mkdir(parents=True)
    mirror = _LiveMirror(node)
    assert list(mirror.news()) == [], "nothing before the first segment"
    (node.folder / "live-00000.m4s.tmp").write_bytes(b"half")
    assert list(mirror.news()) == [], "a segment still being written is not sent"
    (node.folder / "live-00000.m4s.tmp").unlink()
    encode_a_second(tmp_path / "node", node)
    items = list(mirror.news())
    assert {kind for kind, _ in items} == {LIVE}
    names = [name for _, (name, _) in items]
    assert names[-1] == "live.m3u8" and sorted(names[:-1]) == names[:-1] == [
        "live-00000.m4s", "live-00001.m4s", "live-00002.m4s", "live-init.mp4"]
    for _, (name, content) in items:
        head.put(name, content)
    assert list(mirror.news()) == [], "each file goes once"
    assert head.read_playlist() == node.read_playlist()
    assert sorted(path.name for path in head.folder.iterdir()) == sorted(path.name for path in node.folder.iterdir())
    for name in ("../escape.m3u8", "live-1.m4s", "live.m3u8.tmp", "notes.txt"):
        with pytest.raises(ValueError, match="not a file of a live stream"):
            head.put(name, b"x")
    assert not (tmp_path / "head" / "escape.m3u8").exists()
