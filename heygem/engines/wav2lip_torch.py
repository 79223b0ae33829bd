"""Wav2Lip in PyTorch, written from the published architecture, and the .pth -> ONNX converter.

Module names reproduce the original checkpoint's state_dict keys exactly (e.g.
`face_encoder_blocks.0.0.conv_block.0.weight`), so the public wav2lip.pth / wav2lip_gan.pth load with
strict=True. Only the converter needs torch; the engine runs the exported ONNX file.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heygem.errors import InputError

# Names of the widely used export (audio first, then face); the engine reads names from any export.
AUDIO_INPUT, FACE_INPUT, OUTPUT = "source", "target", "output"
OPSET = 17
# Largest allowed |onnx - torch| on a random batch; sigmoid outputs lie in [0, 1].
EXPORT_TOLERANCE = 1e-3


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d (+ identity) + ReLU; `transpose` makes it the decoder's up-sampling block."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1, padding: int = 1,
                 residual: bool = False, transpose: bool = False, output_padding: int = 0) -> None:
        super().__init__()
        conv: nn.Module = (nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding) if transpose
                           else nn.Conv2d(cin, cout, kernel, stride, padding))
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


def _stage(cin: int, cout: int, stride: int | tuple[int, int], n_residual: int, kernel: int = 3,
           padding: int = 1) -> list[nn.Module]:
    """A strided conv followed by `n_residual` 3x3 residual convs at the new width."""
    return [ConvBlock(cin, cout, kernel, stride, padding),
            *(ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual))]


def _up(cin: int, cout: int, n_residual: int, stride: int = 2, padding: int = 1,
        output_padding: int = 1) -> nn.Sequential:
    return nn.Sequential(ConvBlock(cin, cout, 3, stride, padding, transpose=True, output_padding=output_padding),
                         *(ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)))


class Wav2Lip(nn.Module):
    """(audio [B,1,80,16], face [B,6,96,96]) -> face [B,3,96,96], all in [0, 1] but the mel."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),                          # 96x96
            nn.Sequential(*_stage(16, 32, 2, 2)),                              # 48x48
            nn.Sequential(*_stage(32, 64, 2, 3)),                              # 24x24
            nn.Sequential(*_stage(64, 128, 2, 2)),                             # 12x12
            nn.Sequential(*_stage(128, 256, 2, 2)),                            # 6x6
            nn.Sequential(*_stage(256, 512, 2, 1)),                            # 3x3
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1x1
        ])
        self.audio_encoder = nn.Sequential(
            *_stage(1, 32, 1, 2),
            *_stage(32, 64, (3, 1), 2),
            *_stage(64, 128, 3, 2),
            *_stage(128, 256, (3, 2), 1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),
            _up(1024, 512, 1, stride=1, padding=0, output_padding=0),        # 3x3
            _up(1024, 512, 2),                                                 # 6x6
            _up(768, 384, 2),                                                  # 12x12
            _up(512, 256, 2),                                                  # 24x24
            _up(320, 128, 2),                                                  # 48x48
            _up(160, 64, 2),                                                   # 96x96
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    onnx_path: Path
    parameters: int
    max_abs_error: float
    global_step: int | None


def load_checkpoint(path: Path) -> tuple[Wav2Lip, int | None]:
    """The network of an original-format checkpoint ({"state_dict", ...}, keys maybe `module.`-prefixed)."""
    try:
        # weights_only: a .pth is a pickle; never let one downloaded from anywhere run code here.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise InputError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no state_dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = Wav2Lip()
    _check_keys(path, state, model.state_dict())
    model.load_state_dict(state, strict=True)
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return model.eval(), step if isinstance(step, int) else None


def _check_keys(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(expected) & set(state)
                         if tuple(state[key].shape) != tuple(expected[key].shape))
    problems = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                if keys]
    if problems:
        raise InputError(f"{path} is not a Wav2Lip (96x96) checkpoint; keys {'; '.join(problems)}")


def export_onnx(model: Wav2Lip, onnx_path: Path) -> None:
    """ONNX with a dynamic batch axis, inputs named like the widely used export."""
    audio, face = torch.zeros(2, 1, 80, 16), torch.zeros(2, 6, 96, 96)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript (not a dependency).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (audio, face), str(onnx_path), dynamo=False, opset_version=OPSET,
                          input_names=[AUDIO_INPUT, FACE_INPUT], output_names=[OUTPUT],
                          dynamic_axes={AUDIO_INPUT: {0: "batch"}, FACE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})


def max_export_error(model: Wav2Lip, onnx_path: Path, batch: int = 3, seed: int = 0) -> float:
    """Largest |onnx - torch| on a random batch whose size differs from the export's, to prove it is dynamic."""
    import onnxruntime

    generator = torch.Generator().manual_seed(seed)
    audio = torch.rand(batch, 1, 80, 16, generator=generator) * 8 - 4
    face = torch.rand(batch, 6, 96, 96, generator=generator)
    with torch.no_grad():
        expected = model(audio, face).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {AUDIO_INPUT: audio.numpy(), FACE_INPUT: face.numpy()})
    return float(np.abs(actual - expected).max())


def convert_checkpoint(pth_path: Path, onnx_path: Path) -> ConversionReport:
    model, step = load_checkpoint(pth_path)
    export_onnx(model, onnx_path)
    error = max_export_error(model, onnx_path)
    if error > EXPORT_TOLERANCE:
        raise InputError(f"exported {onnx_path} differs from the checkpoint by {error:.2e} (> {EXPORT_TOLERANCE})")
    parameters = sum(p.numel() for p in model.parameters())
    return ConversionReport(onnx_path, parameters, error, step)
