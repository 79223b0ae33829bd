"""Engines by name. A name not listed here may be given as `package.module:ClassName`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from heygem.config import Config
from heygem.errors import EngineUnavailableError, InputError
from heygem.options import TaskOptions

if TYPE_CHECKING:
    # The engine contract imports NumPy and OpenCV (0.15 s): a render starts reading its speech before them
    # (recognise_phones_ahead), so they are imported where an engine is resolved.
    from heygem.pipeline.engine import Availability, Engine

ENGINES: dict[str, str] = {
    "meshwarp": "heygem.engines.meshwarp:MeshWarpEngine",
    "wav2lip": "heygem.engines.wav2lip:Wav2LipEngine",
}
DEFAULT_ENGINE = "meshwarp"
# Engines whose speech analysis recognises phones (heygem.pipeline.phones), whatever the speech's language.
RECOGNISE_PHONES = frozenset({"meshwarp"})


def recognise_phones_ahead(engine_name: str, audio: Path, config: Config) -> None:
    """Starts reading `audio` and recognising its phones on the other core where `engine_name` will read them (the
    job then takes both): a render (CLI or worker) calls this before it imports the engine, which takes half a
    second on one core."""
    if engine_name in RECOGNISE_PHONES:
        from heygem.pipeline.phones import recognise_file_ahead

        recognise_file_ahead(audio, config.media.max_audio_duration_s, config.media.max_input_side)


def resolve_engine(name: str) -> type[Engine]:
    from heygem.pipeline.engine import Engine

    target = ENGINES.get(name, name)
    module_name, _, attr = target.partition(":")
    if not attr:
        raise EngineUnavailableError(
            f"unknown engine {name!r}: choose one of {', '.join(ENGINES)} or give module:Class")
    try:
        engine_cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailableError(f"engine {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not (isinstance(engine_cls, type) and issubclass(engine_cls, Engine)):
        raise EngineUnavailableError(f"engine {name!r} is not an Engine class")
    return engine_cls


def registered_engine(name: object) -> str:
    """A caller's choice of engine: only a registered name (resolve_engine would also import any "module:Class")."""
    if not isinstance(name, str) or name not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}")
    return name


def accept_options(name: str, options: TaskOptions) -> TaskOptions:
    """The options, if engine `name` takes each one given; else an InputError naming the first it does not take.
    An engine that cannot be loaded is refused as unavailable."""
    try:
        engine = resolve_engine(name)
    except EngineUnavailableError as exc:
        raise InputError(f"engine {name!r} is unavailable: {exc}") from None
    return engine.accept_options(options)


def options_taken(name: str) -> frozenset[str]:
    """The task options engine `name` takes (none where it cannot be loaded)."""
    try:
        return resolve_engine(name).takes_options
    except EngineUnavailableError:
        return frozenset()


def engine_availability(name: str, config: Config) -> Availability:
    from heygem.pipeline.engine import Availability

    try:
        return resolve_engine(name).availability(config)
    except EngineUnavailableError as exc:
        return Availability(False, str(exc))


def list_engines(config: Config) -> dict[str, Availability]:
    return {name: engine_availability(name, config) for name in ENGINES}
