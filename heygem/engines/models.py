"""Model registry: every model file an engine can use, where users put it, and whether it is trustworthy.

Verification: a registered sha256 is checked when the registry has one. Where it has none (the public
Wav2Lip files publish no sha256 that could be checked here), a file is verified by its size (within
SIZE_TOLERANCE of the published size) and, for ONNX, by being a readable ONNX graph. A file that fails the
size or checksum test is "corrupt" and refused, unless models.allow_unverified is set, which makes it
"unverified" and usable (re-exports, converted checkpoints). An unreadable file is corrupt regardless.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from heygem.config import Config
from heygem.errors import EngineUnavailableError, HeyGemError

SIZE_TOLERANCE = 0.05
HASH_CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0

WAV2LIP_LICENCE = ("Wav2Lip authors' terms: personal, research and non-commercial use only "
                   "(https://github.com/Rudrabha/Wav2Lip#license-and-citation)")
_FACEFUSION_RELEASE = "https://github.com/facefusion/facefusion-assets/releases"
_WAV2LIP_REPO = "https://github.com/Rudrabha/Wav2Lip#getting-the-weights"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    file_name: str
    engine: str
    format: Literal["onnx", "pth"]
    # Published size in bytes (approximate where only "about N MB" is published; see SIZE_TOLERANCE).
    size_bytes: int
    # None: no checksum is published that could be checked here; size and format are verified instead.
    sha256: str | None
    licence: str
    source_page: str
    # Direct download; None where the source is a share page that needs a browser.
    url: str | None
    description: str
    # For a checkpoint: the registered ONNX model that `models convert-wav2lip` makes from it.
    converts_to: str | None = None


_FACEFUSION_TAG = "models-3.0.0"
_ONNX_FP32_BYTES = 145_200_000  # 36,298,035 float32 parameters plus the graph: "about 145 MB"
_PTH_BYTES = 435_800_000  # weights plus Adam's two moments: "about 436 MB"


def _facefusion_onnx(name: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, file_name=f"{name}.onnx", engine="wav2lip", format="onnx",
                     size_bytes=_ONNX_FP32_BYTES, sha256=None, licence=WAV2LIP_LICENCE,
                     source_page=f"{_FACEFUSION_RELEASE}/tag/{_FACEFUSION_TAG}",
                     url=f"{_FACEFUSION_RELEASE}/download/{_FACEFUSION_TAG}/{name}.onnx", description=description)


def _original_checkpoint(name: str, file_name: str, converts_to: str, description: str) -> ModelSpec:
    return ModelSpec(name=name, file_name=file_name, engine="wav2lip", format="pth", size_bytes=_PTH_BYTES,
                     sha256=None, licence=WAV2LIP_LICENCE, source_page=_WAV2LIP_REPO, url=None,
                     description=description, converts_to=converts_to)


MODELS: tuple[ModelSpec, ...] = (
    _facefusion_onnx("wav2lip_gan_96", "Wav2Lip + GAN, 96x96 face, fp32 ONNX: sharper mouth"),
    _facefusion_onnx("wav2lip_96", "Wav2Lip, 96x96 face, fp32 ONNX: slightly better sync, blurrier mouth"),
    _original_checkpoint("wav2lip_gan_pth", "wav2lip_gan.pth", "wav2lip_gan_96",
                         "original Wav2Lip + GAN PyTorch checkpoint; convert it with models convert-wav2lip"),
    _original_checkpoint("wav2lip_pth", "wav2lip.pth", "wav2lip_96",
                         "original Wav2Lip PyTorch checkpoint; convert it with models convert-wav2lip"),
)


class ModelState(str, enum.Enum):
    PRESENT = "present"
    UNVERIFIED = "unverified"
    MISSING = "missing"
    CORRUPT = "corrupt"


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    state: ModelState
    detail: str
    size: int | None = None
    sha256: str | None = None

    @property
    def usable(self) -> bool:
        return self.state in (ModelState.PRESENT, ModelState.UNVERIFIED)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the API and the studio."""
        spec = dataclasses.asdict(self.spec)
        return {**spec, "path": str(self.path), "state": self.state.value, "usable": self.usable,
                "detail": self.detail, "size": self.size, "actual_sha256": self.sha256}


def models_dir(config: Config) -> Path:
    return config.models.dir if config.models.dir is not None else config.paths.data_dir / "models"


def get_spec(name: str) -> ModelSpec:
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise EngineUnavailableError(f"unknown model {name!r}: registered models are {', '.join(s.name for s in MODELS)}")


def model_path(spec: ModelSpec, config: Config) -> Path:
    return models_dir(config) / spec.file_name


