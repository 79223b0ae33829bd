"""The studio's live preview: the result area plays a task's HLS stream while it renders (heygem.pipeline.live).

The component's value is the stream's playlist URL, set once the first segment exists and cleared when the task
ends, when its result takes the place (studio.css hides the result while the preview plays). The player is
heygem/ui/live_player.js, on the hls.js build that Gradio's own frontend ships for its streaming video: nothing
is loaded from elsewhere.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
from loguru import logger

from heygem.config import Config
from heygem.pipeline.live import live_stream, playlist_url, segment_count
from heygem.supervisor import TaskRecord

PLAYER_JS = Path(__file__).with_name("live_player.js")
# A JavaScript template literal (Gradio's gr.HTML); `value` is the playlist URL, escaped by live_value.
TEMPLATE = ("${value ? '<div class=\"hg-live-head\"><span class=\"hg-live-dot\"></span>Live preview: the video is "
            "still being made</div><video class=\"hg-live-video\" controls playsinline data-src=\"' + value + "
            "'\"></video><div class=\"hg-live-note\"></div>' : ''}")


def live_player() -> gr.HTML:
    """The preview's component; empty (and hidden by studio.css) while there is nothing to play."""
    return gr.HTML("", html_template=TEMPLATE, js_on_load=PLAYER_JS.read_text(encoding="utf-8"),
                   elem_id="hg-live", hls_module=gradio_hls_module())


def live_value(record: TaskRecord | None, config: Config) -> str:
    """The playlist URL while the task renders and its stream has a segment; "" otherwise."""
    if record is None or not record.state.is_active or not config.live.enabled:
        return ""
    playlist = live_stream(config, record.code).read_playlist()
    return html.escape(playlist_url(record.code)) if playlist and segment_count(playlist) else ""


def gradio_hls_module() -> str:
    """The hls.js module of Gradio's frontend, as a URL from the page's root (Gradio serves its build at assets/)."""
    found = sorted((Path(gr.__file__).parent / "templates" / "frontend" / "assets").glob("hls-*.js"))
    if not found:
        logger.warning("this Gradio ships no hls.js; the live preview plays only where the browser plays HLS itself")
        return ""
    return f"assets/{found[0].name}"
