"""Configuration: configs/default.yaml is the schema and the defaults; files and environment override it.

Each section is a dataclass without defaults, so a knob exists in exactly one place (the YAML file,
where it is documented) and the code still reads typed attributes.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from heygem.errors import ConfigError
from heygem.options import MOUTH_INTENSITY, LoopMode, SpeechLanguage

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "configs" / "default.yaml"
ENV_PREFIX = "HEYGEM_"


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    backend: Literal["local", "ray"]
    max_workers: int
    queue_max: int
    poll_interval_s: float
    init_grace_s: float
    error_confirm_s: float
    task_timeout_s: float
    timeout_per_media_s: float
    heartbeat_timeout_s: float
    heartbeat_interval_s: float
    requeue_interrupted: bool
    keep_temp: bool
    gpu_reserve_gb: float

    def check(self) -> None:
        _require_positive(self, "max_workers", "queue_max", "poll_interval_s", "task_timeout_s",
                          "heartbeat_timeout_s", "heartbeat_interval_s")


@dataclasses.dataclass(frozen=True)
class RayConfig:
    address: str
    task_cpus: float
    gpu_task_cpus: float
    gpu_memory_gb: float
    ship_code: bool
    models_dir: Path | None
    status_host: str
    status_port: int
    auth_token_file: Path | None
    object_store_mb: int
    temp_dir: Path | None

    def check(self) -> None:
        _require_positive(self, "task_cpus")
        for name in ("gpu_task_cpus", "gpu_memory_gb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ray.{name}: must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.status_port < 65536:
            raise ConfigError(f"ray.status_port: must be a port up to 65535, or 0 for any free port, "
                              f"got {self.status_port}")
        # Ray's own floor for an object store.
        if self.object_store_mb < 100:
            raise ConfigError(f"ray.object_store_mb: must be at least 100, got {self.object_store_mb}")
        if self.address not in ("", "auto"):
            self.head_endpoint()

    def head_endpoint(self) -> tuple[str, int]:
        """The host and port of `address` when it names the head as host:port."""
        host, _, port = self.address.rpartition(":")
        if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"ray.address: must be empty (a private Ray runtime), auto, or the head node's "
                              f"host:port such as 127.0.0.1:6379, got {self.address!r}")
        return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    data_dir: Path
    input_dir: Path

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tasks.sqlite3"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "temp"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def live_dir(self) -> Path:
        return self.data_dir / "live"

    @property
    def analysis_dir(self) -> Path:
        return self.data_dir / "analysis"


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str
    rotation: str
    retention_days: int

    def check(self) -> None:
        if self.level.upper() not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"logging.level: unknown level {self.level!r}")


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    # None: <paths.data_dir>/models (see heygem.engines.models.models_dir).
    dir: Path | None
    allow_unverified: bool


@dataclasses.dataclass(frozen=True)
class Wav2LipConfig:
    model: str
    device: Literal["auto", "cuda", "cpu"]
    require_gpu: bool
    batch_size: int
    memory_limit_gb: float
    audio_offset_ms: float
    crop_scale: float
    mask_feather: float

    def check(self) -> None:
        _require_positive(self, "batch_size", "crop_scale", "mask_feather")
        if self.memory_limit_gb < 0:
            raise ConfigError(f"wav2lip.memory_limit_gb: must be 0 (no cap) or more, got {self.memory_limit_gb}")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    api_token: str | None
    username: str
    password: str | None
    allow_unauthenticated: bool
    login_days: float
    max_upload_mb: float
    max_media_duration_s: float
    max_request_kb: int
    allow_url_download: bool
    url_max_mb: float
    url_timeout_s: float
    allowed_roots: list[Path]
    ui_refresh_s: float
    task_list_limit: int
    shutdown_grace_s: float
    request_timeout_s: float
    events_interval_s: float
    events_heartbeat_s: float

    def check(self) -> None:
        _require_positive(self, "login_days", "max_upload_mb", "max_media_duration_s", "max_request_kb", "url_max_mb",
                          "url_timeout_s", "ui_refresh_s", "task_list_limit", "request_timeout_s",
                          "events_interval_s", "events_heartbeat_s")
        if not 0 < self.port < 65536:
            raise ConfigError(f"server.port: must be between 1 and 65535, got {self.port}")


# The languages of the texts of HeyGem's API (/easy/*).
EasyLanguage = Literal["en", "zh"]


@dataclasses.dataclass(frozen=True)
class EasyConfig:
    language: EasyLanguage


@dataclasses.dataclass(frozen=True)
class MediaConfig:
    max_audio_duration_s: float
    max_frame_side: int
    oversize_policy: Literal["downscale", "refuse"]
    loop_mode: LoopMode
    encoder_preset: str
    encoder_crf: int
    audio_bitrate: str
    batch_frames: int
    reverse_buffer_mb: int
    detect_confidence: float
    mesh_crop_scale: float
    mesh_size: int
    smooth_min_cutoff: float
    smooth_beta: float
    ai_label: bool
    watermark: bool
    analysis_cache_mb: float

    def check(self) -> None:
        if self.analysis_cache_mb < 0:
            raise ConfigError(f"media.analysis_cache_mb: must be 0 or more, got {self.analysis_cache_mb}")
        _require_positive(self, "max_audio_duration_s", "max_frame_side", "batch_frames", "reverse_buffer_mb",
                          "mesh_crop_scale", "mesh_size", "smooth_min_cutoff")
        if not 0 <= self.encoder_crf <= 51:
            raise ConfigError(f"media.encoder_crf: must be 0..51, got {self.encoder_crf}")


@dataclasses.dataclass(frozen=True)
class LiveConfig:
    enabled: bool
    segment_s: float
    keep_after_success: bool

    def check(self) -> None:
        _require_positive(self, "segment_s")


@dataclasses.dataclass(frozen=True)
class MeshWarpConfig:
    mouth_intensity: float
    max_open_ratio: float
    upper_lip_share: float
    jaw_follow: float
    round_strength: float
    spread_strength: float
    teeth_from: float
    lead_ms: float
    attack_ms: float
    release_ms: float
    gate_db: float
    range_db: float
    voicing_threshold: float
    closed_below: float
    mouth_bank: bool
    bank_max_frames: int
    bank_jump_cost: float
    bank_closed_gap: float
    speech_language: SpeechLanguage
    closure_dip_db: float

    def check(self) -> None:
        _require_positive(self, "max_open_ratio", "attack_ms", "release_ms", "range_db", "bank_max_frames",
                          "bank_closed_gap")
        if self.bank_jump_cost < 0:
            raise ConfigError(f"meshwarp.bank_jump_cost: must be 0 or more, got {self.bank_jump_cost}")
        if not 0 <= self.upper_lip_share <= 1:
            raise ConfigError(f"meshwarp.upper_lip_share: must be 0..1, got {self.upper_lip_share}")
        # The default of a task option, so the option's own range.
        if self.mouth_intensity not in MOUTH_INTENSITY:
            raise ConfigError(f"meshwarp.mouth_intensity: must be {MOUTH_INTENSITY}, got {self.mouth_intensity}")


SECTIONS: dict[str, type] = {
    "supervisor": SupervisorConfig,
    "ray": RayConfig,
    "paths": PathsConfig,
    "logging": LoggingConfig,
    "models": ModelsConfig,
    "wav2lip": Wav2LipConfig,
    "server": ServerConfig,
    "easy": EasyConfig,
    "media": MediaConfig,
    "live": LiveConfig,
    "meshwarp": MeshWarpConfig,
}


@dataclasses.dataclass(frozen=True)
class Config:
    supervisor: SupervisorConfig
    ray: RayConfig
    paths: PathsConfig
    logging: LoggingConfig
    models: ModelsConfig
    wav2lip: Wav2LipConfig
    server: ServerConfig
    easy: EasyConfig
    media: MediaConfig
    live: LiveConfig
    meshwarp: MeshWarpConfig
    raw: Mapping[str, Mapping[str, Any]]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data that crosses process boundaries; load_config(overrides=...) rebuilds it."""
        return {section: dict(values) for section, values in self.raw.items()}


