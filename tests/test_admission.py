"""GPU admission decisions, and CPU mode where NVML sees no GPU (as on this machine)."""

from __future__ import annotations

import pytest

from heygem.supervisor.admission import Admission, GpuInfo, admit, probe_gpus

GPUS = [GpuInfo(0, "GPU A", 24.0, 19.9, 4.1), GpuInfo(1, "GPU B", 24.0, 10.0, 14.0)]


def test_cpu_engines_and_gpu_less_machines_are_always_admitted() -> None:
    assert admit(0.0, 1.0, GPUS, {}) == Admission(True)
    assert admit(6.0, 1.0, [], {}) == Admission(True)


def test_the_gpu_with_the_most_free_memory_is_chosen() -> None:
    assert admit(6.0, 1.0, GPUS, {}) == Admission(True, gpu_index=1)


def test_memory_promised_to_loading_workers_counts_as_used() -> None:
    decision = admit(6.0, 1.0, GPUS, {1: 12.0})
    assert decision == Admission(False, reason="waiting for 7.0 GB of GPU memory, 4.1 GB free")


def test_a_task_waits_with_the_reason_when_no_gpu_has_room() -> None:
    one_gpu = [GpuInfo(0, "GPU A", 24.0, 19.9, 4.1)]
    assert admit(6.0, 1.0, one_gpu, {}).reason == "waiting for 7.0 GB of GPU memory, 4.1 GB free"


def test_this_machine_without_nvml_runs_in_cpu_mode(start_supervisor) -> None:
    if probe_gpus():
        pytest.skip("NVML sees a GPU here: CPU mode does not apply")
    info = start_supervisor().system_info()
    assert info["device"] == "CPU only"
    assert info["gpus"] == []
    assert info["workers_busy"] == 0
