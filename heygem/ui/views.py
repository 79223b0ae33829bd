"""What the studio shows, as plain functions of task records and system facts (no Gradio here)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from heygem.pipeline.engine import Availability
from heygem.supervisor.states import TaskRecord, TaskState

TASK_COLUMNS = ["code", "created", "inputs", "engine", "state", "progress", "duration", "message"]
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
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def format_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def status_html(record: TaskRecord | None) -> str:
    """The task card of the Generate tab: code, state, waiting reason or stage, a real percentage and the ETA."""
    if record is None:
        return IDLE_HTML
    state = record.state
    percent = 100.0 if state is TaskState.SUCCEEDED else record.progress
    details = [f"<span class='hg-detail'>{html.escape(record.summary)}</span>"]
    if state is TaskState.RUNNING and record.eta_s is not None:
        details.append(f"<span class='hg-detail'>about {format_seconds(record.eta_s)} left</span>")
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


def task_rows(records: Iterable[TaskRecord]) -> list[list[str]]:
    return [[
        record.code,
        format_time(record.created_at),
        f"{display_name(record.audio_path)} + {display_name(record.video_path)}",
        record.engine,
        STATE_LABELS[record.state],
        f"{100 if record.state is TaskState.SUCCEEDED else record.progress:.0f} %",
        format_seconds(record.duration_s),
        record.summary,
    ] for record in records]


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
    """Why an engine is missing from the choices (e.g. which model file to put where)."""
    unavailable = [f"- **{name}** is unavailable: {state.reason or 'no reason given'}"
                   for name, state in engines.items() if not state.available]
    return "\n".join(unavailable)


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
