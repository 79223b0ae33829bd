"""The Wav2Lip mel front end against an independent implementation of the training formula (librosa)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal

from heygem.engines.wav2lip_audio import mel_spectrogram, mel_windows


def reference_mel(audio: np.ndarray) -> np.ndarray:
    """The original Wav2Lip audio.py, written out with librosa."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], audio)
    spectrum = librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
    decibels = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(spectrum))) - 20
    return np.clip(8 * ((decibels + 100) / 100) - 4, -4, 4)


def reference_windows(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """The original inference loop: one 16-column window per frame until the audio runs out."""
    chunks, i = [], 0
    while True:
        start = int(i * 80.0 / fps)
        if start + 16 > mel.shape[1]:
            chunks.append(mel[:, mel.shape[1] - 16:])
            return chunks
        chunks.append(mel[:, start:start + 16])
        i += 1


@pytest.fixture(scope="module")
def speech_like() -> np.ndarray:
    """1.3 s of a gliding voiced tone with syllable-rate loudness, noise bursts and a silent gap."""
    rng = np.random.default_rng(5)
    t = np.arange(int(1.3 * 16000)) / 16000
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / 16000) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    audio = 0.3 * voiced * envelope + 0.05 * rng.standard_normal(t.size) * (envelope < 0.1)
    audio[8000:9600] = 0.0
    return audio.astype(np.float32)


@pytest.mark.slow  # librosa's import alone takes seconds
def test_mel_matches_librosa_reference(speech_like: np.ndarray) -> None:
    ours = mel_spectrogram(speech_like)
    reference = reference_mel(speech_like.astype(np.float64))
    assert ours.shape == reference.shape == (80, 1 + len(speech_like) // 200)
    assert np.abs(ours - reference).max() < 1e-4
    # The test signal must exercise the whole range, or clipping bugs would hide.
    assert ours.min() == -4 and ours.max() > 0


@pytest.mark.parametrize("fps", [25.0, 29.97, 30.0])
def test_windows_follow_original_indexing(speech_like: np.ndarray, fps: float) -> None:
    mel = mel_spectrogram(speech_like)
    expected = reference_windows(mel, fps)
    windows = mel_windows(mel, fps, np.arange(len(expected)))
    assert windows.shape == (len(expected), 1, 80, 16)
    for window, chunk in zip(windows, expected, strict=True):
        np.testing.assert_array_equal(window[0], chunk)


def test_offset_shifts_window_and_short_audio_is_padded(speech_like: np.ndarray) -> None:
    mel = mel_spectrogram(speech_like)
    shifted = mel_windows(mel, 25.0, np.arange(10), offset_ms=40.0)
    np.testing.assert_array_equal(shifted[0, 0], mel[:, 3:19])
    short = mel_windows(mel[:, :5], 25.0, np.array([0, 1, 2]))
    assert short.shape == (3, 1, 80, 16)
    assert (short[:, 0, :, 5:] == -4).all()
    assert mel_spectrogram(speech_like[:100]).shape == (80, 3)
