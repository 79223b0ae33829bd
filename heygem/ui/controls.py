"""Page controls whose values the handlers check themselves, with the words every other way in uses."""

from __future__ import annotations

from typing import Any, TypeVar

import gradio as gr

Control = TypeVar("Control", bound=gr.components.Component)


def checked_by_task_options(control: Control) -> Control:
    """A task option's control whose value reaches the handler as sent, where TaskOptions refuses a bad one with
    the message the CLI and the APIs give. Gradio's own check would answer a script's out-of-range value in other
    words, and one of the wrong kind with a bare TypeError. (Not a subclass: Gradio writes a .pyi file beside the
    module of every Component subclass.)"""
    control.preprocess = _as_sent  # type: ignore[method-assign]
    return control


def _as_sent(payload: Any) -> Any:
    return payload
