"""What the studio shows, as plain functions of task records and system facts (no Gradio here)."""

from __future__ import annotations

import dataclasses
import html
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from heygem.config import Config
from heygem.pipeline.engine import Availability
from heygem.supervisor.states import TaskRecord, TaskState

# new_upload_path() prefixes stored uploads with a timestamp and a random tag; people want the original name.
UPLOAD_PREFIX = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}-(audio|video)-")
STATE_LABELS = {
    TaskState.QUEUED: "Waiting",
    TaskState.INITIALIZING: "Starting",
    TaskState.RUNNING: "Generating",
    TaskState.SUCCEEDED: "Done",
    TaskState.FAILED: "Failed",
    TaskState.CANCELLED: "Cancelled",
}
IDLE_HTML = ('<div class="hg-card hg-idle">Upload a speech and a video, then press <b>Generate</b>. '
             "The task keeps running if you close this page; open it again from the Tasks tab.</div>")


def missing_html(code: str) -> str:
    """The card for a ?code= link (or a pasted code) that names no task on this server."""
    return (f'<div class="hg-card hg-idle">No task with code <b>{html.escape(code)}</b> on this server: it may '
            "have been deleted. Start a new one, or pick one in the Tasks tab.</div>")


def display_name(path: str) -> str:
    return UPLOAD_PREFIX.sub("", Path(path).name)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    minutes, rest = divmod(seconds, 60)
    if minutes and not rest:
        return f"{minutes} min"
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def format_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


# The order a task's states follow within one attempt: the page never shows one going back to an earlier one.
STATE_ORDER = {TaskState.QUEUED: 0, TaskState.INITIALIZING: 1, TaskState.RUNNING: 2}


@dataclasses.dataclass(frozen=True)
class ShownTask:
    """What the page last showed of a task's attempt."""

    code: str
    attempt: int
    state: TaskState
    progress: float
    # The live preview's playlist URL on the page ("" for none), so an unchanged one is not sent again.
    live: str = ""


def steady(record: TaskRecord, shown: ShownTask | None) -> tuple[TaskRecord, ShownTask]:
    """The record as the page shows it: within one attempt of one task, neither its state (queued, starting,
    generating) nor its progress ever goes back, whatever order the looks at it arrive in; and what to remember."""
    same = shown is not None and (shown.code, shown.attempt) == (record.code, record.attempts)
    if same and shown is not None and record.state in STATE_ORDER and shown.state in STATE_ORDER:
        state = max(record.state, shown.state, key=STATE_ORDER.__getitem__)
        record = dataclasses.replace(record, state=state, progress=max(record.progress, shown.progress))
    live = shown.live if shown is not None and shown.code == record.code else ""
    return record, ShownTask(record.code, record.attempts, record.state, record.progress, live)


def status_html(record: TaskRecord | None, eta: float | None = None) -> str:
    """The task card of the Generate tab: code, state, waiting reason or stage, a real percentage and the ETA."""
    if record is None:
        return IDLE_HTML
    state = record.state
    percent = 100.0 if state is TaskState.SUCCEEDED else record.progress
    details = [f"<span class='hg-detail'>{html.escape(record.summary)}</span>"]
    if state is TaskState.SUCCEEDED and record.warning:
        details = [f"<span class='hg-warning'>Check the result: {html.escape(record.warning)}</span>"]
    if state is TaskState.RUNNING and eta is not None:
        details.append(f"<span class='hg-detail hg-eta'>about {format_seconds(eta)} left</span>")
    if state.is_final and record.duration_s is not None:
        details.append(f"<span class='hg-detail'>took {format_seconds(record.duration_s)}</span>")
    if record.warning and state is not TaskState.SUCCEEDED:
        details.append(f"<span class='hg-warning'>{html.escape(record.warning)}</span>")
    return (
        f"<div class='hg-card hg-{state.value}'>"
        f"<div class='hg-head'><span class='hg-badge'>{STATE_LABELS[state]}</span>"
        f"<span class='hg-code'>task <code>{html.escape(record.code)}</code></span>"
        f"<span class='hg-percent'>{percent:.0f} %</span></div>"
        f"<div class='hg-bar'><div style='width:{percent:.1f}%'></div></div>"
        f"<div class='hg-details'>{''.join(details)}</div></div>"
    )


def refused_html(slots: Iterable[str]) -> str:
    """The task card when Generate was refused: nothing started, and where the reason stands."""
    where = " and ".join(f"under the {slot}" for slot in slots) or "above"
    return (f"<div class='hg-card hg-refused'><b>Not started.</b> The reason is written {where}; change that file "
            "and press <b>Generate</b> again.</div>")


def slot_note_html(message: str) -> str:
    """A refusal's reason, shown under the speech or video slot until that slot changes."""
    if not message:
        return ""
    text = message[:1].upper() + message[1:]
    return f"<div class='hg-slot-error' role='alert'>{html.escape(text)}</div>"


def limits_html(config: Config) -> str:
    """What the server accepts, said before anything is uploaded."""
    server = config.server
    longest = format_seconds(min(server.max_media_duration_s, config.media.max_audio_duration_s))
    return (f"<div class='hg-limits'>Speech: a recording of up to {longest} (or the microphone). Video: one person "
            f"facing the camera, up to {format_seconds(server.max_media_duration_s)}. Each file at most "
            f"{server.max_upload_mb:g} MB.</div>")


def progress_text(record: TaskRecord) -> str:
    """The one progress figure of a task: its percentage while it runs or when done; none once it failed."""
    if record.state is TaskState.SUCCEEDED:
        return "100 %"
    if record.state in (TaskState.FAILED, TaskState.CANCELLED):
        return ""
    return f"{record.progress:.0f} %"


