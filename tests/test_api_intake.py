"""Input checks of the studio and the API: paths stay inside the roots, files are judged by their content."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import pytest

from heygem.config import Config
from heygem.errors import InputError
from heygem.intake.media_check import check_media
from heygem.intake.uploads import accept_api_input, accept_upload, resolve_input_path
from tests.conftest import ConfigFactory


def ffmpeg_lavfi(target: Path, source: str, *extra: str) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", source, *extra,
                    str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "video": ffmpeg_lavfi(folder / "clip.mp4", "testsrc=size=96x96:rate=10", "-t", "2", "-pix_fmt", "yuv420p"),
        "speech": ffmpeg_lavfi(folder / "speech.wav", "sine=frequency=220", "-t", "2"),
        # An audio file wearing a video's name: the name must not fool the check.
        "audio_named_mp4": ffmpeg_lavfi(folder / "speech-as-video.mp4", "sine=frequency=220", "-t", "2"),
        "picture": ffmpeg_lavfi(folder / "face.png", "testsrc=size=64x64", "-frames:v", "1"),
        "long_speech": ffmpeg_lavfi(folder / "long.wav", "sine=frequency=220", "-t", "12"),
    }


@pytest.fixture
def config(make_config: ConfigFactory) -> Config:
    config = make_config(server={"max_media_duration_s": 10})
    config.paths.input_dir.mkdir(parents=True)
    return config


@pytest.mark.parametrize(("name", "slot", "message"), [
    ("speech", "video", "this is an audio file, but the video slot needs a video"),
    ("audio_named_mp4", "video", "this is an audio file"),
    ("picture", "video", "still image"),
    ("video", "audio", "no audio stream"),
    ("long_speech", "audio", "lasts 12 s; the limit is 10 s"),
])
def test_a_file_in_the_wrong_slot_or_over_the_limits_is_refused_by_content(
        media: dict[str, Path], config: Config, name: str, slot: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_media(media[name], slot, config)


def test_a_text_file_is_no_media(tmp_path: Path, config: Config) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError, match="not a readable media file"):
        check_media(text, "video", config)


def test_size_limit(media: dict[str, Path], make_config: ConfigFactory) -> None:
    tiny = make_config(server={"max_upload_mb": 0.001})
    with pytest.raises(InputError, match=r"the limit is 0\.001 MB"):
        check_media(media["speech"], "audio", tiny)


def test_an_accepted_upload_is_copied_into_the_uploads_folder(media: dict[str, Path], config: Config) -> None:
    stored = accept_upload(media["speech"], "audio", config)
    assert stored.parent == config.paths.uploads_dir
    assert stored.name.endswith("-audio-speech.wav")
    assert stored.read_bytes() == media["speech"].read_bytes()


def test_relative_paths_resolve_against_the_input_folder(media: dict[str, Path], config: Config) -> None:
    (config.paths.input_dir / "clip.mp4").write_bytes(media["video"].read_bytes())
    assert resolve_input_path("clip.mp4", "video_url", config) == (config.paths.input_dir / "clip.mp4").resolve()
    accepted = accept_api_input("sub/../clip.mp4", "video_url", "video", config)
    # A copy under uploads/: the caller may delete its own file while the task waits in the queue.
    assert accepted.parent == config.paths.uploads_dir and accepted.name.endswith("-video-clip.mp4")
    assert accepted.read_bytes() == media["video"].read_bytes()


@pytest.mark.parametrize("value", ["../../etc/passwd", "/etc/passwd", "../inputs-sibling/x.wav"])
def test_paths_outside_the_roots_are_refused(config: Config, value: str) -> None:
    with pytest.raises(InputError, match="outside the folders this server reads from"):
        resolve_input_path(value, "audio_url", config)


def test_a_symlink_out_of_the_roots_is_refused(config: Config) -> None:
    (config.paths.input_dir / "innocent.wav").symlink_to("/etc/hosts")
    with pytest.raises(InputError, match="outside the folders"):
        resolve_input_path("innocent.wav", "audio_url", config)


def test_absolute_paths_inside_a_configured_root_are_accepted(media: dict[str, Path], make_config: ConfigFactory
                                                                ) -> None:
    config = make_config(server={"allowed_roots": [str(media["speech"].parent)]})
    assert resolve_input_path(str(media["speech"]), "audio_url", config) == media["speech"].resolve()


def test_missing_files_and_disabled_downloads_say_so(config: Config) -> None:
    with pytest.raises(InputError, match=r"audio_url: file not found: 'absent\.wav'"):
        resolve_input_path("absent.wav", "audio_url", config)
    with pytest.raises(InputError, match="URL downloads are disabled"):
        accept_api_input("https://example.com/a.wav", "audio_url", "audio", config)
    with pytest.raises(InputError, match="audio_url is required"):
        accept_api_input(None, "audio_url", "audio", config)


@pytest.fixture(scope="module")
def web_server(media: dict[str, Path]) -> Iterator[str]:
    """A loopback HTTP server publishing the media folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media["speech"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_downloaded_into_the_uploads_folder_when_enabled(web_server: str, media: dict[str, Path],
                                                                   make_config: ConfigFactory) -> None:
    config = make_config(server={"allow_url_download": True})
    stored = accept_api_input(f"{web_server}/speech.wav", "audio_url", "audio", config)
    assert stored.parent == config.paths.uploads_dir
    assert stored.read_bytes() == media["speech"].read_bytes()


def test_downloads_over_the_limit_or_of_the_wrong_kind_leave_nothing_behind(web_server: str,
                                                                           make_config: ConfigFactory) -> None:
    config = make_config(server={"allow_url_download": True, "url_max_mb": 0.01})
    with pytest.raises(InputError, match=r"the limit is 0\.01 MB"):
        accept_api_input(f"{web_server}/speech.wav", "audio_url", "audio", config)
    roomy = make_config(server={"allow_url_download": True})
    with pytest.raises(InputError, match="video_url: this is an audio file"):
        accept_api_input(f"{web_server}/speech.wav", "video_url", "video", roomy)
    with pytest.raises(InputError, match="404"):
        accept_api_input(f"{web_server}/absent.wav", "audio_url", "audio", roomy)
    assert not any(config.paths.uploads_dir.iterdir())


def test_special_files_and_overlong_names_are_named_for_what_they_are(config: Config) -> None:
    config.paths.input_dir.mkdir(parents=True, exist_ok=True)
    os.mkfifo(config.paths.input_dir / "pipe.wav")
    (config.paths.input_dir / "folder.wav").mkdir()
    with pytest.raises(InputError, match=r"audio_url: file is a named pipe \(FIFO\), not a regular file: 'pipe\.wav'"):
        resolve_input_path("pipe.wav", "audio_url", config)
    with pytest.raises(InputError, match=r"audio_url: file is a folder, not a regular file: 'folder\.wav'"):
        resolve_input_path("folder.wav", "audio_url", config)
    with pytest.raises(InputError, match=r"audio_url: file has a name too long .*\(300 characters\)") as refused:
        resolve_input_path("a" * 300, "audio_url", config)
    assert len(str(refused.value)) < 300, "the name is not echoed whole"