def check_model(spec: ModelSpec, config: Config, with_hash: bool = False) -> ModelStatus:
    """State of the model's file. `with_hash` computes the sha256 even when none is registered (to show it)."""
    path = model_path(spec, config)
    if not path.is_file():
        return ModelStatus(spec, path, ModelState.MISSING, _missing_hint(spec, path))
    size = path.stat().st_size
    digest = file_sha256(path) if (with_hash or spec.sha256) else None
    unreadable = _format_problem(spec, path)
    if unreadable:
        return ModelStatus(spec, path, ModelState.CORRUPT, f"{unreadable}; {_replace_hint(spec, path)}", size, digest)
    mismatch = _provenance_problem(spec, size, digest)
    if mismatch is None:
        checked = "sha256 matches" if spec.sha256 else "size and format match (no published sha256 to check)"
        return ModelStatus(spec, path, ModelState.PRESENT, checked, size, digest)
    if config.models.allow_unverified:
        return ModelStatus(spec, path, ModelState.UNVERIFIED,
                           f"{mismatch}; used anyway because models.allow_unverified is set", size, digest)
    return ModelStatus(spec, path, ModelState.CORRUPT,
                       f"{mismatch}; refused: {_replace_hint(spec, path)}, or set HEYGEM_MODELS__ALLOW_UNVERIFIED=1 "
                       "to use this file anyway", size, digest)


def model_statuses(config: Config, with_hash: bool = False) -> list[ModelStatus]:
    return [check_model(spec, config, with_hash) for spec in MODELS]


def require_model(name: str, config: Config) -> ModelStatus:
    """The usable status of a model, or EngineUnavailableError saying exactly what to do."""
    spec = get_spec(name)
    status = check_model(spec, config)
    if not status.usable:
        raise EngineUnavailableError(f"model {name} is {status.state.value}: {status.detail}")
    return status


def file_sha256(path: Path) -> str:
    return _cached_sha256(str(path), *_identity(path))


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten or replaced: the key of the per-process caches below (the
    studio lists engines every few seconds; hashing or parsing 145 MB each time would be wasteful)."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _format_problem(spec: ModelSpec, path: Path) -> str | None:
    if spec.format != "onnx":
        return None
    return _cached_onnx_problem(str(path), *_identity(path))


@functools.lru_cache(maxsize=32)
def _cached_onnx_problem(path: str, size: int, mtime_ns: int, inode: int) -> str | None:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        return f"not a readable ONNX file ({type(exc).__name__})"
    if not model.graph.input or not model.graph.output:
        return "ONNX file without inputs or outputs"
    return None


def _provenance_problem(spec: ModelSpec, size: int, digest: str | None) -> str | None:
    if spec.sha256:
        if digest != spec.sha256:
            return f"sha256 {digest} differs from the registered {spec.sha256}"
        return None
    if abs(size - spec.size_bytes) > SIZE_TOLERANCE * spec.size_bytes:
        return (f"size {size:,} bytes is not the published {spec.size_bytes / 1e6:.1f} MB "
                f"(±{SIZE_TOLERANCE:.0%}): truncated, a different export, or a different file")
    return None


def _missing_hint(spec: ModelSpec, path: Path) -> str:
    fetch = f"`python -m heygem models fetch {spec.name}`, or " if spec.url else ""
    hint = f"place {spec.file_name} at {path} ({fetch}download it from {spec.source_page})"
    checkpoints = [path.with_name(s.file_name) for s in MODELS if s.converts_to == spec.name]
    present = [checkpoint for checkpoint in checkpoints if checkpoint.is_file()]
    if present:
        hint += f"; or convert the checkpoint you have: python -m heygem models convert-wav2lip {present[0]} {path}"
    return hint


def _replace_hint(spec: ModelSpec, path: Path) -> str:
    return f"replace {path} with the file from {spec.source_page}"


def fetch_model(spec: ModelSpec, config: Config, on_progress: Callable[[int, int | None], None] | None = None,
                url: str | None = None) -> ModelStatus:
    """Download `spec` (from `url` or its registered url) into the models folder, then verify it.

    The file appears under its final name only once complete and verified, so a broken download never
    looks present.
    """
    source = url or spec.url
    path = model_path(spec, config)
    if source is None:
        raise HeyGemError(f"{spec.name} has no direct download: get {spec.file_name} from {spec.source_page} "
                          f"and place it at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        _download(source, partial, on_progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise HeyGemError(f"cannot download {spec.name} from {source} ({reason}); download it on a machine "
                          f"with network access and place it at {path}") from None
    os.replace(partial, path)
    status = check_model(spec, config)
    if not status.usable:
        bad = path.with_name(path.name + ".rejected")
        os.replace(path, bad)
        raise HeyGemError(f"downloaded {spec.name} failed verification ({status.detail}); kept it as {bad}")
    return status


def _download(url: str, target: Path, on_progress: Callable[[int, int | None], None] | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "heygem-models"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        while chunk := response.read(HASH_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
