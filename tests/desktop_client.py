"""HeyGem.ai's desktop client (now Duix.Avatar), replayed in Python from its own source: how it makes a video.

Read from github.com/duixcom/Duix-Avatar at commit 1328feb5871448c8fa3d0e45b3bbc87e7c1d458a (2026-04-21); the
logic below is unchanged since HeyGem.ai's first release (duixcom/Duix.Avatar 31c6c59 has it word for word, with the
folder still named heygem_data). What this module replays, quoted:

src/main/config/config.js, the folder the client shares with the service:
    model: path.join(os.homedir(), 'duix_avatar_data', 'face2face', 'temp')
    face2face: 'http://127.0.0.1:8383/easy'
src/main/service/model.js, addModel: the person's video is copied in under a time stamp (after an H.264 transcode,
    which the test video needs no more):
    const modelFileName = dayjs().format('YYYYMMDDHHmmssSSS') + extname
src/main/service/voice.js, makeAudio: the speech comes from the TTS service as
    fs.writeFileSync(path.join(targetDir, `${uuid}.wav`), res, 'binary'); return `${uuid}.wav`
src/main/api/request.js: `axios.create({timeout: 0})`, and a response interceptor that returns `response.data`
    (axios rejects any status outside 2xx).
src/main/api/f2f.js:
    makeVideo(param)        -> request.post(`${serviceUrl.face2face}/submit`, param)
    getVideoStatus(taskCode) -> request.get(`${serviceUrl.face2face}/query?code=${taskCode}`)
src/main/service/video.js:
    synthesisVideo(videoId): update({id, file_path: null, status: 'pending', message: '正在提交任务'}), then the
        speech (`await makeAudio4Video(...)`, TTS, unless the video has an audio_path), then
        `await makeVideoByF2F(audioPath, model.video_path)`;
        `if(10000 === result.code)` -> pending with code: param.code, else failed with result.msg;
        any exception -> updateStatus(videoId, 'failed', error.message)
    makeVideoByF2F: param = {audio_url: audioPath, video_url: videoPath, code: crypto.randomUUID(), chaofen: 0,
        watermark_switch: 0, pn: 1}
    loopPending(): video = findFirstByStatus('pending'); none -> synthesisNext() (the first 'waiting' video goes
        to synthesisVideo, not awaited) and again in 2000 ms; else statusRes = await getVideoStatus(video.code):
        [9999, 10002, 10003].includes(statusRes.code) -> failed with statusRes.msg
        statusRes.code === 10000: data.status === 1 -> pending with data.msg, data.progress
                                  data.status === 2 -> resultPath = path.join(assetPath.model, statusRes.data.result);
                                      duration = await getVideoDuration(resultPath); success with file_path:
                                      data.result, duration
                                  data.status === 3 -> failed with data.msg
        then setTimeout(loopPending, 2000). Nothing catches: an exception ends the loop until the client restarts.
src/main/util/ffmpeg.js, getVideoDuration: fluent-ffmpeg's ffprobe(), which runs `ffprobe -show_streams
    -show_format <file>` and parses its `key=value` lines (values matching /^[0-9]+(\\.[0-9]+)?$/ become numbers),
    then `resolve(data.streams[0].duration)`; an ffprobe error or no streams rejects.
src/renderer/src/views/home/components/worksList.vue: a failed video shows `item.message`; a pending one
    `{{ item.progress }}%`.

What that means for the replay: while the speech is being made (TTS takes seconds), the video is pending with no
code yet, so the loop asks for `?code=null` (JavaScript's null in a template string). Numbers are compared with
`===`: a string "10000" is not 10000 (this replay is stricter still and wants JSON integers, as we promise).
`path.join` is Node's: it joins with "/" and then normalises, so a leading "/" of `result` does not restart the
path at the root, as Python's `/` operator would.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.supervision import wait_until

FFPROBE = Path("/usr/bin/ffprobe")  # Debian's ffmpeg package (make test installs it); imageio-ffmpeg has none
POLL_S = 2.0  # setTimeout(loopPending, 2000)
# The replay stops waiting for a video after this long (the real client never does).
VIDEO_TIMEOUT_S = 180.0
# Longest wait for one answer of the server (the client's axios has no timeout at all).
REQUEST_TIMEOUT_S = 60.0
# fluent-ffmpeg turns a value into a number when it matches /^[0-9]+(\.[0-9]+)?$/.
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


class JSTypeError(TypeError):
    """What JavaScript throws where this replay raises it (a property of null, path.join of a non-string)."""


def node_path_join(*parts: Any) -> str:
    """Node's path.posix.join: the non-empty parts joined with "/", then normalised ("." and ".." resolved, runs of
    "/" folded, a trailing "/" kept). A part that is not a string throws, as Node's validateString does."""
    for part in parts:
        if not isinstance(part, str):
            raise JSTypeError(f'The "path" argument must be of type string. Received {part!r}')
    joined = "/".join(part for part in parts if part)
    if not joined:
        return "."
    absolute, trailing = joined.startswith("/"), joined.endswith("/")
    segments: list[str] = []
    for segment in joined.split("/"):
        if segment in ("", "."):
            continue
        if segment != "..":
            segments.append(segment)
        elif segments and segments[-1] != "..":
            segments.pop()
        elif not absolute:  # above a relative start; above the root is the root
            segments.append("..")
    path = "/".join(segments)
    if not path:
        return "/" if absolute else ("./" if trailing else ".")
    return ("/" if absolute else "") + path + ("/" if trailing else "")