TASK_HEADERS = ("", "Inputs", "Created", "State", "Progress", "Took", "Details")


def task_list_html(records: Iterable[TaskRecord], thumbnails: Mapping[str, str]) -> str:
    """The Tasks tab: a table on wide screens, a list of cards on narrow ones (studio.css), newest first.
    Clicking a task selects it (its code goes to the "Selected task" box)."""
    rows = "".join(task_row_html(record, thumbnails.get(record.code, "")) for record in records)
    if not rows:
        return "<div class='hg-card hg-idle'>No tasks yet: they appear here as soon as you press Generate.</div>"
    head = "".join(f"<th>{name}</th>" for name in TASK_HEADERS)
    return f"<table class='hg-tasks'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def task_row_html(record: TaskRecord, thumbnail: str) -> str:
    """One task: picture, input names, when, state, one progress figure, duration and what it says."""
    picture = f"<img src='{html.escape(thumbnail)}' alt=''>" if thumbnail else ""
    cells = [
        ("hg-thumb", picture),
        ("hg-inputs", f"<b>{html.escape(display_name(record.audio_path))}</b>"
                      f"<span>{html.escape(display_name(record.video_path))}</span>"
                      f"<code>{html.escape(record.code)}</code>"),
        ("hg-when", format_time(record.created_at)),
        ("hg-state", f"<span class='hg-badge hg-{record.state.value}'>{STATE_LABELS[record.state]}</span>"),
        ("hg-progress", progress_text(record)),
        ("hg-took", format_seconds(record.duration_s)),
        ("hg-message", html.escape(record.summary) + f" · {html.escape(record.engine)}"),
    ]
    body = "".join(f"<td class='{name}'>{content}</td>" for name, content in cells)
    return f"<tr data-code='{html.escape(record.code)}' tabindex='0'>{body}</tr>"


def history_html(record: TaskRecord | None) -> str:
    """The attempts of the task picked in the Tasks tab: where each ran, when, and how it ended."""
    if record is None or not record.history:
        return ""
    rows = []
    for attempt in record.history:
        where = str(attempt.node) if attempt.node else f"worker {attempt.worker_pid or '?'} on this server"
        ended = format_time(attempt.ended_at) if attempt.ended_at else "running"
        outcome = attempt.outcome.value if attempt.outcome else "running"
        rows.append(f"<tr><td>{attempt.number}</td><td>{html.escape(where)}</td><td>{format_time(attempt.started_at)}"
                    f"</td><td>{ended}</td><td>{outcome}</td><td>{html.escape(attempt.message)}</td></tr>")
    return (f"<div class='hg-history'><b>Attempts of task <code>{html.escape(record.code)}</code></b><table>"
            "<tr><th>#</th><th>worker</th><th>started</th><th>ended</th><th>outcome</th><th>message</th></tr>"
            f"{''.join(rows)}</table></div>")


def engine_note(engines: Mapping[str, Availability]) -> str:
    """Engines a person cannot choose here; why (a model file, a path) is for the operator: the System tab."""
    missing = [name for name, state in engines.items() if not state.available]
    if not missing:
        return ""
    return f"Not installed on this server: {', '.join(missing)}."


def system_markdown(info: Mapping[str, Any], engines: Mapping[str, Availability]) -> str:
    """The System tab: this machine (local backend) or the Ray cluster's nodes, the workers, the engines."""
    idle = max(0, info["max_workers"] - info["workers_busy"])
    lines = [
        "### Cluster" if info["nodes"] else "### Machine", "",
        f"- **Device:** {info['device']}",
        *[f"- **GPU {gpu['index']} memory:** {gpu['memory_used_gb']:.1f} GB used, {gpu['memory_free_gb']:.1f} GB free "
          f"of {gpu['memory_total_gb']:.1f} GB" for gpu in info["gpus"]],
        f"- **Workers:** {info['workers_busy']} busy, {idle} idle (at most {info['max_workers']} at once)",
        f"- **Queue:** {info['queue_length']} waiting",
        f"- **Version:** HeyGem {info['version']}",
        *(_node_table(info["nodes"]) if info["nodes"] else []),
        "", "### Engines", "", "| Engine | State |", "|---|---|",
        *[f"| {name} | {'ready' if state.available else 'unavailable: ' + _cell(state.reason)} |"
          for name, state in engines.items()],
    ]
    return "\n".join(lines)


def _node_table(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Alive nodes first; the head runs no tasks when it was started with --num-cpus=0 --num-gpus=0."""
    ordered = sorted(nodes, key=lambda node: (not node["alive"], not node["head"], node["address"]))
    return ["", "| Node | Address | State | CPUs free / total | GPUs free / total | Memory | Tasks |",
            "|---|---|---|---|---|---|---|",
            *[f"| `{node['id'][:12]}` | {_cell(node['address'])} | "
              f"{('head' if node['head'] else 'alive') if node['alive'] else 'lost'} | "
              f"{node['cpus_free']:g} / {node['cpus']:g} | {node['gpus_free']:g} / {node['gpus']:g} | "
              f"{node['memory_gb']:.1f} GB | {node['tasks']} |" for node in ordered]]


def models_markdown(models: Iterable[Mapping[str, Any]]) -> str:
    rows = [f"| {model['engine']} | `{model['file_name']}` | {model['state']} | {_cell(model['detail'])} |"
            for model in models]
    return "\n".join(["### Model files", "", "| Engine | File | State | Detail |", "|---|---|---|---|", *rows])


def _cell(text: str) -> str:
    return html.escape(text).replace("|", "\\|").replace("\n", " ")
