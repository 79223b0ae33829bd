"""The browser studio (Gradio 6): generate, follow and manage tasks, and see the machine's state.

The page holds no task state of its own: everything it shows is read from the TaskSupervisor, so closing
or reloading the page never touches a task, and ?code=<code> (or the browser's memory) reattaches to one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from heygem import __version__
from heygem.config import Config
from heygem.engines.models import model_statuses
from heygem.engines.registry import DEFAULT_ENGINE, ENGINES, list_engines
from heygem.errors import HeyGemError, InputError, TaskNotFoundError
from heygem.intake.media_check import SLOT_NAMES, Slot
from heygem.intake.uploads import accept_upload
from heygem.options import LOOP_MODES, MOUTH_INTENSITY, SPEECH_LANGUAGES, LoopMode, SpeechLanguage, TaskOptions
from heygem.supervisor import TaskRecord, TaskRequest, TaskState, TaskSupervisor
from heygem.ui.controls import checked_by_task_options
from heygem.ui.live import live_player, live_value
from heygem.ui.predict import add_predict_endpoint
from heygem.ui.views import (
    IDLE_HTML,
    TASK_COLUMNS,
    engine_note,
    history_html,
    missing_html,
    models_markdown,
    status_html,
    system_markdown,
    task_rows,
)

CSS_PATH = Path(__file__).with_name("studio.css")
GENERATE_TAB = "generate"
LOOP_MODE_LABELS: dict[LoopMode, str] = {"pingpong": "Ping-pong (forward, then backward)",
                                         "loop": "Loop from the start"}
SPEECH_LANGUAGE_LABELS: dict[SpeechLanguage, str] = {"en": "English (lips follow the phones)",
                                                     "other": "Another language (lips follow the sound)"}
# Writes ?code=<code> into the address bar, so a reload or a shared link comes back to the same task.
REMEMBER_CODE_JS = """(code) => {
  const url = new URL(window.location.href);
  if (code) { url.searchParams.set("code", code); } else { url.searchParams.delete("code"); }
  window.history.replaceState(null, "", url);
  return code;
}"""

T = TypeVar("T")
# What the Generate tab's task view is made of, in this order, for every handler that updates it.
TaskView = tuple[Any, Any, Any, Any, Any]


class Studio:
    """The page's handlers, bound to one supervisor and config."""

    def __init__(self, supervisor: TaskSupervisor, config: Config) -> None:
        self.supervisor = supervisor
        self.config = config

    # ----- Generate tab ------------------------------------------------------------------------------

    def load_page(self, remembered_code: str | None, request: gr.Request) -> tuple[Any, ...]:
        engines = list_engines(self.config)
        choices = [name for name, state in engines.items() if state.available]
        default = DEFAULT_ENGINE if DEFAULT_ENGINE in choices else next(iter(choices), None)
        code = request.query_params.get("code") or remembered_code or ""
        return (gr.Dropdown(choices=choices, value=default), engine_note(engines),
                gr.Button(interactive=bool(choices)), *self.attach(code))

    def generate(self, audio: str | None, video: str | None, engine: str | None, loop_mode: LoopMode,
                 mouth_intensity: float, ai_label: bool, watermark: bool,
                 speech_language: SpeechLanguage) -> TaskView:
        options = self.act(lambda: TaskOptions(loop_mode=loop_mode, mouth_intensity=mouth_intensity,
                                               ai_label=ai_label, watermark=watermark,
                                               speech_language=speech_language))
        return self.attach(self.submit(audio, video, engine, options))

    def submit(self, audio: str | None, video: str | None, engine: str | None, options: TaskOptions) -> str:
        """Check and keep the two uploads, and queue their task; a gr.Error says what is missing or wrong."""
        if not audio:
            raise gr.Error("Add the speech first: upload an audio file or record one with the microphone.")
        if not video:
            raise gr.Error("Add the video of a person facing the camera.")
        if not engine:
            raise gr.Error("No engine is available on this server; see the System tab.")
        stored: list[Path] = []
        try:
            stored.append(self.accept(Path(audio), "audio"))
            stored.append(self.accept(Path(video), "video"))
            code = self.supervisor.submit(TaskRequest(audio_path=stored[0], video_path=stored[1], engine=engine,
                                                      options=options))
        except HeyGemError as exc:
            for path in stored:
                path.unlink(missing_ok=True)
            raise gr.Error(str(exc)) from None
        return code

    def accept(self, upload: Path, slot: Slot) -> Path:
        try:
            return accept_upload(upload, slot, self.config)
        except InputError as exc:
            raise InputError(f"{SLOT_NAMES[slot].capitalize()}: {exc}") from None

    def attach(self, code: str) -> TaskView:
        """Show a task from scratch (after submit, a reload or "Open"), clearing any previous result."""
        record = self.find(code)
        if record is None:
            idle = self.idle_view()
            return ("", missing_html(code.strip()) if code.strip() else idle[0], *idle[1:])
        if record.state.is_final:
            return (record.code, *self.final_view(record))
        return (record.code, status_html(record), None, gr.DownloadButton(value=None, visible=False),
                gr.Timer(active=True))

    def poll(self, code: str) -> tuple[Any, Any, Any, Any]:
        """One timer tick: the status card while the task runs; the result once, when it ends."""
        record = self.find(code)
        if record is None:
            return self.idle_view()
        if record.state.is_final:
            return self.final_view(record)
        return status_html(record), gr.skip(), gr.skip(), gr.skip()

    @staticmethod
    def idle_view() -> tuple[Any, Any, Any, Any]:
        return IDLE_HTML, None, gr.DownloadButton(value=None, visible=False), gr.Timer(active=False)

    def final_view(self, record: TaskRecord) -> tuple[Any, Any, Any, Any]:
        result = record.result_path if record.state is TaskState.SUCCEEDED and record.result_path else None
        if result and not Path(result).is_file():
            result = None
        return (status_html(record), result, gr.DownloadButton(value=result, visible=bool(result)),
                gr.Timer(active=False))

    def live_view(self, code: str, shown: str) -> Any:
        """The live preview of the task on show: its stream while it renders (heygem.ui.live)."""
        wanted = live_value(self.find(code), self.config)
        return gr.skip() if wanted == shown else wanted

    def find(self, code: str) -> TaskRecord | None:
        if not code:
            return None
        try:
            return self.supervisor.status(code.strip())
        except TaskNotFoundError:
            return None

    # ----- Tasks tab ---------------------------------------------------------------------------------

    def table(self) -> list[list[str]]:
        return task_rows(self.supervisor.list_tasks(limit=self.config.server.task_list_limit))

    def history(self, code: str) -> str:
        return history_html(self.find(code))

    def pick_row(self, event: gr.SelectData) -> str:
        return str(event.row_value[0]) if event.row_value else ""

    def open_task(self, code: str) -> tuple[Any, ...]:
        record = self.act(lambda: self.supervisor.status(self.selected_code(code)))
        return (gr.Tabs(selected=GENERATE_TAB), *self.attach(record.code))

    def cancel_task(self, code: str) -> list[list[str]]:
        record = self.act(lambda: self.supervisor.cancel(self.selected_code(code)))
        gr.Info(f"Task {record.code} cancelled.")
        return self.table()

    def retry_task(self, code: str) -> list[list[str]]:
        record = self.act(lambda: self.supervisor.retry(self.selected_code(code)))
        gr.Info(f"Task {record.code} is queued again.")
        return self.table()

    def delete_task(self, code: str) -> tuple[str, list[list[str]]]:
        self.act(lambda: self.supervisor.delete(self.selected_code(code)))
        gr.Info(f"Task {code.strip()} and its files were deleted.")
        return "", self.table()

    def selected_code(self, code: str) -> str:
        if not code or not code.strip():
            raise gr.Error("Select a task in the table first (or paste its code).")
        return code.strip()

    @staticmethod
    def act(action: Callable[[], T]) -> T:
        try:
            return action()
        except HeyGemError as exc:
            raise gr.Error(str(exc)) from None

    # ----- System tab --------------------------------------------------------------------------------

    def system(self) -> tuple[str, str]:
        engines = list_engines(self.config)
        models = [status.to_dict() for status in model_statuses(self.config)]
        return system_markdown(self.supervisor.system_info(), engines), models_markdown(models)


