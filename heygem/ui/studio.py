"""The browser studio (Gradio 6): generate, follow and manage tasks, and see the machine's state.

The page holds no task state of its own: everything it shows is read from the TaskSupervisor, so closing
or reloading the page never touches a task, and ?code=<code> (or the browser's memory) reattaches to one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from heygem import __version__
from heygem.config import Config
from heygem.engines.models import model_statuses
from heygem.engines.registry import DEFAULT_ENGINE, ENGINES, accept_options, list_engines, options_taken
from heygem.errors import HeyGemError, InputError, TaskNotFoundError
from heygem.intake.media_check import SLOT_NAMES, Slot
from heygem.intake.uploads import accept_upload
from heygem.options import LOOP_MODES, MOUTH_INTENSITY, SPEECH_LANGUAGES, LoopMode, SpeechLanguage, TaskOptions
from heygem.supervisor import TaskRecord, TaskRequest, TaskState, TaskSupervisor
from heygem.ui.controls import checked_by_task_options
from heygem.ui.live import live_player, live_value
from heygem.ui.predict import add_predict_endpoint
from heygem.ui.thumbnails import thumbnail_uri
from heygem.ui.views import (
    IDLE_HTML,
    ShownTask,
    engine_note,
    history_html,
    limits_html,
    missing_html,
    models_markdown,
    refused_html,
    slot_note_html,
    status_html,
    steady,
    system_markdown,
    task_list_html,
)

CSS_PATH = Path(__file__).with_name("studio.css")
SLOT_GUARD_JS = Path(__file__).with_name("slot_guard.js")
TASK_LIST_JS = Path(__file__).with_name("task_list.js")
GENERATE_TAB = "generate"
SPEECH_LANGUAGE_LABELS: dict[SpeechLanguage, str] = {"en": "English (lips follow the phones)",
                                                     "other": "Another language (lips follow the sound)"}
LOOP_MODE_LABELS: dict[LoopMode, str] = {"pingpong": "Ping-pong (forward, then backward)",
                                         "loop": "Loop from the start"}
# Writes ?code=<code> into the address bar, so a reload or a shared link comes back to the same task.
REMEMBER_CODE_JS = """(code) => {
  const url = new URL(window.location.href);
  if (code) { url.searchParams.set("code", code); } else { url.searchParams.delete("code"); }
  window.history.replaceState(null, "", url);
  return code;
}"""
# Empties a slot's note (a refusal's reason) when another file is put in that slot.
CLEAR_NOTE_JS = "() => ''"

T = TypeVar("T")
# The Generate tab's task view, in this order, for every handler that changes it: task code, status card, live
# preview, result video, download button, the poll timer, and what was shown (heygem.ui.views.steady). Each handler
# builds all of it from one look at one task record, and Gradio applies one event's outputs together: the page
# never shows a finished status beside the live preview, nor a running status beside the result.
TaskView = tuple[Any, Any, Any, Any, Any, Any, Any]


class Refusal(InputError):
    """Generate refused: the reason for each slot at fault ("audio", "video"), or for none in particular (None).
    Its message, for scripts, names the slot before each reason."""

    def __init__(self, reasons: dict[Slot | None, str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reason if slot is None or reason.startswith("Add ")
                                   else f"{SLOT_NAMES[slot].capitalize()}: {reason}"
                                   for slot, reason in reasons.items()))


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

    def engine_options(self, engine: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Mouth intensity and speech language, shown only for an engine that takes them (meshwarp, not wav2lip)."""
        taken = options_taken(engine) if engine else frozenset()
        return self.option_control("mouth_intensity", taken), self.option_control("speech_language", taken)

    def option_control(self, name: str, taken: frozenset[str]) -> dict[str, Any]:
        """Hidden, an option goes back to the server's default: a value moved for one engine is then no choice made
        for another that does not take it, and is not refused."""
        if name in taken:
            return gr.update(visible=True)
        return gr.update(visible=False, value=getattr(self.config.option_defaults, name))

    def generate(self, audio: str | None, video: str | None, engine: str | None, loop_mode: LoopMode,
                 mouth_intensity: float, ai_label: bool, watermark: bool,
                 speech_language: SpeechLanguage) -> tuple[Any, ...]:
        """For scripts (gradio_client's /generate): a refusal is an error, with its reason. Returns the task code,
        status card, result, download button and timer."""
        code, status, _, result, download, timer, _ = self.attach(self.act(lambda: self.submit_checked(
            audio, video, engine, loop_mode, mouth_intensity, ai_label, watermark, speech_language)))
        return code, status, result, download, timer

    def generate_on_page(self, audio: str | None, video: str | None, engine: str | None, loop_mode: LoopMode,
                         mouth_intensity: float, ai_label: bool, watermark: bool,
                         speech_language: SpeechLanguage) -> tuple[Any, ...]:
        """For the page's button: a refusal's reason stays on the page, under the slot at fault."""
        try:
            code = self.submit_checked(audio, video, engine, loop_mode, mouth_intensity, ai_label, watermark,
                                       speech_language)
        except Refusal as refusal:
            slots = [SLOT_NAMES[slot] for slot in ("audio", "video") if slot in refusal.reasons]
            general = refusal.reasons.get(None, "")
            card = refused_html(slots) if slots else f"<div class='hg-card hg-refused'>{slot_note_html(general)}</div>"
            view = ("", card, "", None, gr.DownloadButton(value=None, visible=False), gr.Timer(active=False), None)
            return (*view, slot_note_html(refusal.reasons.get("audio", "")),
                    slot_note_html(refusal.reasons.get("video", "")))
        return (*self.attach(code), "", "")

    def submit_checked(self, audio: str | None, video: str | None, engine: str | None, loop_mode: LoopMode,
                       mouth_intensity: float, ai_label: bool, watermark: bool,
                       speech_language: SpeechLanguage) -> str:
        try:
            # The controls start at the server's defaults: a value left there is no choice of the person's, and an
            # engine that does not take that option (wav2lip: mouth_intensity) is not refused for it.
            options = TaskOptions(loop_mode=loop_mode, mouth_intensity=mouth_intensity, ai_label=ai_label,
                                  watermark=watermark, speech_language=speech_language).without(
                                      self.config.option_defaults)
            if engine:  # before the uploads are copied (the supervisor's submit checks again)
                accept_options(engine, options)
        except InputError as exc:
            raise Refusal({None: str(exc)}) from None
        return self.submit(audio, video, engine, options)

    def submit(self, audio: str | None, video: str | None, engine: str | None, options: TaskOptions) -> str:
        """Check and keep the two uploads, and queue their task; a Refusal says which slot is wrong and why."""
        reasons: dict[Slot | None, str] = {}
        if not audio:
            reasons["audio"] = "Add the speech first: upload an audio file or record one with the microphone."
        if not video:
            reasons["video"] = "Add the video of a person facing the camera."
        if not engine and not reasons:
            reasons[None] = "No engine is available on this server; see the System tab."
        stored: dict[Slot, Path] = {}
        uploads: tuple[tuple[Slot, str | None], ...] = (("audio", audio), ("video", video))
        for slot, upload in uploads:
            if upload and not reasons.get(None):
                try:
                    stored[slot] = accept_upload(Path(upload), slot, self.config)
                except InputError as exc:
                    reasons[slot] = str(exc)
        try:
            if reasons:
                raise Refusal(reasons)
            return self.supervisor.submit(TaskRequest(audio_path=stored["audio"], video_path=stored["video"],
                                                      engine=engine or "", options=options))
        except HeyGemError as exc:
            for path in stored.values():
                path.unlink(missing_ok=True)
            raise exc if isinstance(exc, Refusal) else Refusal({None: str(exc)}) from None

    def attach(self, code: str) -> TaskView:
        """Show a task from scratch (after submit, a reload or "Open"), clearing any previous result."""
        record = self.find(code)
        if record is None:
            shown = missing_html(code.strip()) if code.strip() else IDLE_HTML
            return ("", shown, "", None, gr.DownloadButton(value=None, visible=False), gr.Timer(active=False), None)
        return (record.code, *self.view(record, None))

    def poll(self, shown: ShownTask | None) -> tuple[Any, ...]:
        """One timer tick: the whole view of the task on show, from one look at its record; the result once, when it
        ends. Its only input is the page's memory (gr.State): Gradio marks a visible input of a running event with its
        own progress text, which would flicker beside ours."""
        record = self.find(shown.code) if shown else None
        if record is None:
            return self.attach(shown.code if shown else "")[1:]
        return self.view(record, shown)

    def task_status(self, code: str) -> tuple[Any, Any, Any, Any]:
        """For scripts (gradio_client's /task_status): status card, result, download button and timer of a task."""
        status, _, result, download, timer, _ = self.attach(code)[1:]
        return status, result, download, timer

    def view(self, record: TaskRecord, shown: ShownTask | None) -> tuple[Any, ...]:
        """Status card, live preview, result, download button, timer and the new ShownTask, from one record.
        Without `shown` (attach) every part is set; with it, parts the page already shows are left alone. The result
        is only ever set here with a final status and no preview, and only cleared by attach."""
        fresh = shown is None
        record, shown = steady(record, shown)
        live = live_value(record, self.config)
        live_update = live if fresh or live != shown.live else gr.skip()
        shown = dataclasses.replace(shown, live=live)
        if not record.state.is_final:
            keep = None if fresh else gr.skip()
            download = gr.DownloadButton(value=None, visible=False) if fresh else gr.skip()
            return (status_html(record, record.eta_s), live_update, keep, download, gr.Timer(active=True), shown)
        result = record.result_path if record.state is TaskState.SUCCEEDED and record.result_path else None
        if result and not Path(result).is_file():
            result = None
        return (status_html(record), live_update, result, gr.DownloadButton(value=result, visible=bool(result)),
                gr.Timer(active=False), shown)

    def find(self, code: str) -> TaskRecord | None:
        if not code:
            return None
        try:
            return self.supervisor.status(code.strip())
        except TaskNotFoundError:
            return None

    # ----- Tasks tab ---------------------------------------------------------------------------------

    def history(self, code: str) -> str:
        return history_html(self.find(code))

    def table(self) -> str:
        records = self.supervisor.list_tasks(limit=self.config.server.task_list_limit)
        return task_list_html(records, {record.code: thumbnail_uri(record.video_path) for record in records})

    def open_task(self, code: str) -> tuple[Any, ...]:
        record = self.act(lambda: self.supervisor.status(self.selected_code(code)))
        return (gr.Tabs(selected=GENERATE_TAB), *self.attach(record.code))

    def cancel_task(self, code: str) -> str:
        record = self.act(lambda: self.supervisor.cancel(self.selected_code(code)))
        gr.Info(f"Task {record.code} cancelled.")
        return self.table()

    def retry_task(self, code: str) -> str:
        record = self.act(lambda: self.supervisor.retry(self.selected_code(code)))
        gr.Info(f"Task {record.code} is queued again.")
        return self.table()

    def delete_task(self, code: str) -> tuple[str, str]:
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
                        gr.HTML(limits_html(config), padding=False)
                        audio = gr.Audio(label="1. Speech", sources=["upload", "microphone"], type="filepath",
                                         elem_id="hg-speech")
                        # The slot's refusal stays here until the slot changes; slot_guard.js puts the words for
                        # a file of the wrong kind (a photo, the two swapped) here too, in place of Gradio's.
                        speech_note = gr.HTML("", elem_id="hg-speech-note", padding=False,
                                              js_on_load=SLOT_GUARD_JS.read_text(encoding="utf-8"))
                        video = gr.Video(label="2. Video of a person facing the camera", sources=["upload"],
                                         height=240, elem_id="hg-video")
                        video_note = gr.HTML("", elem_id="hg-video-note", padding=False)
                        with gr.Row(equal_height=True, elem_classes=["hg-go"]):
                            # Every registered name, so calls without a page load validate; the load narrows it
                            # to the engines available now.
                            engine = gr.Dropdown(label="3. Engine", choices=list(ENGINES), value=DEFAULT_ENGINE,
                                                 interactive=True, scale=2, min_width=140)
                            submit = gr.Button("Generate", variant="primary", size="lg", interactive=False, scale=3,
                                               min_width=140, elem_id="hg-generate")
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
                    with gr.Column(scale=5):
                        code = gr.Textbox(label="Task code", interactive=False, buttons=["copy"], elem_id="hg-code")
                        status = gr.HTML(IDLE_HTML, elem_id="hg-status")
                        live = live_player()
                        result = gr.Video(label="Result", interactive=False, height=360, elem_id="hg-result")
                        download = gr.DownloadButton("Download the video", visible=False, variant="secondary")
                timer = gr.Timer(refresh_s, active=False)
                shown = gr.State(None)
            with gr.Tab("Tasks", id="tasks") as tasks_tab:
                task_list = gr.HTML(elem_id="hg-tasks", js_on_load=TASK_LIST_JS.read_text(encoding="utf-8"))
                with gr.Row():
                    selected = gr.Textbox(label="Selected task", placeholder="click a task, or paste its code",
                                          scale=3, min_width=200, elem_id="hg-selected")
                    open_button = gr.Button("Open", scale=1, min_width=80)
                    cancel_button = gr.Button("Cancel", scale=1, min_width=80)
                    retry_button = gr.Button("Retry", scale=1, min_width=80)
                    delete_button = gr.Button("Delete with files", variant="stop", scale=1, min_width=120)
                attempts = gr.HTML(elem_id="hg-history")
                table_timer = gr.Timer(max(2.0, 2 * refresh_s))
            with gr.Tab("System", id="system") as system_tab:
                system_info = gr.Markdown(elem_classes=["hg-system"])
                models_info = gr.Markdown(elem_classes=["hg-system"])
                refresh_system = gr.Button("Refresh", size="sm")
        gr.Markdown(f"HeyGem {__version__} · tasks keep running when this page is closed · "
                    "the same tasks are served to HeyGem.ai clients at /easy/*", elem_classes=["hg-footer"])

        # One list of outputs for every handler that changes the shown task (see TaskView); Gradio's own progress
        # and queue text stays off them: the status card is the one place that says where a task stands.
        task_view = [code, status, live, result, download, timer, shown]
        quiet: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
        inputs = [audio, video, engine, loop_mode, intensity, ai_label, watermark, speech_language]
        timer.tick(studio.poll, [shown], task_view[1:], trigger_mode="once",
                           concurrency_limit=None, **quiet)
        page.load(studio.load_page, [remembered], [engine, engine_info, submit, *task_view], **quiet)
        # Whichever handler changes the shown task (submit, load, Open), the browser remembers it.
        code.change(lambda value: value, [code], [remembered], js=REMEMBER_CODE_JS, **quiet)
        engine.change(studio.engine_options, [engine], [intensity, speech_language], **quiet)
        submit.click(studio.generate_on_page, inputs, [*task_view, speech_note, video_note], concurrency_limit=4,
                     **quiet)
        # A reason goes when the person puts another file in that slot; not on "clear", which Gradio's video player
        # also sends by itself when it cannot play the very file the reason is about. In the browser, at once: a
        # round trip to the server could come back after a Generate pressed meanwhile, and wipe its fresh reason.
        for trigger in (audio.upload, audio.stop_recording):
            trigger(None, None, speech_note, js=CLEAR_NOTE_JS, **quiet)
        video.upload(None, None, video_note, js=CLEAR_NOTE_JS, **quiet)
        # For scripts (gradio_client): /generate and /task_status, whose refusals are errors.
        scripts = gr.Button(visible=False)
        # (Hidden too: Gradio shows the progress of any event that has a component among its outputs on it.)
        scripts.click(studio.generate, inputs, [code, status, result, download, timer], api_name="generate",
                      concurrency_limit=4, show_progress="hidden")
        scripts.click(studio.task_status, [code], [status, result, download, timer], api_name="task_status",
                      concurrency_limit=None, show_progress="hidden")
        for trigger in (table_timer.tick, tasks_tab.select, page.load):
            trigger(studio.table, None, task_list, concurrency_limit=None, **quiet)
        selected.change(studio.history, [selected], [attempts], **quiet)
        open_button.click(studio.open_task, [selected], [tabs, *task_view], **quiet)
        cancel_button.click(studio.cancel_task, [selected], [task_list], **quiet)
        retry_button.click(studio.retry_task, [selected], [task_list], **quiet)
        delete_button.click(studio.delete_task, [selected], [selected, task_list], **quiet)
        for trigger in (system_tab.select, refresh_system.click):
            trigger(studio.system, None, [system_info, models_info], **quiet)
        add_predict_endpoint(studio)
    page.queue(default_concurrency_limit=2, max_size=config.server.page_queue_max)
    return page
