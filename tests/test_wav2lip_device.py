"""Provider selection: the device a session really runs on, the warning when it is not the one asked for,
and require_gpu's refusal. Real sessions run on this CPU build; the CUDA cases feed judge_device the
provider lists onnxruntime-gpu reports on a box whose CUDA libraries do or do not load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from heygem.engines.onnx_session import (
    CPU,
    CUDA,
    DeviceOutcome,
    create_session,
    is_out_of_memory,
    judge_device,
    requested_providers,
)
from heygem.errors import EngineUnavailableError
from tests.wav2lip_standins import write_standin

GPU_BUILD = [CUDA, CPU]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_standin(tmp_path_factory.mktemp("device") / "standin.onnx")


def test_requested_providers() -> None:
    assert requested_providers("auto", GPU_BUILD) == [CUDA, CPU]
    assert requested_providers("cuda", GPU_BUILD) == [CUDA, CPU]
    assert requested_providers("cpu", GPU_BUILD) == [CPU]
    assert requested_providers("cuda", [CPU]) == [CPU]


def test_cuda_that_started_is_reported() -> None:
    assert judge_device("auto", True, GPU_BUILD, GPU_BUILD).device == "cuda"
    assert judge_device("cpu", False, GPU_BUILD, [CPU]) == DeviceOutcome("cpu", None)
    with pytest.raises(EngineUnavailableError, match=r"wav2lip\.device is cpu"):
        judge_device("cpu", True, GPU_BUILD, [CPU])


@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_cuda_claimed_but_not_started_warns_or_refuses(requested: str) -> None:
    outcome = judge_device(requested, False, GPU_BUILD, [CPU])
    assert outcome.device == "cpu"
    assert outcome.warning is not None and "could not start it" in outcome.warning
    with pytest.raises(EngineUnavailableError, match=r"needs a GPU .* could not start it"):
        judge_device(requested, True, GPU_BUILD, [CPU])


def test_cpu_build(standin: Path) -> None:
    assert CUDA not in onnxruntime.get_available_providers()
    session, outcome = create_session(standin, "auto", require_gpu=False)
    assert outcome.device == "cpu" and outcome.warning is None
    assert session.get_providers() == [CPU]
    _, outcome = create_session(standin, "cpu", require_gpu=False)
    assert outcome.device == "cpu" and outcome.warning is None
    _, outcome = create_session(standin, "cuda", require_gpu=False)
    assert outcome.device == "cpu" and "no CUDA provider" in (outcome.warning or "")
    for requested in ("auto", "cuda", "cpu"):
        with pytest.raises(EngineUnavailableError, match="needs a GPU"):
            create_session(standin, requested, require_gpu=True)  # type: ignore[arg-type]


def test_memory_cap_makes_a_large_batch_fail_as_out_of_memory(standin: Path) -> None:
    session, _ = create_session(standin, "cpu", require_gpu=False, memory_limit_bytes=8 << 20)

    def run(batch: int) -> None:
        session.run(None, {"source": np.zeros((batch, 1, 80, 16), np.float32),
                           "target": np.zeros((batch, 6, 96, 96), np.float32)})

    run(4)
    with pytest.raises(Exception) as caught:  # onnxruntime raises its own Fail class
        run(64)
    assert is_out_of_memory(caught.value)
    assert not is_out_of_memory(ValueError("input 'source' has the wrong shape"))


def test_unloadable_model_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(EngineUnavailableError, match="onnxruntime cannot load"):
        create_session(tmp_path / "broken.onnx", "cpu", require_gpu=False)
