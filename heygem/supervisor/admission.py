"""Admission on this machine: whether a queued task may start now, and on which GPU. NVML decides; without it,
CPU mode. (The ray backend admits on the cluster's resources: heygem.supervisor.backends.ray_head.)"""

from __future__ import annotations

import dataclasses
import threading

from loguru import logger

_GB = 1024**3
_nvml_lock = threading.Lock()
_nvml_ready: bool | None = None


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_gb: float
    memory_used_gb: float
    memory_free_gb: float


@dataclasses.dataclass(frozen=True)
class Admission:
    admitted: bool
    # Where: a GPU of this machine (local backend), or a cluster node's id (ray backend).
    gpu_index: int | None = None
    node_id: str | None = None
    reason: str = ""
    # Refused, but room may appear without anything waking the supervisor (a backend whose view of free resources
    # lags): ask again after this many seconds rather than at the next poll.
    retry_s: float | None = None


def _init_nvml() -> bool:
    global _nvml_ready
    with _nvml_lock:
        if _nvml_ready is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_ready = True
            except Exception as exc:  # no driver, no library, no GPU: all mean CPU mode
                logger.info("NVML unavailable ({}: {}): CPU mode", type(exc).__name__, exc)
                _nvml_ready = False
        return _nvml_ready


def probe_gpus() -> list[GpuInfo]:
    if not _init_nvml():
        return []
    import pynvml

    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GpuInfo(index, name.decode() if isinstance(name, bytes) else str(name),
                                round(memory.total / _GB, 2), round(memory.used / _GB, 2),
                                round(memory.free / _GB, 2)))
    except pynvml.NVMLError as exc:
        logger.warning("NVML query failed: {}", exc)
    return gpus


def admit(need_gb: float, reserve_gb: float, gpus: list[GpuInfo], pending_gb: dict[int, float]) -> Admission:
    """Pick the GPU with the most free memory once the needs of workers still loading are subtracted.

    `pending_gb` holds, per GPU, what admitted workers declared but NVML may not show as used yet.
    """
    if need_gb <= 0 or not gpus:
        return Admission(True)
    free = {gpu.index: gpu.memory_free_gb - pending_gb.get(gpu.index, 0.0) for gpu in gpus}
    best = max(free, key=lambda index: free[index])
    required = need_gb + reserve_gb
    if free[best] >= required:
        return Admission(True, best)
    return Admission(False, reason=f"waiting for {required:.1f} GB of GPU memory, {max(free[best], 0):.1f} GB free")
