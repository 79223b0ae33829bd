"""What a caller may choose for one task, with each option's choices or range declared once.

Every way in builds a `TaskOptions`: the studio's controls and the CLI flags pass typed values to the
constructor, JSON bodies go through `from_json`, text form fields through `from_form`. The constructor is the
one check, and every refusal reads "<option> must be <what it may be>, got <value>". The studio's slider and
radio, the CLI's help and the engines take their limits from the constants here.

At submit, once: the engine refuses an option it does not take (heygem.pipeline.engine.Engine.accept_options),
then `resolve` fills each option left as None with the server's default from configs/default.yaml
(Config.option_defaults: media.loop_mode, media.ai_label, media.watermark, meshwarp.mouth_intensity,
meshwarp.speech_language). The task record, the worker spec and the engine's job carry that resolved, typed
value; the task store keeps `to_json()` and reads it back with `from_json`. Nothing downstream fills defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

from heygem.errors import InputError

LoopMode = Literal["pingpong", "loop"]
LOOP_MODES: tuple[LoopMode, ...] = typing.get_args(LoopMode)
# The language of the speech, for the built-in engine's mouth shapes: "en" reads English phones (m/b/p close the
# lips, "oo" rounds them, "ee" spreads them); "other" keeps loudness and formants and takes only the lip closures.
SpeechLanguage = Literal["en", "other"]
SPEECH_LANGUAGES: tuple[SpeechLanguage, ...] = typing.get_args(SpeechLanguage)
SWITCH_TEXT = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclasses.dataclass(frozen=True)
class NumberRange:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"a number from {self.low:g} to {self.high:g}"


# 1 is natural speech, 0 keeps the mouth still. The built-in engine caps cue x intensity at 1.3 (its widest
# natural mouth, meshwarp._MAX_OPENNESS): at 2 every cue from 0.65 up is there already; more would only clip.
MOUTH_INTENSITY = NumberRange(0.0, 2.0)
# What the streaming pipeline applies itself, whatever the lip-sync engine (heygem.pipeline.generate).
PIPELINE_OPTIONS = frozenset({"loop_mode", "ai_label", "watermark"})


def refusal(name: str, allowed: str, value: object) -> InputError:
    """The one message form of a refused option value."""
    shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    return InputError(f"{name} must be {allowed}, got {shown}")


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """One task's choices; None means the server's default. Construction refuses any value out of range."""

    loop_mode: LoopMode | None = None  # audio longer than the video: play it forward-backward, or restart it
    mouth_intensity: float | None = None  # how far the mouth opens, 1 natural (see MOUTH_INTENSITY)
    ai_label: bool | None = None  # draw a small "AI-generated" label
    watermark: bool | None = None  # draw a small "HeyGem" watermark
    speech_language: SpeechLanguage | None = None  # the speech's language, for mouth shapes (SPEECH_LANGUAGES)

    def __post_init__(self) -> None:
        if self.loop_mode is not None and self.loop_mode not in LOOP_MODES:
            raise refusal("loop_mode", f"one of {', '.join(LOOP_MODES)}", self.loop_mode)
        if self.speech_language is not None and self.speech_language not in SPEECH_LANGUAGES:
            raise refusal("speech_language", f"one of {', '.join(SPEECH_LANGUAGES)}", self.speech_language)
        intensity = self.mouth_intensity
        if intensity is not None:
            number = isinstance(intensity, (int, float)) and not isinstance(intensity, bool)
            if not number or intensity not in MOUTH_INTENSITY:  # NaN too: it is in no range
                raise refusal("mouth_intensity", str(MOUTH_INTENSITY), intensity)
            # JSON and the slider may give an int; engines get one type.
            object.__setattr__(self, "mouth_intensity", float(intensity))
        for name in ("ai_label", "watermark"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise refusal(name, "true or false", value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_json(cls, data: object) -> TaskOptions:
        """From a JSON object: values keep their JSON types; a name that is no option is refused."""
        if not isinstance(data, Mapping):
            raise InputError(f"options must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r}: the options are {', '.join(cls.names())}")
        return cls(**data)

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> TaskOptions:
        """From text fields (an HTML form, a query string): numbers and switches are read from their text.

        Fields that are no option (the files, the task code) are left to the caller; an empty field is None.
        """
        values: dict[str, Any] = {}
        for name in cls.names():
            text = fields.get(name, "").strip()
            if text:
                values[name] = _from_text(name, text)
        return cls(**values)

    def given(self) -> tuple[str, ...]:
        """The names of the options that have a value (None: the server's default)."""
        return tuple(name for name in self.names() if getattr(self, name) is not None)

    def resolve(self, defaults: TaskOptions) -> TaskOptions:
        """Every option left as None takes its value from `defaults` (the config's: Config.option_defaults)."""
        return dataclasses.replace(self, **{name: getattr(defaults, name) for name in self.names()
                                            if getattr(self, name) is None})

    def without(self, defaults: TaskOptions) -> TaskOptions:
        """Only the values that differ from `defaults`; the others left to the server (None). For controls that
        start at the server's defaults (the studio's): a value nobody changed is no choice of the person's."""
        return dataclasses.replace(self, **{name: None for name in self.names()
                                            if getattr(self, name) == getattr(defaults, name)})

    def to_json(self) -> dict[str, Any]:
        """The options that were given, as plain JSON data (from_json reads it back)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


def _from_text(name: str, text: str) -> Any:
    """A field's text as the value its type wants; the constructor then checks it."""
    kind = next(arg for arg in typing.get_args(_FIELD_TYPES[name]) if arg is not type(None))
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise refusal(name, str(MOUTH_INTENSITY), text) from None
    if kind is bool:
        if text.lower() not in SWITCH_TEXT:
            raise refusal(name, "true or false", text)
        return SWITCH_TEXT[text.lower()]
    return text


_FIELD_TYPES = typing.get_type_hints(TaskOptions)
