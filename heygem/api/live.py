"""A task's live preview over HTTP: GET /api/v1/tasks/{code}/live.m3u8 and the segments that playlist names.

Any HLS player can open the playlist URL while the task renders (see docs/api.md); the segment URLs are relative
to it. The credential rule of every route applies (heygem.api.auth), so a browser uses its sign-in cookie and a
player sends the token in a header. Only the files heygem.pipeline.live names are ever served, and only from the
task's own stream folder, opened before the answer (heygem.api.served_files); the routes are sync, so FastAPI runs
their file work in its thread pool.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from heygem.api.context import ConfigDep, SupervisorDep
from heygem.api.served_files import OpenFileResponse
from heygem.config import Config
from heygem.errors import quote_input
from heygem.pipeline.live import SEGMENT_PREFIX, STREAM_URL, live_stream, playlist_url, segment_count
from heygem.supervisor.states import TaskRecord, TaskState

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp4"  # fragmented MP4: the init segment and the media segments alike
# Players start an unfinished (live) playlist near its end; this one is a video being made, watched from the start.
START_TAG = "#EXT-X-START:TIME-OFFSET=0"
# The playlist grows, and a retried task writes its segments again under the same names: always revalidate.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["HeyGem studio"])


@router.get("/" + playlist_url("{code}"))
def playlist(code: str, supervisor: SupervisorDep, config: ConfigDep) -> Response:
    record = supervisor.status(code)
    text = None if record.state is TaskState.QUEUED else live_stream(config, record.code).read_playlist()
    if text is None or not segment_count(text):
        retry = {"Retry-After": "1"} if record.state.is_active else None
        return JSONResponse({"error": no_stream(record, config)}, status_code=404, headers=retry)
    return Response(for_players(text), media_type=PLAYLIST_TYPE, headers=NO_CACHE)


@router.get("/" + STREAM_URL + SEGMENT_PREFIX + "{part}")
def segment(code: str, part: str, supervisor: SupervisorDep, config: ConfigDep) -> Response:
    record = supervisor.status(code)
    name = f"{SEGMENT_PREFIX}{part}"
    opened = None if record.state is TaskState.QUEUED else live_stream(config, record.code).open_segment(name)
    if opened is None:
        return JSONResponse({"error": f"the live stream of task {record.code} has no segment {quote_input(name)}"},
                            status_code=404)
    return OpenFileResponse(opened, media_type=SEGMENT_TYPE, headers=NO_CACHE)


def for_players(playlist_text: str) -> str:
    """The playlist as served: players start at the beginning of the video rather than at its newest segment."""
    head, _, rest = playlist_text.partition("\n")
    return f"{head}\n{START_TAG}\n{rest}"


def no_stream(record: TaskRecord, config: Config) -> str:
    """Why there is nothing to play (yet), in one sentence."""
    task = f"task {record.code}"
    if record.state is TaskState.QUEUED:
        return f"{task} has not started yet ({record.summary}): its live stream begins once it renders"
    if not config.live.enabled:
        return f"{task} has no live stream: this server writes none (live.enabled is false)"
    if record.state.is_active:
        return (f"{task} has no live segment yet: the first one is ready when rendering reaches "
                f"{config.live.segment_s:g} s of video; try again in a moment")
    if record.state is TaskState.SUCCEEDED:
        return f"{task} has no live stream (any more); its result is at /api/v1/tasks/{record.code}/result"
    return f"{task} {record.state.value} before its live stream had a segment"