def js_template(value: Any) -> str:
    """`${value}` in JavaScript, for the values a task code can hold."""
    return "null" if value is None else str(value)


def js_number_is(value: Any, number: int) -> bool:
    """`value === number`, kept to JSON integers: a string, a boolean or a float does not pass."""
    return type(value) is int and value == number


def js_property(value: Any, name: str) -> Any:
    """`value.name`: undefined (None) on a non-object, a TypeError on null, as JavaScript reads it."""
    if value is None:
        raise JSTypeError(f"Cannot read properties of null (reading '{name}')")
    return value.get(name) if isinstance(value, dict) else None


def parse_ffprobe_output(text: str) -> dict[str, Any]:
    """fluent-ffmpeg's parseFfprobeOutput, for the [STREAM] and [FORMAT] blocks the client reads."""
    data: dict[str, Any] = {"streams": [], "format": {}}
    block: dict[str, Any] | None = None
    for line in (line for line in text.splitlines() if line):
        if line.lower() in ("[stream]", "[format]"):
            block = {}
            if line.lower() == "[stream]":
                data["streams"].append(block)
            else:
                data["format"] = block
        elif line.startswith("[/"):
            block = None
        elif block is not None and "=" in line:
            key, value = line.split("=", 1)
            numeric = not key.startswith("TAG:") and DECIMAL.fullmatch(value)
            block[key] = float(value) if numeric else value
    return data


