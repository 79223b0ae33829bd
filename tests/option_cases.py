"""Refused task options and the one message each way in (CLI, studio, /easy, forms) must answer with."""

from __future__ import annotations

from typing import Any

# (option, value given, message): every way in that takes the option refuses the value in these exact words.
OUT_OF_RANGE: list[tuple[str, Any, str]] = [
    ("mouth_intensity", 5, "mouth_intensity must be a number from 0 to 2, got 5"),
    ("mouth_intensity", -0.5, "mouth_intensity must be a number from 0 to 2, got -0.5"),
    ("mouth_intensity", 2.01, "mouth_intensity must be a number from 0 to 2, got 2.01"),
    ("loop_mode", "sideways", "loop_mode must be one of pingpong, loop, got 'sideways'"),
    ("speech_language", "zh", "speech_language must be one of en, other, got 'zh'"),
]
# The same refusals for values that are not even of the option's kind.
WRONG_KIND: list[tuple[str, Any, str]] = [
    ("mouth_intensity", "loud", "mouth_intensity must be a number from 0 to 2, got 'loud'"),
    ("mouth_intensity", True, "mouth_intensity must be a number from 0 to 2, got True"),
    ("ai_label", "maybe", "ai_label must be true or false, got 'maybe'"),
    ("watermark", 1, "watermark must be true or false, got 1"),
    ("speech_language", 1, "speech_language must be one of en, other, got 1"),
]


def case_id(case: tuple[str, Any, str]) -> str:
    return f"{case[0]}={case[1]!r}"
