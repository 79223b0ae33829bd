"""The format rules of heygem.pipeline.media_formats, container by container.

The allow-list holds only containers that declare their streams in their header, so that the frame limit reaches
the frames libavformat decodes while it opens a file. Each is checked here with a frame-size bomb, measuring the peak
memory of the open in a fresh process; a container outside the list (FLV, which finds its streams by decoding)
is refused by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from heygem.errors import InputError
from heygem.pipeline.media import probe_audio, probe_video
from heygem.pipeline.media_formats import VIDEO_FORMATS
from tests.conftest import REPO_ROOT
from tests.media import ffmpeg, frame_size_bomb

pytestmark = pytest.mark.slow

SIDE = 16000
# An open that decoded the declared frames grew by 0.7 to 1.7 GB; refused by declared size, by about 85 MB.
MAX_OPEN_GROWTH_MB = 150
CONTAINERS = {"mp4": [], "mkv": [], "avi": [], "wmv": ["-f", "asf"]}

MEASURE = """
import json, sys
from pathlib import Path
from heygem.errors import InputError
from heygem.pipeline.media import probe_audio, probe_video

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

results = {}
for path in sys.argv[1:]:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from here
    before = status("VmRSS:")
    try:
        probe_video(Path(path), 4096)
        message = ""
    except InputError as exc:
        message = str(exc)
    results[path] = [message, status("VmHWM:") - before]
print(json.dumps(results))
"""


def test_every_allowed_container_refuses_a_frame_bomb_before_decoding_it(tmp_path: Path) -> None:
    assert sorted(VIDEO_FORMATS) == ["asf", "avi", "matroska", "mov"]
    bomb = frame_size_bomb(tmp_path / "source.mp4", SIDE)
    paths = []
    for suffix, args in CONTAINERS.items():
        paths.append(tmp_path / f"bomb.{suffix}")
        ffmpeg("-i", str(bomb), "-c", "copy", *args, str(paths[-1]))
    measured = subprocess.run([sys.executable, "-c", MEASURE, *map(str, paths)], cwd=REPO_ROOT, check=True,
                              capture_output=True, text=True)
    for path, (message, growth_mb) in json.loads(measured.stdout).items():
        assert message.startswith(f"video frames are {SIDE}x{SIDE} pixels; the limit is 4096"), (path, message)
        assert growth_mb < MAX_OPEN_GROWTH_MB, f"{path}: its open grew the process by {growth_mb:.0f} MB"


def test_a_container_that_finds_its_streams_by_decoding_is_refused_by_name(tmp_path: Path) -> None:
    flv = tmp_path / "clip.flv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-t", "1", str(flv))
    with pytest.raises(InputError, match=r"^video file is an FLV file, which finds its streams only by decoding "
                                         r"them: clip\.flv; this server reads MP4/MOV/M4V/3GP, MKV/WebM"):
        probe_video(flv)


def test_a_playlist_dressed_as_speech_is_named_as_a_playlist(tmp_path: Path) -> None:
    # libavformat itself declines to probe it as HLS under a media name; the refusal must still say what it is.
    playlist = tmp_path / "speech.mp3"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:/etc/hostname\n#EXT-X-ENDLIST\n")
    with pytest.raises(InputError, match=r"^audio file is an HLS playlist, which names other files: speech\.mp3; "):
        probe_audio(playlist)
