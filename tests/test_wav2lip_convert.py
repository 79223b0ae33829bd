"""The PyTorch Wav2Lip and the .pth -> ONNX converter, on a randomly initialised checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from heygem.cli import main
from heygem.engines.models import ModelState, check_model, get_spec
from heygem.engines.wav2lip_torch import Wav2Lip, convert_checkpoint
from heygem.errors import InputError
from tests.conftest import ConfigFactory

pytestmark = pytest.mark.slow

KEY_LIST = Path(__file__).parent / "data" / "wav2lip_state_dict_keys.txt"


def published_keys() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the original checkpoint, in the original order."""
    keys = {}
    for line in KEY_LIST.read_text().splitlines():
        name, _, shape = line.partition(" ")
        keys[name] = tuple(int(size) for size in re.findall(r"\d+", shape))
    return keys


def random_checkpoint(path: Path, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """A checkpoint in the original training format, with BatchNorm statistics randomised too (the
    converter must carry them, not just the conv weights)."""
    torch.manual_seed(7)
    state = Wav2Lip().state_dict()
    for name, value in state.items():
        if name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif name.endswith(("running_mean", "conv_block.1.bias")):
            value.normal_(0, 0.1)
    torch.save({"state_dict": {prefix + name: value for name, value in state.items()}, "optimizer": {},
                "global_step": 1234, "global_epoch": 3}, path)
    return state


def test_state_dict_equals_published_key_list() -> None:
    ours = {name: tuple(value.shape) for name, value in Wav2Lip().state_dict().items()}
    assert list(ours) == list(published_keys())
    assert ours == published_keys()
    assert sum(p.numel() for p in Wav2Lip().parameters()) == 36_298_035


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("convert")
    checkpoint = folder / "wav2lip_gan.pth"
    random_checkpoint(checkpoint)
    output = folder / "models" / "wav2lip_gan_96.onnx"
    assert main(["models", "convert-wav2lip", str(checkpoint), str(output)]) == 0
    return checkpoint, output


def test_converted_onnx_matches_torch_at_any_batch(converted: tuple[Path, Path]) -> None:
    checkpoint, output = converted
    model = Wav2Lip().eval()
    model.load_state_dict({k.removeprefix("module."): v for k, v in torch.load(checkpoint)["state_dict"].items()})
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["source", "target"]
    assert session.get_inputs()[1].shape == ["batch", 6, 96, 96]
    rng = np.random.default_rng(1)
    for batch in (1, 5):
        audio = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
        face = rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)
        (actual,) = session.run(None, {"source": audio, "target": face})
        with torch.no_grad():
            expected = model(torch.from_numpy(audio), torch.from_numpy(face)).numpy()
        assert actual.shape == (batch, 3, 96, 96)
        assert np.abs(actual - expected).max() < 1e-4


def test_converted_file_passes_registry_size_check(converted: tuple[Path, Path], make_config: ConfigFactory) -> None:
    _, output = converted
    config = make_config(models={"dir": str(output.parent)})
    assert check_model(get_spec("wav2lip_gan_96"), config).state is ModelState.PRESENT


def test_checkpoint_without_prefix_converts(tmp_path: Path) -> None:
    random_checkpoint(tmp_path / "plain.pth", prefix="")
    report = convert_checkpoint(tmp_path / "plain.pth", tmp_path / "plain.onnx")
    assert report.max_abs_error < 1e-4 and report.global_step == 1234


def test_foreign_checkpoint_is_refused_with_key_names(tmp_path: Path) -> None:
    state = Wav2Lip().state_dict()
    state.pop("output_block.1.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"missing: output_block\.1\.weight.*unexpected: extra\.weight"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "other.onnx")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        convert_checkpoint(tmp_path / "junk.pth", tmp_path / "junk.onnx")
