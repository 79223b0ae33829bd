"""Whether a speech track holds speech. A silent or mostly silent one renders a video whose mouth never moves, which
a person would only notice after the download: the pipeline says so as the task's warning (studio, /api/v1
`warning`, /easy/query `msg`, the CLI's "warning:" line)."""

from __future__ import annotations

import numpy as np

from heygem.pipeline.media import SAMPLE_RATE

# 20 ms windows; one is "sound" above -40 dBFS RMS (a quiet room's hiss sits near -60, soft speech near -30).
WINDOW_S = 0.02
SOUND_RMS = 0.01
# Below this share of windows with sound, the speech is "mostly silence": speech, even with pauses, keeps well above.
MOSTLY_SILENT_SHARE = 0.2


def sound_share(audio: np.ndarray) -> float:
    """The share (0..1) of 20 ms windows of 16 kHz mono `audio` that hold sound rather than silence."""
    window = round(WINDOW_S * SAMPLE_RATE)
    count = audio.size // window
    if count == 0:
        return 0.0
    windows = audio[:count * window].astype(np.float64).reshape(count, window)
    rms = np.sqrt(np.mean(windows * windows, axis=1))
    return float(np.mean(rms > SOUND_RMS))


def silence_warning(audio: np.ndarray) -> str:
    """A warning for a speech track with no sound, or mostly silence; "" for one that holds speech."""
    share = sound_share(audio)
    if share == 0.0:
        return ("the speech track is silent: no sound was found in it, so the mouth never moves; "
                "check the recording (microphone muted, wrong file?)")
    if share < MOSTLY_SILENT_SHARE:
        return (f"the speech track is mostly silence (sound in {share:.0%} of it), so the mouth barely moves; "
                "check the recording")
    return ""