def get_video_duration(path: str) -> Any:
    """getVideoDuration: `ffprobe -show_streams -show_format <file>`, streams[0].duration; errors raise."""
    run = subprocess.run([str(FFPROBE), "-show_streams", "-show_format", path], capture_output=True, text=True,
                         timeout=60)
    if run.returncode != 0:
        # fluent-ffmpeg adds the whole of stderr; its last line says what went wrong.
        raise RuntimeError(f"ffprobe exited with code {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
    streams = parse_ffprobe_output(run.stdout)["streams"]
    if not streams:
        raise RuntimeError("No streams found")
    return streams[0].get("duration")


@dataclasses.dataclass
class Video:
    """A row of the client's `video` table (src/main/db/sql.js), as far as making a video touches it."""

    id: int
    model_video: str  # the model's video_path: a file name in the shared folder
    speech: Path  # what the TTS service will say, as a file this test made
    status: str = "waiting"  # makeVideo(): draft -> waiting; then pending, success or failed
    code: str | None = None
    message: Any = None
    progress: Any = 0
    file_path: Any = None
    duration: Any = None
    audio_path: str | None = None
    # Every (status, message, progress) the client stored, in order: what the person saw.
    shown: list[tuple[str, Any, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Query:
    """One GET /easy/query of the loop: the code as sent, the HTTP status and the parsed body."""

    code: str
    status_code: int
    body: Any


class DesktopClient:
    """The client's main process against a service at `base_url`, sharing `shared_folder` with it."""

    def __init__(self, base_url: str, shared_folder: Path) -> None:
        self.base_url = base_url
        self.shared_folder = shared_folder
        self.videos: list[Video] = []
        self.queries: list[Query] = []
        self.submits: list[tuple[dict[str, Any], int, Any]] = []
        # What ended the poll loop, as it would end the real one (an exception nobody catches).
        self.loop_error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._null_polled = threading.Event()
        self._http = httpx.Client(timeout=REQUEST_TIMEOUT_S)
        self._loop = threading.Thread(target=self._run_loop, name="loopPending", daemon=True)
        self._synthesis: list[threading.Thread] = []

    # ----- what the person does -----------------------------------------------------------------------

    def add_model(self, video: Path) -> str:
        """model.js addModel: the video, copied into the shared folder as YYYYMMDDHHmmssSSS<ext>."""
        self.shared_folder.mkdir(parents=True, exist_ok=True)
        name = datetime.datetime.now().strftime("%Y%m%d%H%M%S%f")[:17] + video.suffix
        shutil.copyfile(video, self.shared_folder / name)
        return name

    def make_video(self, model_video: str, speech: Path) -> Video:
        """saveVideo, then makeVideo: a video with text to speak, waiting for the loop to take it up."""
        with self._lock:
            video = Video(id=len(self.videos) + 1, model_video=model_video, speech=speech)
            self.videos.append(video)
        return video

    def start(self) -> DesktopClient:
        """interval.js init(): loopPending() runs from the client's start."""
        self._loop.start()
        return self

    def wait_finished(self, video: Video, timeout_s: float = VIDEO_TIMEOUT_S) -> Video:
        """Wait until the video is success or failed; the loop must still be running when it is."""
        def finished() -> bool:
            if self.loop_error is not None:
                raise AssertionError(f"the client's poll loop died: {self.loop_error!r}") from self.loop_error
            return video.status in ("success", "failed")

        try:
            wait_until(finished, timeout_s, f"video {video.id} to finish", interval_s=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still {video.status}: {video.shown[-3:]}") from None
        return video

    def stop(self) -> None:
        self._stop.set()
        self._loop.join(timeout=REQUEST_TIMEOUT_S + POLL_S)
        for thread in self._synthesis:
            thread.join(timeout=REQUEST_TIMEOUT_S)
        self._http.close()

    # ----- src/main/service/video.js ------------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._loop_pending()
                self._stop.wait(POLL_S)
        except BaseException as exc:  # the real loop dies of anything; the test reports it
            self.loop_error = exc

    def _loop_pending(self) -> None:
        video = self._first_with_status("pending")
        if video is None:
            self._synthesis_next()
            return
        status_res = self._get_video_status(video.code)
        code = js_property(status_res, "code")
        if any(js_number_is(code, failure) for failure in (9999, 10002, 10003)):
            self._update(video, "failed", js_property(status_res, "msg"))
        elif js_number_is(code, 10000):
            data = js_property(status_res, "data")
            status = js_property(data, "status")
            if js_number_is(status, 1):
                self._update(video, "pending", js_property(data, "msg"), js_property(data, "progress"))
            elif js_number_is(status, 2):
                result = js_property(data, "result")
                duration = get_video_duration(node_path_join(str(self.shared_folder), result))
                video.file_path, video.duration = result, duration
                self._update(video, "success", js_property(data, "msg"), js_property(data, "progress"))
            elif js_number_is(status, 3):
                self._update(video, "failed", js_property(data, "msg"))

    def _synthesis_next(self) -> None:
        video = self._first_with_status("waiting")
        if video is None:
            return
        # synthesisVideo's first statement runs at once, before its first await: pending, and no code yet.
        self._update(video, "pending", "正在提交任务")
        video.file_path = None
        thread = threading.Thread(target=self._synthesis_video, args=(video,), name=f"synthesisVideo-{video.id}")
        self._synthesis.append(thread)
        thread.start()

    def _synthesis_video(self, video: Video) -> None:
        try:
            audio_path = video.audio_path or self._make_audio(video.speech)
            param = {"audio_url": audio_path, "video_url": video.model_video, "code": str(uuid.uuid4()),
                     "chaofen": 0, "watermark_switch": 0, "pn": 1}
            result = self._post("/submit", param)
            video.audio_path, video.code = audio_path, param["code"]
            if js_number_is(js_property(result, "code"), 10000):
                self._update(video, "pending", result)
            else:
                self._update(video, "failed", js_property(result, "msg"))
        except Exception as exc:  # synthesisVideo's own catch: the video fails with the error
            self._update(video, "failed", str(exc))

    def _make_audio(self, speech: Path) -> str:
        """voice.js makeAudio: the TTS service's wav, written as <uuid>.wav. TTS takes seconds, longer than one poll
        interval: this one finishes only after the loop has asked for the pending video once (?code=null)."""
        if not self._null_polled.wait(VIDEO_TIMEOUT_S):
            raise RuntimeError("the poll loop never asked for the pending video while its speech was made")
        name = f"{uuid.uuid4()}.wav"
        shutil.copyfile(speech, self.shared_folder / name)
        return name

    # ----- src/main/api/f2f.js, request.js ------------------------------------------------------------

    def _get_video_status(self, code: str | None) -> Any:
        sent = js_template(code)
        response = self._http.get(f"{self.base_url}/easy/query?code={sent}")
        body = self._data(response)
        self.queries.append(Query(sent, response.status_code, body))
        if code is None:
            self._null_polled.set()
        return body

    def _post(self, route: str, param: dict[str, Any]) -> Any:
        response = self._http.post(f"{self.base_url}/easy{route}", json=param)
        body = self._data(response)
        self.submits.append((param, response.status_code, body))
        return body

    @staticmethod
    def _data(response: httpx.Response) -> Any:
        """axios: a status outside 2xx rejects; else response.data, JSON parsed when it parses."""
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"Request failed with status code {response.status_code}")
        try:
            return response.json()
        except ValueError:
            return response.text

    # ----- src/main/dao/video.js ----------------------------------------------------------------------

    def _first_with_status(self, status: str) -> Video | None:
        with self._lock:
            return next((video for video in self.videos if video.status == status), None)

    def _update(self, video: Video, status: str, message: Any, progress: Any = 0) -> None:
        with self._lock:
            video.status, video.message, video.progress = status, message, progress
            video.shown.append((status, message, progress))
