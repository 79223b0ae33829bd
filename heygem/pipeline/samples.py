"""Media made from nothing, for the demo and the tests: a portrait that moves a little, and speech.

The speech is either real (espeak-ng, when installed) or a speech-like signal with known voiced bursts and
silences: a glottal pulse train through moving formant resonators, syllable-rate loudness, and a breath.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import signal

from heygem.pipeline.media import SAMPLE_RATE, ffmpeg_exe

DEFAULT_BURSTS = ((0.4, 1.4), (2.0, 2.6), (3.2, 4.4))


def portrait() -> np.ndarray:
    """The astronaut portrait (Eileen Collins, public domain) as BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def moving_portrait_frames(count: int, fps: float, size: tuple[int, int] = (512, 512)) -> Iterator[np.ndarray]:
    """The portrait drifting a few pixels and tilting slightly, as a head does on a tripod shot."""
    import cv2

    image = portrait()
    width, height = size
    scale = min(width, height) / 512
    for index in range(count):
        t = index / fps
        dx = 6 * np.sin(2 * np.pi * 0.23 * t) * scale + (width - 512 * scale) / 2
        dy = 4 * np.sin(2 * np.pi * 0.31 * t + 1.0) * scale + (height - 512 * scale) / 2
        angle = 1.2 * np.sin(2 * np.pi * 0.17 * t)
        matrix = cv2.getRotationMatrix2D((256.0, 200.0), angle, scale)
        matrix[:, 2] = matrix[:, 2] + (dx, dy)
        yield cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def speech_like_audio(duration: float, bursts: Sequence[tuple[float, float]] = DEFAULT_BURSTS,
                      breath_at: float | None = None, seed: int = 7) -> np.ndarray:
    """16 kHz mono float32: voiced syllables during `bursts` (seconds), near-silence elsewhere."""
    rng = np.random.default_rng(seed)
    count = round(duration * SAMPLE_RATE)
    t = np.arange(count) / SAMPLE_RATE
    pitch = 125 + 12 * np.sin(2 * np.pi * 0.7 * t) + 3 * rng.standard_normal(count).cumsum() / np.sqrt(count)
    phase = np.cumsum(pitch / SAMPLE_RATE)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    glottal = signal.lfilter([1.0], [1.0, -0.97], pulses)  # spectral tilt of a real glottal source
    voiced = np.zeros(count)
    for start, end in bursts:
        voiced[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] = 1.0
    # Syllables at about 4 Hz inside each burst; vowels move between /a/ and /i/ so formants change.
    syllable = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2) ** 2
    ramp = signal.convolve(voiced, np.hanning(int(0.03 * SAMPLE_RATE)), mode="same")
    envelope = np.clip(ramp / ramp.max(), 0, 1) * syllable if ramp.max() > 0 else ramp
    vowel = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t)
    speech = _formant_filter(glottal, f1=700 - 400 * vowel, f2=1200 + 1000 * vowel) * envelope
    speech /= max(np.abs(speech).max(), 1e-9)
    audio = 0.5 * speech + 10 ** (-60 / 20) * rng.standard_normal(count)
    if breath_at is not None:
        start = int(breath_at * SAMPLE_RATE)
        breath = rng.standard_normal(int(0.35 * SAMPLE_RATE)) * np.hanning(int(0.35 * SAMPLE_RATE))
        breath = signal.lfilter(*signal.butter(2, [800, 5000], btype="band", fs=SAMPLE_RATE), breath)
        audio[start:start + breath.size] += 10 ** (-32 / 20) * breath / np.abs(breath).max()
    return audio.astype(np.float32)


def _formant_filter(source: np.ndarray, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Two resonators whose centre frequencies move; processed in 10 ms blocks with carried filter state."""
    out = np.zeros_like(source)
    block = SAMPLE_RATE // 100
    states = [np.zeros(2), np.zeros(2)]
    for start in range(0, source.size, block):
        piece = source[start:start + block]
        for index, (freqs, bandwidth) in enumerate(((f1, 90.0), (f2, 120.0))):
            radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
            theta = 2 * np.pi * freqs[start] / SAMPLE_RATE
            denominator = [1.0, -2 * radius * np.cos(theta), radius**2]
            filtered, states[index] = signal.lfilter([1 - radius], denominator, piece, zi=states[index])
            out[start:start + block] += filtered * (1.0 if index == 0 else 0.6)
    return out


def espeak_speech(text: str, path: Path) -> bool:
    """Real synthesised speech from espeak-ng into a WAV file; False when espeak-ng is not installed."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return False
    subprocess.run([binary, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path.is_file() and path.stat().st_size > 44


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


def write_video(path: Path, frames: Iterator[np.ndarray], size: tuple[int, int], fps: float,
                codec_args: Sequence[str] = ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                audio_path: Path | None = None) -> Path:
    """Encodes BGR frames with ffmpeg; `codec_args` choose the codec (and container options)."""
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "-"]
    if audio_path is not None:
        args += ["-i", str(audio_path), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-shortest"]
    process = subprocess.Popen([*args, *codec_args, str(path)], stdin=subprocess.PIPE)
    assert process.stdin is not None
    for frame in frames:
        process.stdin.write(np.ascontiguousarray(frame).tobytes())
    process.stdin.close()
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg could not write {path.name}")
    return path
