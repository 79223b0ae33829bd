"""Wav2Lip on ONNX Runtime: the neural engine for GPU boxes (on 2 CPU cores it renders about 20 frames/s).

The shared pipeline decodes, tracks, loops and encodes; this engine turns audio into Wav2Lip's mel windows
and, per batch, cuts aligned 96x96 face crops, runs the model and blends the generated lower face back.
Model files come from the registry (heygem.engines.models); a missing or refused file makes the engine
unavailable with the reason, and is never discovered at render time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import onnxruntime
from loguru import logger

from heygem.config import Config
from heygem.engines.models import ModelState, ModelStatus, get_spec, require_model
from heygem.engines.onnx_session import CUDA, create_session, is_out_of_memory
from heygem.engines.wav2lip_audio import WINDOW_COLUMNS, mel_spectrogram, mel_windows
from heygem.engines.wav2lip_face import crop_matrix, cut_crop, paste_lower_face
from heygem.errors import EngineUnavailableError
from heygem.options import TaskOptions
from heygem.pipeline.engine import Availability, Device, FrameBatch, Job, LipSyncEngine, Reporter

_GB = 1024**3


@dataclasses.dataclass(frozen=True)
class ModelIO:
    """What an export calls its tensors; exports differ (source/target, mel_spectrogram/video_frames, ...)."""

    audio: str
    face: str
    output: str
    face_size: int
    fixed_batch: int | None  # None: dynamic batch


@dataclasses.dataclass(frozen=True)
class MelFeatures:
    mel: np.ndarray
    fps: float
    offset_ms: float


def read_model_io(session: onnxruntime.InferenceSession) -> ModelIO:
    """Input roles by shape, not by name: the 1-channel input is the mel window, the 6-channel one the face."""
    by_channels = {_dim(i.shape, 1): i for i in session.get_inputs() if len(i.shape) == 4}
    audio, face = by_channels.get(1), by_channels.get(6)
    outputs = session.get_outputs()
    signature = ", ".join(f"{i.name}{i.shape}" for i in session.get_inputs())
    if audio is None or face is None or len(session.get_inputs()) != 2 or not outputs:
        raise EngineUnavailableError(f"not a Wav2Lip export: inputs {signature}; expected a [B,1,80,16] mel "
                                     "window and a [B,6,S,S] face")
    size = _dim(face.shape, 2)
    if tuple(audio.shape[2:]) != (80, WINDOW_COLUMNS) or size is None or _dim(face.shape, 3) != size:
        raise EngineUnavailableError(f"not a Wav2Lip export: inputs {signature}")
    batch = _dim(face.shape, 0)
    return ModelIO(audio.name, face.name, outputs[0].name, size, batch)


def _dim(shape: list[Any], axis: int) -> int | None:
    """A fixed dimension, or None for a named (dynamic) one."""
    value = shape[axis]
    return value if isinstance(value, int) and value > 0 else None


class Wav2LipEngine(LipSyncEngine):
    name: ClassVar[str] = "wav2lip"
    device: ClassVar[Device] = "cuda"
    # Estimate for fp32 Wav2Lip at batch 128 on CUDA: 0.15 GB weights, about 1 GB of activations and
    # onnxruntime's arena growth, 0.5-1 GB CUDA context and cuDNN workspace. Measure with
    # bench/wav2lip_speed.py --gpu-memory on the target GPU (docs/wav2lip.md).
    gpu_memory_gb: ClassVar[float] = 3.0

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings = config.wav2lip
        self.session: onnxruntime.InferenceSession | None = None
        self.io: ModelIO | None = None
        self.actual_device: Device = "cpu"
        self.batch_size = self.settings.batch_size
        self.model_status: ModelStatus | None = None
        self._reporter: Reporter | None = None
        self._recovering = False
        self.oom_halvings = 0

    @classmethod
    def availability(cls, config: Config) -> Availability:
        try:
            cls._check_model_spec(config)
            status = require_model(config.wav2lip.model, config)
        except EngineUnavailableError as exc:
            return Availability(False, str(exc))
        if config.wav2lip.require_gpu and CUDA not in onnxruntime.get_available_providers():
            return Availability(False, "wav2lip.require_gpu is set but this onnxruntime has no CUDA provider "
                                       "(GPU boxes install requirements-gpu.txt)")
        note = f"{status.spec.name}: {status.detail}" if status.state is ModelState.UNVERIFIED else ""
        return Availability(True, note)

    @staticmethod
    def _check_model_spec(config: Config) -> None:
        spec = get_spec(config.wav2lip.model)
        if spec.format != "onnx" or spec.engine != "wav2lip":
            raise EngineUnavailableError(f"wav2lip.model {spec.name!r} is not a Wav2Lip ONNX model"
                                         + (f"; convert it to {spec.converts_to}" if spec.converts_to else ""))

    def load(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._check_model_spec(self.config)
        self.model_status = require_model(self.settings.model, self.config)
        if self.model_status.state is ModelState.UNVERIFIED:
            reporter.warn(f"model {self.settings.model} is unverified: {self.model_status.detail}")
        limit = int(self.settings.memory_limit_gb * _GB)
        self.session, outcome = create_session(self.model_status.path, self.settings.device,
                                               self.settings.require_gpu, limit)
        self.actual_device = outcome.device
        if outcome.warning:
            reporter.warn(outcome.warning)
        self.io = read_model_io(self.session)
        if self.io.fixed_batch is not None:
            self.batch_size = self.io.fixed_batch
        # The first run initialises CUDA kernels and arenas: pay for it in the init phase, not the first batch.
        self.infer(np.zeros((1, 1, 80, WINDOW_COLUMNS), np.float32),
                   np.zeros((1, self.io.face_size, self.io.face_size, 3), np.uint8))

    def frames_per_render(self) -> int:
        # Whole inference batches per render call: a GPU batch of 128 needs 128 frames at hand.
        return max(self.config.media.batch_frames, self.batch_size)

    def run(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        self._reporter = reporter
        report = super().run(job, reporter)
        assert self.model_status is not None
        return {**report, "model": self.settings.model, "model_state": self.model_status.state.value,
                "device": self.actual_device, "batch_size": self.batch_size, "oom_halvings": self.oom_halvings}

    def audio_features(self, audio: np.ndarray, fps: float, frame_count: int, options: TaskOptions) -> MelFeatures:
        return MelFeatures(mel_spectrogram(audio), fps, self.settings.audio_offset_ms)

    def render(self, batch: FrameBatch, features: MelFeatures) -> list[np.ndarray]:
        assert self.io is not None
        faces = [(i, points) for i, points in enumerate(batch.landmarks) if points is not None]
        if not faces:
            return batch.frames
        size = self.io.face_size
        indices = [i for i, _ in faces]
        matrices = [crop_matrix(points, size, self.settings.crop_scale) for _, points in faces]
        crops = np.stack([cut_crop(batch.frames[i], matrix, size) for i, matrix in zip(indices, matrices, strict=True)])
        mels = mel_windows(features.mel, features.fps, batch.indices[indices], features.offset_ms)
        generated = self.infer(mels, crops)
        frames = list(batch.frames)
        for (i, points), matrix, face in zip(faces, matrices, generated, strict=True):
            frames[i] = paste_lower_face(frames[i], face, matrix, points, self.settings.mask_feather)
        return frames

    def infer(self, mels: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """Generated BGR uint8 crops, in batches of batch_size; an out-of-memory halves the batch and retries."""
        results = []
        start = 0
        while start < len(crops):
            stop = min(start + self.batch_size, len(crops))
            try:
                results.append(self._run_batch(mels[start:stop], crops[start:stop]))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if stop - start == 1 or (self.io is not None and self.io.fixed_batch is not None):
                    raise EngineUnavailableError(
                        f"wav2lip ran out of {self.actual_device} memory at batch {stop - start}: free memory "
                        "or raise wav2lip.memory_limit_gb") from exc
                self._halve_batch(stop - start, exc)
                continue
            self._confirm_recovery()
            start = stop
        return np.concatenate(results)

    def _run_batch(self, mels: np.ndarray, crops: np.ndarray) -> np.ndarray:
        assert self.session is not None and self.io is not None
        count = len(crops)
        if self.io.fixed_batch is not None and count < self.io.fixed_batch:
            # A fixed-batch export takes exactly its batch: repeat the last sample, drop it afterwards.
            fill = self.io.fixed_batch - count
            mels = np.concatenate([mels, np.repeat(mels[-1:], fill, axis=0)])
            crops = np.concatenate([crops, np.repeat(crops[-1:], fill, axis=0)])
        faces = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        masked = faces.copy()
        masked[:, :, self.io.face_size // 2:] = 0.0  # the model draws the lower half from the audio
        feed = {self.io.audio: mels, self.io.face: np.concatenate([masked, faces], axis=1)}
        (output,) = self.session.run([self.io.output], feed)
        return np.clip(output[:count].transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _halve_batch(self, failed_size: int, exc: BaseException) -> None:
        self.batch_size = max(1, failed_size // 2)
        self.oom_halvings += 1
        message = (f"{self.actual_device} out of memory at batch {failed_size}; retrying at batch "
                   f"{self.batch_size}")
        logger.warning("{} ({})", message, str(exc).splitlines()[0][:200])
        self._recovering = True
        if self._reporter is not None:
            self._reporter.error(message)

    def _confirm_recovery(self) -> None:
        if not self._recovering:
            return
        self._recovering = False
        logger.info("recovered at batch {}", self.batch_size)
        if self._reporter is not None:
            self._reporter.clear_error()
