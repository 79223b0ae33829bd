"""Configuration: configs/default.yaml is the schema and the defaults; files and environment override it.

Each section is a pydantic model without defaults, so a knob exists in exactly one place (the YAML file,
where it is documented) and the code still reads typed attributes. pydantic-settings reads the YAML files and
the HEYGEM_<SECTION>__<KEY> environment variables; pydantic checks the types, each section's check() the ranges.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from heygem.errors import ConfigError
from heygem.options import MOUTH_INTENSITY, LoopMode, SpeechLanguage, TaskOptions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# configs/default.yaml, reached through the package (heygem/configs/default.yaml links to it in a checkout and is
# a copy of it in an installed wheel), so an installed `heygem` finds it from any directory.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "default.yaml"
ENV_PREFIX = "HEYGEM_"


def _nonempty_path(value: Any) -> Any:
    if value == "":
        raise ValueError("expected a path")
    return value


def _absolute(path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else Path.cwd() / path


# A path in the config: relative paths are relative to the current folder when the config is loaded.
ConfigPath = Annotated[Path, BeforeValidator(_nonempty_path), AfterValidator(_absolute)]


class _Section(BaseModel):
    """A config section: frozen, its keys exactly those of configs/default.yaml, and checked by check()."""

    # coerce_numbers_to_str: `rotation: 20` or `username: 123` in YAML are text keys, as before.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_none(cls, values: Any) -> Any:
        """An empty value (`dir: ""`, HEYGEM_MODELS__DIR=, HEYGEM_SERVER__API_TOKEN=null) of a key that may be null
        is null."""
        if not isinstance(values, Mapping):
            return values
        return {key: None if value in ("", "null") and key in cls.model_fields
                and type(None) in typing.get_args(cls.model_fields[key].annotation) else value
                for key, value in values.items()}

    @model_validator(mode="after")
    def _checked(self) -> _Section:
        self.check()
        return self

    def check(self) -> None:
        """Ranges and relations that types alone cannot say; raises ConfigError naming the key."""


class SupervisorConfig(_Section):
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
    stall_s: float
    requeue_interrupted: bool
    keep_temp: bool
    gpu_reserve_gb: float

    def check(self) -> None:
        _require_positive(self, "max_workers", "queue_max", "poll_interval_s", "task_timeout_s",
                          "heartbeat_timeout_s", "heartbeat_interval_s", "stall_s")


class RayConfig(_Section):
    address: str
    task_cpus: float
    gpu_task_cpus: float
    gpu_memory_gb: float
    ship_code: bool
    models_dir: ConfigPath | None
    status_host: str
    status_port: int
    auth_token_file: ConfigPath | None
    object_store_mb: int
    temp_dir: ConfigPath | None

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


class PathsConfig(_Section):
    data_dir: ConfigPath
    input_dir: ConfigPath

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


class LoggingConfig(_Section):
    level: str
    rotation: str
    retention_days: int

    def check(self) -> None:
        if self.level.upper() not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"logging.level: unknown level {self.level!r}")


class ModelsConfig(_Section):
    # None: <paths.data_dir>/models (see heygem.engines.models.models_dir).
    dir: ConfigPath | None
    allow_unverified: bool


class Wav2LipConfig(_Section):
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


class ServerConfig(_Section):
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
    max_call_kb: int
    page_queue_max: int
    page_sessions_max: int
    page_session_idle_s: float
    max_concurrent_uploads: int
    upload_timeout_s: float
    allow_url_download: bool
    url_max_mb: float
    url_timeout_s: float
    allowed_roots: list[ConfigPath]
    ui_refresh_s: float
    task_list_limit: int
    shutdown_grace_s: float
    request_timeout_s: float
    events_interval_s: float
    events_heartbeat_s: float
    max_concurrent_probes: int

    def check(self) -> None:
        _require_positive(self, "login_days", "max_upload_mb", "max_media_duration_s", "max_request_kb", "url_max_mb",
                          "url_timeout_s", "ui_refresh_s", "task_list_limit", "request_timeout_s",
                          "events_interval_s", "events_heartbeat_s", "max_call_kb", "page_queue_max",
                          "page_sessions_max", "page_session_idle_s", "max_concurrent_uploads", "upload_timeout_s",
                          "max_concurrent_probes")
        if not 0 < self.port < 65536:
            raise ConfigError(f"server.port: must be between 1 and 65535, got {self.port}")


# The languages of the texts of HeyGem's API (/easy/*).
EasyLanguage = Literal["en", "zh"]


class EasyConfig(_Section):
    language: EasyLanguage


class MediaConfig(_Section):
    max_audio_duration_s: float
    max_frame_side: int
    max_input_side: int
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
    frame_buffer_mb: float

    def check(self) -> None:
        if self.analysis_cache_mb < 0:
            raise ConfigError(f"media.analysis_cache_mb: must be 0 or more, got {self.analysis_cache_mb}")
        if self.frame_buffer_mb < 0:
            raise ConfigError(f"media.frame_buffer_mb: must be 0 or more, got {self.frame_buffer_mb}")
        _require_positive(self, "max_audio_duration_s", "max_frame_side", "max_input_side", "batch_frames",
                          "reverse_buffer_mb", "mesh_crop_scale", "mesh_size", "smooth_min_cutoff")
        if not 0 <= self.encoder_crf <= 51:
            raise ConfigError(f"media.encoder_crf: must be 0..51, got {self.encoder_crf}")


class StorageConfig(_Section):
    min_free_mb: float
    keep_days: float

    def check(self) -> None:
        for name in ("min_free_mb", "keep_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"storage.{name}: must be 0 or more, got {getattr(self, name)}")


class LiveConfig(_Section):
    enabled: bool
    segment_s: float
    keep_after_success: bool

    def check(self) -> None:
        _require_positive(self, "segment_s")


class MeshWarpConfig(_Section):
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


class Config(BaseModel):
    """The whole configuration; it crosses process boundaries as itself (it pickles) or as to_dict()."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    supervisor: SupervisorConfig
    ray: RayConfig
    paths: PathsConfig
    logging: LoggingConfig
    models: ModelsConfig
    wav2lip: Wav2LipConfig
    server: ServerConfig
    easy: EasyConfig
    media: MediaConfig
    storage: StorageConfig
    live: LiveConfig
    meshwarp: MeshWarpConfig

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The validated values as plain data (paths as text), for another process: from_dict() rebuilds them."""
        return self.model_dump(mode="json")

    @property
    def option_defaults(self) -> TaskOptions:
        """The value of each task option a caller leaves out (TaskOptions.resolve)."""
        return TaskOptions(loop_mode=self.media.loop_mode, mouth_intensity=self.meshwarp.mouth_intensity,
                           ai_label=self.media.ai_label, watermark=self.media.watermark,
                           speech_language=self.meshwarp.speech_language)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """The Config of to_dict()'s values, checked again; no file or variable is read."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_sentence(exc)) from None