def build_studio(supervisor: TaskSupervisor, config: Config) -> gr.Blocks:
    studio = Studio(supervisor, config)
    refresh_s = config.server.ui_refresh_s
    # Gradio's cached copies of uploads and results are views only; ours live in data_dir.
    with gr.Blocks(title="HeyGem Studio", analytics_enabled=False, delete_cache=(3600, 6 * 3600)) as page:
        remembered = gr.BrowserState("", storage_key="heygem-task-code")
        gr.HTML("<div class='hg-header'><h1>HeyGem Studio</h1>"
                "<p>Give a speech and a video of a face; get the video back with the lips following the speech."
                "</p></div>")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id=GENERATE_TAB):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        audio = gr.Audio(label="1. Speech", sources=["upload", "microphone"], type="filepath",
                                         elem_id="hg-speech")
                        video = gr.Video(label="2. Video of a person facing the camera", sources=["upload"],
                                         height=300, elem_id="hg-video")
                        # Every registered name, so calls without a page load validate; the load narrows it
                        # to the engines available now.
                        engine = gr.Dropdown(label="3. Engine", choices=list(ENGINES), value=DEFAULT_ENGINE,
                                             interactive=True)
                        engine_info = gr.Markdown(elem_classes=["hg-note"])
                        # Each option starts at the server's default (configs/default.yaml).
                        with gr.Accordion("Options", open=False):
                            loop_mode = checked_by_task_options(gr.Radio(
                                [(LOOP_MODE_LABELS[mode], mode) for mode in LOOP_MODES], value=config.media.loop_mode,
                                label="When the speech is longer than the video"))
                            intensity = checked_by_task_options(gr.Slider(
                                MOUTH_INTENSITY.low, MOUTH_INTENSITY.high, value=config.meshwarp.mouth_intensity,
                                step=0.05, label="Mouth movement intensity"))
                            speech_language = checked_by_task_options(gr.Radio(
                                [(SPEECH_LANGUAGE_LABELS[language], language) for language in SPEECH_LANGUAGES],
                                value=config.meshwarp.speech_language, label="Language of the speech (lip shapes)"))
                            with gr.Row():
                                ai_label = gr.Checkbox(value=config.media.ai_label,
                                                       label='Add an "AI-generated" label to the video')
                                watermark = gr.Checkbox(value=config.media.watermark, label="Add a watermark")
                        submit = gr.Button("Generate", variant="primary", size="lg", interactive=False)
                    with gr.Column(scale=5):
                        code = gr.Textbox(label="Task code", interactive=False, buttons=["copy"])
                        status = gr.HTML(IDLE_HTML, elem_id="hg-status")
                        live = live_player()
                        result = gr.Video(label="Result", interactive=False, height=360, elem_id="hg-result")
                        download = gr.DownloadButton("Download the video", visible=False, variant="secondary")
                timer = gr.Timer(refresh_s, active=False)
            with gr.Tab("Tasks", id="tasks") as tasks_tab:
                task_table = gr.Dataframe(headers=TASK_COLUMNS, interactive=False, wrap=True, max_height=520,
                                          column_widths=["14%", "12%", "18%", "8%", "8%", "7%", "8%", "25%"])
                with gr.Row():
                    selected = gr.Textbox(label="Selected task", placeholder="click a row, or paste a task code",
                                          scale=3)
                    open_button = gr.Button("Open", scale=1)
                    cancel_button = gr.Button("Cancel", scale=1)
                    retry_button = gr.Button("Retry", scale=1)
                    delete_button = gr.Button("Delete with files", variant="stop", scale=1)
                attempts = gr.HTML(elem_id="hg-history")
                table_timer = gr.Timer(max(2.0, 2 * refresh_s))
            with gr.Tab("System", id="system") as system_tab:
                system_info = gr.Markdown(elem_classes=["hg-system"])
                models_info = gr.Markdown(elem_classes=["hg-system"])
                refresh_system = gr.Button("Refresh", size="sm")
        gr.Markdown(f"HeyGem {__version__} · tasks keep running when this page is closed · "
                    "the same tasks are served to HeyGem.ai clients at /easy/*", elem_classes=["hg-footer"])

        task_view = [code, status, result, download, timer]
        page.load(studio.load_page, [remembered], [engine, engine_info, submit, *task_view],
                  api_visibility="private")
        # Whichever handler changes the shown task (submit, load, Open), the browser remembers it.
        code.change(lambda value: value, [code], [remembered], js=REMEMBER_CODE_JS, api_visibility="private")
        submit.click(studio.generate, [audio, video, engine, loop_mode, intensity, ai_label, watermark,
                                        speech_language], task_view,
                     api_name="generate", concurrency_limit=4)
        timer.tick(studio.poll, [code], [status, result, download, timer], api_name="task_status",
                   show_progress="hidden", concurrency_limit=None)
        # The status card changes with every tick and whenever another task is shown: the preview follows it.
        status.change(studio.live_view, [code, live], [live], show_progress="hidden", api_visibility="private",
                      concurrency_limit=None)
        for trigger in (table_timer.tick, tasks_tab.select, page.load):
            trigger(studio.table, None, task_table, show_progress="hidden", api_visibility="private",
                    concurrency_limit=None)
        task_table.select(studio.pick_row, None, selected, api_visibility="private")
        selected.change(studio.history, [selected], [attempts], show_progress="hidden", api_visibility="private")
        open_button.click(studio.open_task, [selected], [tabs, *task_view], api_visibility="private")
        cancel_button.click(studio.cancel_task, [selected], [task_table], api_visibility="private")
        retry_button.click(studio.retry_task, [selected], [task_table], api_visibility="private")
        delete_button.click(studio.delete_task, [selected], [selected, task_table], api_visibility="private")
        for trigger in (system_tab.select, refresh_system.click):
            trigger(studio.system, None, [system_info, models_info], api_visibility="private")
        add_predict_endpoint(studio)
    page.queue(default_concurrency_limit=2, max_size=config.server.page_queue_max)
    return page
