"""ONNX Runtime sessions on the device the configuration asks for, and the truth about where they run.

onnxruntime-gpu lists CUDAExecutionProvider in get_available_providers() (and get_device() says "GPU")
whenever the package is installed, even when CUDA or cuDNN cannot be loaded; the session then falls back
to CPU with nothing but a line on stderr. Only session.get_providers() tells the real device, so that is
what this module reports, warns about and, with require_gpu, refuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import onnxruntime
from loguru import logger

from heygem.errors import EngineUnavailableError
from heygem.pipeline.engine import Device

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
RequestedDevice = Literal["auto", "cuda", "cpu"]
# Substrings of onnxruntime's messages when an allocation fails (CUDA: "CUDA failure 2: out of memory",
# arena cap: "Available memory of N is smaller than requested bytes of M", "Failed to allocate memory for
# requested buffer", cuDNN/cuBLAS: "...ALLOC_FAILED").
_OUT_OF_MEMORY_MARKERS = ("out of memory", "smaller than requested bytes", "failed to allocate memory",
                          "alloc_failed", "bad_alloc")


@dataclasses.dataclass(frozen=True)
class DeviceOutcome:
    device: Device
    warning: str | None


def requested_providers(requested: RequestedDevice, available: list[str]) -> list[str]:
    if requested != "cpu" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def judge_device(requested: RequestedDevice, require_gpu: bool, available: list[str],
                 session_providers: list[str]) -> DeviceOutcome:
    """The device a session really uses; a warning when that is not what was asked for; an error when
    require_gpu forbids the CPU."""
    if CUDA in session_providers:
        return DeviceOutcome("cuda", None)
    if requested == "cpu" and not require_gpu:
        return DeviceOutcome("cpu", None)
    if requested == "cpu":
        problem = "wav2lip.device is cpu"
    elif CUDA in available:
        problem = ("onnxruntime offers CUDA but the session could not start it (CUDA 12 / cuDNN 9 libraries "
                   "missing or not matching onnxruntime-gpu; onnxruntime's error in the log names the library)")
    else:
        problem = ("this onnxruntime has no CUDA provider (CPU build; GPU boxes install requirements-gpu.txt, "
                   "which has onnxruntime-gpu instead of onnxruntime)")
    if require_gpu:
        raise EngineUnavailableError(f"wav2lip needs a GPU (wav2lip.require_gpu is set) but {problem}")
    if requested == "cuda" or CUDA in available:
        return DeviceOutcome("cpu", f"running on CPU, about 10x slower than a GPU: {problem}")
    return DeviceOutcome("cpu", None)


def create_session(model_path: Path, requested: RequestedDevice, require_gpu: bool,
                   memory_limit_bytes: int = 0) -> tuple[onnxruntime.InferenceSession, DeviceOutcome]:
    """An InferenceSession for `model_path` and the device it really runs on (logged).

    `memory_limit_bytes` > 0 caps onnxruntime's memory arena (CUDA's and the CPU one), so an engine cannot
    take more than the supervisor admitted it for: a batch that does not fit fails as out-of-memory.
    """
    available = onnxruntime.get_available_providers()
    providers: list[str | tuple[str, dict[str, str]]] = list(requested_providers(requested, available))
    options = onnxruntime.SessionOptions()
    # Errors only: the CUDA provider's load failure (naming the missing library) stays in the log; the
    # fallback warning does not, since ours says it with the consequence.
    options.log_severity_level = 3
    if memory_limit_bytes > 0:
        providers = [(name, {"gpu_mem_limit": str(memory_limit_bytes)}) if name == CUDA else name
                     for name in providers]
        _cap_cpu_arena(options, memory_limit_bytes)
    try:
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as exc:
        raise EngineUnavailableError(f"onnxruntime cannot load {model_path}: {exc}") from None
    outcome = judge_device(requested, require_gpu, available, session.get_providers())
    logger.info("onnx session {} runs on {} (asked {}, providers {}, onnxruntime offers {})",
                model_path.name, outcome.device, requested, session.get_providers(), available)
    if outcome.warning:
        logger.warning(outcome.warning)
    return session, outcome


def _cap_cpu_arena(options: onnxruntime.SessionOptions, limit_bytes: int) -> None:
    # The CPU provider takes a cap only through a process-wide ("environment") arena; registering again
    # replaces it. A worker process holds one engine, so process-wide is per engine.
    memory = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                       onnxruntime.OrtMemType.DEFAULT)
    onnxruntime.create_and_register_allocator(memory, onnxruntime.OrtArenaCfg(limit_bytes, -1, -1, -1))
    options.add_session_config_entry("session.use_env_allocators", "1")


def is_out_of_memory(exc: BaseException) -> bool:
    message = str(exc).lower()
    return isinstance(exc, MemoryError) or any(marker in message for marker in _OUT_OF_MEMORY_MARKERS)
