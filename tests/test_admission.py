"""GPU admission decisions, and CPU mode where NVML sees no GPU (as on this machine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from heygem.supervisor.admission import Admission, GpuInfo, admit, probe_gpus

GB = 1024**3
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


def test_the_ray_backend_turns_declared_gpu_memory_into_a_share_of_one_gpu(make_config) -> None:
    from heygem.supervisor.backends.ray_head import gpu_share

    settings = make_config(ray={"gpu_memory_gb": 24}).ray
    assert gpu_share(3.0, settings, reserve_gb=1.0) == 0.14, "wav2lip: seven share a 24 GB GPU"
    assert 7 * gpu_share(3.0, settings, 1.0) <= 1 < 8 * gpu_share(3.0, settings, 1.0)
    assert gpu_share(5.0, make_config(ray={"gpu_memory_gb": 21}).ray, reserve_gb=1.0) == 0.25
    assert gpu_share(40.0, settings, reserve_gb=1.0) == 1.0, "never more than a whole GPU"
    assert gpu_share(3.0, make_config().ray, reserve_gb=1.0) == 1.0, "gpu_memory_gb 0: a whole GPU each"


def test_a_gpu_memory_that_the_reserve_eats_is_refused_by_name(make_config) -> None:
    from heygem.errors import ConfigError
    from heygem.supervisor.backends.ray_head import RayBackend

    config = make_config(supervisor={"backend": "ray", "gpu_reserve_gb": 2.0}, ray={"gpu_memory_gb": 2})
    with pytest.raises(ConfigError, match=r"^ray.gpu_memory_gb \(2\) must be 0 or more than "
                                          r"supervisor.gpu_reserve_gb \(2\), which every GPU keeps free$"):
        RayBackend(config)


def test_a_demand_reads_as_what_a_waiting_task_needs() -> None:
    from heygem.supervisor.backends.base import Demand

    assert str(Demand(1.0, 0.0, 0.0)) == "1 CPU"
    assert str(Demand(0.0, 0.25, 5.0)) == "0.25 GPU"
    assert str(Demand(2.0, 0.14, 3.0)) == "2 CPU and 0.14 GPU"


class FakeNvml:
    """NVML's answers for two 24 GB GPUs, put in place of pynvml's functions (the library boundary)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free_gb: list[float]) -> None:
        import pynvml

        from heygem.supervisor import admission

        self.free_gb = free_gb
        monkeypatch.setattr(admission, "_nvml_ready", None)  # NVML is set up once per process: again here
        monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.free_gb))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: f"Simulated GPU {handle}".encode())
        monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", self.memory)

    def memory(self, handle: int) -> SimpleNamespace:
        total, free = 24 * GB, round(self.free_gb[handle] * GB)
        return SimpleNamespace(total=total, used=total - free, free=free)


def test_nvml_s_free_memory_places_a_gpu_task_on_the_roomiest_gpu(monkeypatch, make_config) -> None:
    from heygem.supervisor.backends.base import Demand
    from heygem.supervisor.backends.local import LocalBackend

    nvml = FakeNvml(monkeypatch, free_gb=[4.1, 14.0])
    assert probe_gpus() == [GpuInfo(0, "Simulated GPU 0", 24.0, 19.9, 4.1),
                            GpuInfo(1, "Simulated GPU 1", 24.0, 10.0, 14.0)]
    backend = LocalBackend(make_config(supervisor={"gpu_reserve_gb": 1.0}))
    wav2lip = Demand(cpus=0.0, gpus=0.0, gpu_memory_gb=6.0)
    assert backend.room(wav2lip) == Admission(True, gpu_index=1)
    # A worker it started is still loading on GPU 1, and has not shown its 12 GB to NVML yet: the next task waits,
    # saying why.
    loading = SimpleNamespace(gpu_index=1, demand=Demand(cpus=0.0, gpus=0.0, gpu_memory_gb=12.0), loading=True,
                              running=True)
    backend.launched.append(loading)  # type: ignore[arg-type]
    assert backend.room(wav2lip) == Admission(False, reason="waiting for 7.0 GB of GPU memory, 4.1 GB free")
    loading.loading = False  # it has loaded (the supervisor saw its run phase): NVML's figure counts it now
    assert backend.room(wav2lip) == Admission(True, gpu_index=1)
    loading.loading = True
    nvml.free_gb[0] = 20.0  # another program on GPU 0 ended
    assert backend.room(wav2lip) == Admission(True, gpu_index=0)
    assert backend.room(Demand(cpus=0.0, gpus=0.0, gpu_memory_gb=0.0)) == Admission(True), "a CPU engine"
    loading.running = False  # its process ended: forgotten
    backend.room(wav2lip)
    assert backend.launched == []


def test_an_nvml_that_fails_leaves_the_machine_in_cpu_mode(monkeypatch) -> None:
    import pynvml

    FakeNvml(monkeypatch, free_gb=[4.1])

    def broken() -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", broken)
    assert probe_gpus() == []
    monkeypatch.setattr("heygem.supervisor.admission._nvml_ready", None)
    monkeypatch.setattr(pynvml, "nvmlInit", broken)  # no driver
    assert probe_gpus() == []
