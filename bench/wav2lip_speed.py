"""Wav2Lip engine speed: frames per second of the model alone and of the engine's render (crop, infer,
paste-back) at several batch sizes, plus peak GPU memory on CUDA.

    python -m bench.wav2lip_speed                       # CPU, batches 1 8 32, random-weight Wav2Lip
    python -m bench.wav2lip_speed --device cuda --batches 1 32 128 --frames 512 --gpu-memory
    python -m bench.wav2lip_speed --model data/models/wav2lip_gan_96.onnx   # a real file

Speed does not depend on the weights, so without --model the script exports a randomly initialised
Wav2Lip (the real architecture, 36.3 M parameters) and measures that. Results go to stdout as a Markdown
table and to bench/results/wav2lip_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from heygem.config import load_config
from heygem.engines.models import get_spec
from heygem.engines.wav2lip import MelFeatures, Wav2LipEngine
from heygem.engines.wav2lip_audio import mel_spectrogram
from heygem.pipeline.engine import FrameBatch
from heygem.pipeline.samples import portrait, speech_like_audio
from heygem.pipeline.tracking import FaceTracker, TrackerSettings

RESULTS = Path(__file__).resolve().parent / "results"
FPS = 25.0


class LogReporter:
    """Prints what a worker would report to the supervisor."""

    def stage(self, name: str) -> None:
        pass

    def progress(self, percent: float) -> None:
        pass

    def error(self, message: str) -> None:
        print(f"  engine error (recovering): {message}")

    def clear_error(self) -> None:
        print("  engine recovered")

    def warn(self, message: str) -> None:
        print(f"  engine warning: {message}")

    def advance(self) -> None: ...


def random_wav2lip(folder: Path) -> Path:
    from heygem.engines.wav2lip_torch import Wav2Lip, export_onnx

    path = folder / get_spec("wav2lip_gan_96").file_name
    export_onnx(Wav2Lip().eval(), path)
    return path


def engine_for(models_dir: Path, device: str, batch: int) -> Wav2LipEngine:
    config = load_config(overrides={
        "models": {"dir": str(models_dir), "allow_unverified": True},
        "wav2lip": {"device": device, "batch_size": batch},
    })
    engine = Wav2LipEngine(config)
    engine.load(LogReporter())
    return engine


def sample_frame(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 720p frame with the portrait's face, and its landmarks."""
    width, height = size
    frame = cv2.resize(portrait(), (height, height))
    frame = cv2.copyMakeBorder(frame, 0, 0, (width - height) // 2, width - height - (width - height) // 2,
                               cv2.BORDER_REPLICATE)
    tracker = FaceTracker(FPS, TrackerSettings(0.5, 1.7, 256, 1.5, 6.0))
    landmarks = tracker.track(frame)
    tracker.close()
    if landmarks is None:
        raise RuntimeError("no face in the benchmark frame")
    return frame, landmarks


def time_model(engine: Wav2LipEngine, frames: int, batch: int) -> float:
    """Frames per second of inference alone (input preparation included), on random inputs."""
    assert engine.io is not None
    size = engine.io.face_size
    mels = np.random.default_rng(0).uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    crops = np.random.default_rng(1).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    rounds = max(1, frames // batch)
    started = time.perf_counter()
    for _ in range(rounds):
        engine.infer(mels, crops)
    return rounds * batch / (time.perf_counter() - started)


def time_render(engine: Wav2LipEngine, frame: np.ndarray, landmarks: np.ndarray, frames: int, batch: int) -> float:
    """Frames per second of the engine's render hook: crops, mel windows, inference, paste-back."""
    features = MelFeatures(mel_spectrogram(speech_like_audio(frames / FPS + 1)), FPS, 0.0)
    rounds = max(1, frames // batch)
    started = time.perf_counter()
    for index in range(rounds):
        batch_frames = FrameBatch(np.arange(index * batch, (index + 1) * batch), [frame] * batch,
                                  [landmarks] * batch)
        engine.render(batch_frames, features)
    return rounds * batch / (time.perf_counter() - started)


def gpu_memory_gb() -> float | None:
    """GPU memory this process holds (NVML), or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == os.getpid():
                return round(process.usedGpuMemory / 1024**3, 2)
        return 0.0
    except Exception:
        return None


def measure(models_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    frame, landmarks = sample_frame((1280, 720))
    rows = []
    for batch in args.batches:
        engine = engine_for(models_dir, args.device, batch)
        time_model(engine, batch, batch)  # warm-up at this batch's shapes (CUDA picks its kernels per shape)
        # Best of several runs: on a shared machine other processes only ever make a run slower.
        row = {"batch": batch, "device": engine.actual_device,
               "model_fps": round(max(time_model(engine, args.frames, batch) for _ in range(args.repeats)), 1),
               "render_fps": round(max(time_render(engine, frame, landmarks, args.frames, batch)
                                       for _ in range(args.repeats)), 1)}
        if args.gpu_memory:
            row["gpu_memory_gb"] = gpu_memory_gb()
        rows.append(row)
        print(f"  batch {batch}: {row}")
        del engine  # one session at a time, so GPU memory figures do not add up
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a Wav2Lip ONNX file (default: random weights, same speed)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--frames", type=int, default=64, help="frames timed per batch size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the fastest counts")
    parser.add_argument("--gpu-memory", action="store_true", help="record this process's GPU memory (NVML)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        models_dir = Path(folder)
        if args.model:
            shutil.copy(args.model, models_dir / get_spec("wav2lip_gan_96").file_name)
        else:
            random_wav2lip(models_dir)
        rows = measure(models_dir, args)
    print("\n| batch | device | model fps | render fps |" + (" GPU GB |" if args.gpu_memory else ""))
    print("|---:|---|---:|---:|" + ("---:|" if args.gpu_memory else ""))
    for row in rows:
        memory = f" {row.get('gpu_memory_gb')} |" if args.gpu_memory else ""
        print(f"| {row['batch']} | {row['device']} | {row['model_fps']} | {row['render_fps']} |{memory}")
    RESULTS.mkdir(exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    (RESULTS / "wav2lip_speed.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
