"""Wav2Lip's audio front end: the exact mel spectrogram the model was trained on, and one window per frame.

Numpy only (librosa is a test dependency, used to check this against an independent implementation).
Any deviation here (padding mode, mel scale, normalisation) silently degrades lip sync, so every constant
below is the training one.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
F_MIN = 55.0
F_MAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_PER_SECOND = SAMPLE_RATE / HOP  # 80
WINDOW_COLUMNS = 16  # 200 ms of audio per video frame


def mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """[80, T] normalised log-mel of 16 kHz mono float audio, values in [-4, 4]."""
    samples = np.asarray(audio, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {samples.shape}")
    # Reflect padding needs more samples than half a window; a clip under 25 ms gets silence appended.
    samples = np.pad(samples, (0, max(0, N_FFT // 2 + 1 - len(samples))))
    emphasised = np.append(samples[:1], samples[1:] - PREEMPHASIS * samples[:-1])
    magnitude = np.abs(_stft(emphasised))
    mel = _mel_basis() @ magnitude
    decibels = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    normalised = 2 * MAX_ABS * ((decibels - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(normalised, -MAX_ABS, MAX_ABS).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: float, frames: np.ndarray, offset_ms: float = 0.0) -> np.ndarray:
    """[len(frames), 1, 80, 16]: for video frame i the 16 mel columns from int(i*80/fps), as the original
    inference does; windows past the end take the last 16 columns, audio shorter than 200 ms is padded
    with silence (-4). `offset_ms` > 0 takes later audio."""
    if mel.shape[1] < WINDOW_COLUMNS:
        pad = np.full((N_MELS, WINDOW_COLUMNS - mel.shape[1]), -MAX_ABS, dtype=np.float32)
        mel = np.concatenate([mel, pad], axis=1)
    offset = round(offset_ms * MEL_PER_SECOND / 1000.0)
    # int() of the float product, exactly as the original, so the windows match it frame for frame.
    starts = np.array([int(i * MEL_PER_SECOND / fps) for i in frames], dtype=np.int64) + offset
    starts = np.clip(starts, 0, mel.shape[1] - WINDOW_COLUMNS)
    columns = starts[:, None] + np.arange(WINDOW_COLUMNS)[None, :]
    return np.ascontiguousarray(mel[:, columns].transpose(1, 0, 2)[:, None])


def _stft(signal: np.ndarray) -> np.ndarray:
    """[N_FFT//2+1, T] centred STFT with reflect padding and a periodic Hann window."""
    padded = np.pad(signal, N_FFT // 2, mode="reflect")
    n_columns = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_columns, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]), writeable=False)
    return np.fft.rfft(frames * _window(), axis=1).T


@functools.cache
def _window() -> np.ndarray:
    # Periodic (not symmetric) Hann of length WIN == N_FFT, as scipy.signal.get_window("hann", 800).
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)


@functools.cache
def _mel_basis() -> np.ndarray:
    """[80, N_FFT//2+1] triangular filters on the Slaney mel scale, each scaled to unit area (Slaney norm)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2)
    edges = _mel_to_hz(mel_points)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs[None, :] - lower) / (centre - lower)
    falling = (upper - fft_freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


# Slaney's scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _MIN_LOG_HZ:
        return hz / _F_SP
    return _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * _F_SP
    logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, logarithmic, linear)