def _require_positive(section: object, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{_section_name(section)}.{name}: must be greater than 0, got {getattr(section, name)}")


def _section_name(section: object) -> str:
    return next(name for name, cls in SECTIONS.items() if isinstance(section, cls))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected sections at the top level, got {type(loaded).__name__}")
    return loaded


def _merge(base: dict[str, dict[str, Any]], update: Mapping[str, Any], origin: str) -> None:
    for section, values in update.items():
        if section not in base:
            raise ConfigError(f"{origin}: unknown section {section!r} (known: {', '.join(sorted(base))})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must hold keys, got {values!r}")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            base[section][key] = value


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        overrides.setdefault(section.lower(), {})[key.lower()] = value
    return overrides


def _coerce(qualified: str, value: Any, annotation: Any) -> Any:
    if annotation is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{qualified}: expected a path, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path.cwd() / path)
    if annotation is bool:
        # HEYGEM_X__Y=1 / =0 in the environment is the usual shell spelling of a switch.
        if type(value) is int and value in (0, 1):
            return bool(value)
        if not isinstance(value, bool):
            raise ConfigError(f"{qualified}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{qualified}: expected a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{qualified}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{qualified}: expected text, got {value!r}")
        return str(value)
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{qualified}: expected a list, got {value!r}")
        return [_coerce(f"{qualified}[{index}]", item, item_type) for index, item in enumerate(value)]
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{qualified}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
        if value is None or value == "":
            return None
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _coerce(qualified, value, inner)
    raise TypeError(f"unsupported config annotation {annotation!r} for {qualified}")


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {field.name: _coerce(f"{name}.{field.name}", values[field.name], hints[field.name])
              for field in dataclasses.fields(cls)}
    section = cls(**kwargs)
    check = getattr(section, "check", None)
    if check is not None:
        check()
    return section


def load_config(
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then `config_file`, then HEYGEM_* variables, then `overrides` (used by tests and workers)."""
    values = _read_yaml(DEFAULT_CONFIG_PATH)
    missing = [f"{name}.{field.name}" for name, cls in SECTIONS.items()
               for field in dataclasses.fields(cls) if field.name not in values.get(name, {})]
    if missing:
        raise ConfigError(f"{DEFAULT_CONFIG_PATH} lacks keys: {', '.join(missing)}")
    if config_file is not None:
        _merge(values, _read_yaml(Path(config_file)), str(config_file))
    _merge(values, _environment_overrides(os.environ if environ is None else environ), "environment (HEYGEM_*)")
    if overrides:
        _merge(values, overrides, "overrides")
    sections = {name: _build_section(name, cls, values[name]) for name, cls in SECTIONS.items()}
    raw = {name: {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(section).items()}
           for name, section in sections.items()}
    return Config(raw=raw, **sections)