SECTIONS: dict[str, type[_Section]] = {name: field.annotation for name, field in Config.model_fields.items()
                                       if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)}


def _require_positive(section: _Section, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{_section_name(section)}.{name}: must be greater than 0, got {getattr(section, name)}")


def _section_name(section: _Section) -> str:
    return next(name for name, cls in SECTIONS.items() if isinstance(section, cls))


def _read_environment(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The HEYGEM_<SECTION>__<KEY> variables of `environ` as sections, those of unknown sections included."""
    # Imported here: a worker rebuilds its Config with Config.from_dict() and never pays for pydantic-settings.
    from pydantic_settings import EnvSettingsSource

    class Environment(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            return {name.lower(): value for name, value in environ.items()}

        def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
            """A list in a variable is written as in the YAML file (`[/srv/a, /srv/b]`); JSON is YAML too."""
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"environment (HEYGEM_*): {field_name}: {value!r} is not valid YAML") from None

    prefix = ENV_PREFIX.lower()
    found: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():  # the source itself passes over variables of unknown sections
        section, delimiter, key = name.lower().removeprefix(prefix).partition("__")
        if name.lower().startswith(prefix) and delimiter and section not in SECTIONS:
            found.setdefault(section, {})[key] = value
    source = Environment(Config, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False)  # type: ignore[arg-type]
    return {**found, **source()}


def _read_yaml(path: Path) -> dict[str, Any]:
    from pydantic_settings import YamlConfigSettingsSource

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return YamlConfigSettingsSource(Config, yaml_file=path, yaml_file_encoding="utf-8")()  # type: ignore[arg-type]
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except ValueError:  # the source's dict() of a top level that is not a mapping
        raise ConfigError(f"config file {path}: expected sections at the top level") from None


def _check_known(update: Mapping[str, Any], origin: str) -> None:
    for section, values in update.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r} (known: {', '.join(sorted(SECTIONS))})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must hold keys, got {values!r}")
        for key in values:
            if key not in SECTIONS[section].model_fields:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")


# pydantic's error types, in words that name what the key takes.
_EXPECTED = {
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "text", "list_type": "a list", "path_type": "a path",
}


def _sentence(error: ValidationError) -> str:
    """The first problem of a validation error as one sentence that names the key."""
    problem = error.errors()[0]
    key = ".".join(map(str, problem["loc"]))
    if problem["type"] == "missing":
        return f"{DEFAULT_CONFIG_PATH} lacks the key {key}"
    if problem["type"] == "literal_error":
        section, name = problem["loc"][:2]
        choices = typing.get_args(SECTIONS[str(section)].model_fields[str(name)].annotation)
        return f"{key}: expected one of {', '.join(map(str, choices))}, got {problem['input']!r}"
    if problem["type"] == "value_error":
        return f"{key}: {problem['ctx']['error']}, got {problem['input']!r}"
    if problem["type"] in _EXPECTED:
        return f"{key}: expected {_EXPECTED[problem['type']]}, got {problem['input']!r}"
    return f"{key}: {problem['msg']}, got {problem['input']!r}"


def load_config(
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then `config_file`, then HEYGEM_* variables, then `overrides` (used by tests and workers)."""
    values = _read_yaml(DEFAULT_CONFIG_PATH)
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), _read_yaml(Path(config_file))))
    layers.append(("environment (HEYGEM_*)", _read_environment(os.environ if environ is None else environ)))
    if overrides:
        layers.append(("overrides", overrides))
    for origin, layer in layers:
        _check_known(layer, origin)
        for section, keys in layer.items():
            values[section] = {**values.get(section, {}), **keys}
    return Config.from_dict(values)
