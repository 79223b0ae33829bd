"""`/predict`: the blocking endpoint of HeyGem-Linux-Python-Hack's app, so scripts written for it work unchanged.

That app served `gr.Interface(fn=process_video, inputs=[gr.File(), gr.File()], outputs=gr.Video())`, which Gradio
names /predict, and its users script it as
    Client("http://host:7860/").predict(handle_file("speech.wav"), handle_file("person.mp4"), api_name="/predict")
to get the path of the finished video back. The same component types here make gradio_client upload the two
files and download the result the same way; engine and loop mode may follow, with the page's defaults. The
components are hidden: the page has its own Generate tab.

The call submits through the studio's own path (the same upload checks and the same TaskSupervisor: the task shows
in the Tasks tab and both HTTP APIs, with its queue position) and answers when the task ends: the video, or a
gr.Error with the task's message. Closing the client ends the wait, never the task.

Waiting happens in our queue, not one call behind the other in Gradio's: as many calls run at once as the
server holds tasks (supervisor.queue_max waiting plus max_workers running); a call beyond that waits in Gradio's
queue for one to end, and a task our full queue cannot take is refused with "queue full", as everywhere. The
handler is a coroutine that reads the task's state in a worker thread every server.ui_refresh_s, so a waiting call
holds neither the event loop nor a thread. The wait has a bound: a started task ends within its deadline
(supervisor.task_timeout_s, see TaskSupervisor.deadline_s), and the call gives up when the deadline has long passed
without an end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import gradio as gr

from heygem.engines.registry import DEFAULT_ENGINE, ENGINES
from heygem.errors import TaskNotFoundError
from heygem.options import LOOP_MODES, LoopMode, TaskOptions
from heygem.supervisor import TaskRecord, TaskState
from heygem.ui.controls import checked_by_task_options

if TYPE_CHECKING:  # heygem.ui.studio builds the page and imports this module
    from heygem.ui.studio import Studio

# The supervisor ends a task one poll_interval_s after its deadline; this much more covers a machine under load.
DEADLINE_MARGIN_S = 60.0


class Predict:
    """The /predict handler, on the studio's way of submitting a task."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.supervisor = studio.supervisor
        self.config = studio.config

    async def run(self, audio: str | None, video: str | None, engine: str | None, loop_mode: LoopMode) -> str:
        options = self.studio.act(lambda: TaskOptions(loop_mode=loop_mode))
        # Probing and copying the uploads touch the disk: off the event loop.
        code = await anyio.to_thread.run_sync(
            lambda: self.studio.act(lambda: self.studio.submit(audio, video, engine, options)))
        record = await self.wait(code)
        if record.state is not TaskState.SUCCEEDED or not record.result_path:
            raise gr.Error(f"task {code} {record.state.value}: {record.summary}")
        return record.result_path

    async def wait(self, code: str) -> TaskRecord:
        """The task's final record; a gr.Error if it is deleted, or outlives its deadline by DEADLINE_MARGIN_S."""
        settings = self.config.supervisor
        give_up_at: float | None = None
        while True:
            try:
                record = await anyio.to_thread.run_sync(self.supervisor.status, code)
            except TaskNotFoundError:
                raise gr.Error(f"task {code} was deleted before it ended") from None
            if record.state.is_final:
                return record
            if record.started_at is not None and give_up_at is None:
                deadline_s = await anyio.to_thread.run_sync(self.supervisor.deadline_s, record)
                give_up_at = record.started_at + deadline_s + settings.poll_interval_s + DEADLINE_MARGIN_S
            if give_up_at is not None and time.time() > give_up_at:
                raise gr.Error(f"task {code} did not end within its deadline; it is {record.state.value} "
                               f"({record.summary}): see the Tasks tab")
            await anyio.sleep(self.config.server.ui_refresh_s)


def add_predict_endpoint(studio: Studio) -> None:
    """The hidden components and the event of /predict, in the Blocks being built."""
    audio = gr.File(label="audio", visible=False)
    video = gr.File(label="video", visible=False)
    engine = gr.Dropdown(list(ENGINES), value=DEFAULT_ENGINE, label="engine", visible=False)
    loop_mode = checked_by_task_options(gr.Radio(list(LOOP_MODES), value=studio.config.media.loop_mode,
                                                 label="loop_mode", visible=False))
    result = gr.Video(label="result", visible=False)
    settings = studio.config.supervisor
    gr.Button(visible=False).click(Predict(studio).run, [audio, video, engine, loop_mode], result, api_name="predict",
                                   show_progress="hidden", concurrency_limit=settings.queue_max + settings.max_workers)
