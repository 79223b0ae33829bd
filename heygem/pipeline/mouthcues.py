"""From speech to a mouth, per video frame: how open, how rounded or spread, whether the lips touch.

Two sources, combined in `mouth_cues`:
- acoustic cues, for any language: openness follows voiced loudness and the first formant (jaw opening);
  shape follows the second formant (low F2: rounded "o/u", high F2: spread "i/e"). A noise gate set from the
  clip's own noise floor and a voicing test keep breaths and background noise from moving the mouth. Mouths
  open fast and close more slowly, and lead the sound slightly.
- phones (heygem.pipeline.phones): for English speech the recognised phones sharpen the shape (rounded, spread),
  scale the openness by vowel height (a rounded vowel opens less still), and mark the frames where the lips must
  touch (m, b, p) or the lower lip meets the upper teeth (f, v). For other languages only what transfers is taken:
  closures the sound confirms.
- stop bursts (`labial_stops`, any language): a closure followed by a burst whose spectrum falls, as a release of
  the lips does, closes the lips where the recogniser heard a t or d (its most frequent miss on a short b).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from heygem.options import SpeechLanguage
from heygem.pipeline import phones as lips
from heygem.pipeline.media import SAMPLE_RATE

_HOP = 160  # 10 ms analysis hop at 16 kHz
_WINDOW = 512  # 32 ms
_FREQS = np.fft.rfftfreq(_WINDOW, 1.0 / SAMPLE_RATE)
_SPEECH_BAND = (_FREQS >= 80) & (_FREQS <= 4000)
_F1_BAND = (_FREQS >= 200) & (_FREQS <= 1000)
_F2_BAND = (_FREQS >= 900) & (_FREQS <= 2800)
# Pitch lags for the voicing test: 70-400 Hz.
_MIN_LAG, _MAX_LAG = SAMPLE_RATE // 400, SAMPLE_RATE // 70
# English: openness x (base + range x the phones' openness), normalised to average 1: "ah" (1.0) opens about 1.2x as
# far as "ee" (0.35). A wider range follows vowel height more but the loudness less (the correlation `heygem eval`
# measures drops 0.03 per 0.1 of range).
_VOWEL_GAIN_BASE, _VOWEL_GAIN_RANGE = 0.8, 0.3
# English: the phones' shape is added to the second formant's, which alone tells "oo" from "ee" better than the
# recognised vowels do (measured at the vowels of speech_en_1.wav and Festival speech: F2 alone separates them by
# 1.04-1.08, the phones alone by 0.66-0.82, F2 plus half the phones' shape by 1.19-1.31, in shape units).
_PHONE_SHAPE_WEIGHT = 0.5
_LABIODENTAL_OPENNESS = 0.08  # f, v: the lower lip tucks under the upper teeth, nearly closed
# English: rounded lips ("oo", "o", w) are a small round opening, pushed forward, not a dropped jaw: where the
# phones hear a rounded vowel the mouth opens this share less than the same loudness opens it elsewhere. Loudness
# alone opened a loud "oo" about as wide as an "ah" (0.82 x), and the footage mouth that matches such a narrow,
# wide-open mouth is a dark, toothless hole. Only recognised rounded vowels: rounding from the second formant
# alone also marks back vowels ("car") and the schwas of a low voice, which must stay open.
_ROUNDING_CLOSES = 0.3
# Stop releases: a burst is the level above 1.5 kHz rising this much within 10 ms, right after a closure: the
# level above 400 Hz (what an open mouth radiates; a voice bar lies below) this far under the loudest of the
# 250 ms before it.
_BURST_RISE_DB, _CLOSURE_DIP_DB = 14.0, 20.0
# Where a burst comes from: a labial one (b, p) has a falling spectrum, weak above 3 kHz; an alveolar one (t, d)
# a rising one (Stevens and Blumstein's templates). Measured as the level at 3-8 kHz over that at 0.4-1.5 kHz
# ("tilt"): Festival's voice, b/p -9.5..+3 dB, t/d +6..+25; speech_en_1.wav's male voice, p -13.5..-5, t/d
# -4.3..-2.6. A burst the recogniser heard as t or d counts as a b when its tilt is at least this far under the
# median of the clip's own bursts heard as t or d, and falling.
_LABIAL_UNDER_ALVEOLAR_DB, _LABIAL_TILT_DB = 6.0, -2.0
_ALVEOLARS = frozenset({"D", "T", "DH", "TH"})
_BILABIALS = frozenset({"M", "B", "P"})
# A nasal murmur ending speech before a pause ("I'm." then a breath): at least 30 ms of sound whose level under
# 400 Hz is 3 dB or more over that at 0.4-1.5 kHz (the lips or tongue shut, the sound leaving through the nose),
# right before at least 150 ms under the noise gate. The recogniser often hears a final m so as a weak
# fricative (speech_en_1.wav: "I'm" as "ae th"); one it heard as n or ng is left an n.
_MURMUR_LOW_OVER_MID_DB, _MURMUR_MIN_FRAMES, _MURMUR_MAX_FRAMES, _PAUSE_FRAMES = 3.0, 3, 12, 15
_NASALS, _FRICATIVES = frozenset({"N", "NG"}), frozenset({"TH", "DH", "F", "V", "S", "Z", "HH"})


@dataclasses.dataclass(frozen=True)
class CueSettings:
    lead_ms: float  # the mouth shows a sound this long before it is heard
    attack_ms: float  # time constant of opening
    release_ms: float  # time constant of closing (slower than opening)
    gate_db: float  # frames quieter than the noise floor plus this stay closed
    range_db: float  # loudness range above the gate that maps to fully open
    voicing_threshold: float  # normalised autocorrelation above which a frame counts as voiced
    closed_below: float  # dead zone: openness under this is closed, so silences close fully
    speech_language: SpeechLanguage  # "en": phones drive the lips; "other": acoustic cues plus closures
    closure_dip_db: float  # outside English, a closure counts when the voice dips this much under its surroundings


@dataclasses.dataclass(frozen=True)
class MouthCues:
    openness: np.ndarray  # per video frame, 0 (closed) to 1 (fully open)
    shape: np.ndarray  # per video frame, -1 (rounded) to 1 (spread)
    closed: np.ndarray  # bool per video frame: the lips must touch (m, b, p); openness is 0 there
    labiodental: np.ndarray  # bool per video frame: lower lip to upper teeth (f, v)


def analysis_frames(audio: np.ndarray) -> np.ndarray:
    """Hann-windowed 32 ms frames every 10 ms, centred on t = index * 10 ms."""
    padded = np.pad(audio.astype(np.float32), (_WINDOW // 2, _WINDOW))
    count = max(1, int(np.ceil(audio.size / _HOP)))
    index = np.arange(_WINDOW)[None, :] + _HOP * np.arange(count)[:, None]
    return padded[index] * np.hanning(_WINDOW).astype(np.float32)


def power_spectrum(audio: np.ndarray) -> np.ndarray:
    """Power spectrum of each analysis frame (analysis_frames): computed once per speech, shared by the cues."""
    return np.abs(np.fft.rfft(analysis_frames(audio), axis=1)) ** 2


def band_centroid(power: np.ndarray, band: np.ndarray) -> np.ndarray:
    weights = power[:, band]
    return (weights * _FREQS[band]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)


def voicing(power: np.ndarray) -> np.ndarray:
    """Peak of the normalised autocorrelation over pitch lags: near 1 for vowels, low for breath and noise."""
    autocorrelation = np.fft.irfft(power, n=_WINDOW, axis=1)
    return autocorrelation[:, _MIN_LAG:_MAX_LAG].max(axis=1) / np.maximum(autocorrelation[:, 0], 1e-12)


def relative_position(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Where each value sits between the 10th and 90th percentile of `reference`, mapped to 0..1."""
    if reference.size < 3:
        return np.full_like(values, 0.5)
    low, high = np.percentile(reference, [10, 90])
    return np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)


def frame_loudness_db(audio: np.ndarray) -> np.ndarray:
    """Speech-band level of each 10 ms analysis frame in dBFS."""
    return speech_level_db(power_spectrum(audio))


def speech_level_db(power: np.ndarray) -> np.ndarray:
    """Speech-band level (dBFS) of each analysis frame's `power` spectrum."""
    return 10 * np.log10(power[:, _SPEECH_BAND].sum(axis=1) / _WINDOW + 1e-12)


def band_level_db(power: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Level (dB) of each analysis frame's `power` spectrum between two frequencies."""
    return 10 * np.log10(power[:, (low_hz <= _FREQS) & (high_hz > _FREQS)].sum(axis=1) / _WINDOW + 1e-12)


@dataclasses.dataclass(frozen=True)
class StopRelease:
    """A stop consonant heard in the sound alone: the mouth shut (near silence above 400 Hz), then a burst."""

    closure_start: float  # seconds
    burst: float  # seconds
    tilt_db: float  # level at 3-8 kHz over that at 0.4-1.5 kHz, at the burst


def stop_releases(power: np.ndarray) -> list[StopRelease]:
    """Every closure followed by a burst in a speech's `power_spectrum` (see _BURST_RISE_DB): language-independent."""
    middle, top = band_level_db(power, 400, 1500), band_level_db(power, 1500, 8000)
    high, oral = band_level_db(power, 3000, 8000), band_level_db(power, 400, 8000)
    hop_s = _HOP / SAMPLE_RATE
    releases, index = [], 3
    while index < top.size:
        before = oral[max(index - 25, 0):index - 2]
        closed_before = before.max() - oral[index - 2:index].max() >= _CLOSURE_DIP_DB
        if closed_before and top[index] - top[index - 1] >= _BURST_RISE_DB:
            start = index - 2  # back to where the level above 400 Hz first fell well under the sound before
            while start > max(index - 15, 1) and oral[start - 1] <= before.max() - _CLOSURE_DIP_DB / 2:
                start -= 1
            releases.append(StopRelease(start * hop_s, index * hop_s, float(high[index] - middle[index])))
            index += 5  # the burst's own frication is no new release
        else:
            index += 1
    return releases


def labial_stops(recognised: list[lips.Phone], power: np.ndarray) -> list[lips.Phone]:
    """B phones for the bursts the recogniser heard as t or d (or th) whose spectrum says lips (_LABIAL_TILT_DB):
    its most frequent miss is a short b heard as d. Spanning the closure, so the lips meet for all of it."""
    def heard(release: StopRelease) -> set[str]:
        return {phone.label for phone in recognised if phone.start - 0.03 <= release.burst <= phone.end + 0.01}

    alveolar = [release for release in stop_releases(power)
                if heard(release) & _ALVEOLARS and not heard(release) & _BILABIALS]
    if not alveolar:
        return []
    limit = min(float(np.median([release.tilt_db for release in alveolar])) - _LABIAL_UNDER_ALVEOLAR_DB,
                _LABIAL_TILT_DB)
    return [lips.Phone("B", release.closure_start, release.burst) for release in alveolar if release.tilt_db <= limit]


def final_murmurs(recognised: list[lips.Phone], power: np.ndarray, gate_db: float) -> list[lips.Phone]:
    """M phones for the nasal murmurs that end speech before a pause (_MURMUR_LOW_OVER_MID_DB) where the
    recogniser heard a fricative there but no nasal or bilabial: the lips meet on the final m, not a frame after
    it as they close for the pause."""
    level = speech_level_db(power)
    quiet = level < np.percentile(level, 10) + gate_db
    nasal = (band_level_db(power, 80, 400) - band_level_db(power, 400, 1500) >= _MURMUR_LOW_OVER_MID_DB) & ~quiet
    hop_s = _HOP / SAMPLE_RATE
    found = []
    for pause in np.flatnonzero(quiet[1:] & ~quiet[:-1]) + 1:
        if pause + _PAUSE_FRAMES > quiet.size or not quiet[pause:pause + _PAUSE_FRAMES].all():
            continue
        start = pause
        while start > 1 and nasal[start - 1] and pause - start < _MURMUR_MAX_FRAMES:
            start -= 1
        heard = {phone.label for phone in recognised
                 if phone.start < pause * hop_s and phone.end > start * hop_s - 0.03}
        if pause - start >= _MURMUR_MIN_FRAMES and heard & _FRICATIVES and not heard & (_NASALS | _BILABIALS):
            # Shut from the murmur into the pause: the sound's tail would part them again for a frame.
            found.append(lips.Phone("M", start * hop_s, (pause + _PAUSE_FRAMES) * hop_s))
    return found


def target_openness(power: np.ndarray, settings: CueSettings) -> tuple[np.ndarray, np.ndarray]:
    """Unsmoothed openness and shape per 10 ms analysis frame, from the speech's `power_spectrum`."""
    level_db = speech_level_db(power)
    noise_floor = np.percentile(level_db, 10)
    speech_level = np.percentile(level_db, 97)
    gate = max(noise_floor + settings.gate_db, speech_level - settings.range_db - settings.gate_db, -70.0)
    loudness = np.clip((level_db - gate) / settings.range_db, 0.0, 1.0)
    voiced = voicing(power) > settings.voicing_threshold
    # Unvoiced sounds (s, f, t) barely open the mouth; breath and hiss are unvoiced too and stay under the gate.
    loudness = np.where(voiced, loudness, 0.25 * np.clip(loudness - 0.3, 0.0, 1.0))
    sounding = loudness > 0
    f1 = relative_position(band_centroid(power, _F1_BAND), band_centroid(power[sounding & voiced], _F1_BAND))
    f2 = relative_position(band_centroid(power, _F2_BAND), band_centroid(power[sounding & voiced], _F2_BAND))
    openness = loudness ** 0.7 * (0.65 + 0.35 * f1)
    shape = np.where(sounding, 2 * f2 - 1, 0.0)
    return openness, shape


def attack_release(values: np.ndarray, attack_ms: float, release_ms: float, step_ms: float) -> np.ndarray:
    """One-pole smoothing that rises with one time constant and falls with another."""
    rise = 1.0 - np.exp(-step_ms / max(attack_ms, 1e-3))
    fall = 1.0 - np.exp(-step_ms / max(release_ms, 1e-3))
    smoothed = np.empty_like(values)
    state = 0.0
    for index, value in enumerate(values):
        state += (rise if value > state else fall) * (value - state)
        smoothed[index] = state
    return smoothed


def mouth_cues(audio: np.ndarray, fps: float, frame_count: int, settings: CueSettings) -> MouthCues:
    """The mouth for each of `frame_count` video frames of the 16 kHz mono `audio` (module docstring)."""
    power = power_spectrum(audio)
    openness, shape = acoustic_cues(power, fps, frame_count, settings)
    recognised = lips.recognise_phones(audio)
    recognised = recognised + labial_stops(recognised, power)
    anticipation_s = settings.lead_ms / 1000.0
    if settings.speech_language == "en":
        recognised = recognised + final_murmurs(recognised, power, settings.gate_db)
        framed = lips.frame_phones(recognised, fps, frame_count, anticipation_s)
        # Loudness says how much, the vowel how far: an "ee" opens less than an "ah" at the same loudness. The
        # gain averages 1 over the sounding frames, so vowel height moves the opening around without shrinking it.
        gain = _VOWEL_GAIN_BASE + _VOWEL_GAIN_RANGE * framed.openness
        sounding = openness > 0
        if sounding.any():
            gain = gain / float(np.mean(gain[sounding]))
        openness, shape = phone_shaped(np.clip(openness * gain, 0.0, 1.0), shape, framed)
        labiodental = framed.labiodental
    else:
        level_db = speech_level_db(power)
        framed = lips.frame_phones(lips.confirmed_closures(recognised, level_db, settings.closure_dip_db), fps,
                                   frame_count, anticipation_s)
        labiodental = np.zeros(frame_count, bool)
    openness = np.where(framed.closed, 0.0, np.where(labiodental, np.minimum(openness, _LABIODENTAL_OPENNESS),
                                                     openness))
    return MouthCues(openness=openness.astype(np.float32), shape=np.clip(shape, -1, 1).astype(np.float32),
                     closed=framed.closed.copy(), labiodental=labiodental.copy())


def phone_shaped(openness: np.ndarray, shape: np.ndarray, framed: lips.FramePhones) -> tuple[np.ndarray, np.ndarray]:
    """English: the acoustic openness and shape per video frame, corrected by the recognised phones' lips.

    The phones' shape is added to the second formant's (_PHONE_SHAPE_WEIGHT). Where the phones hear a rounded
    vowel, the mouth opens less (_ROUNDING_CLOSES): "oo" is narrower and less open than "ah".
    """
    rounded = np.where(framed.lip_class == lips.LipClass.ROUNDED, np.maximum(-framed.shape, 0.0), 0.0)
    return openness * (1.0 - _ROUNDING_CLOSES * rounded), shape + _PHONE_SHAPE_WEIGHT * framed.shape


def acoustic_cues(power: np.ndarray, fps: float, frame_count: int,
                  settings: CueSettings) -> tuple[np.ndarray, np.ndarray]:
    """Openness and shape per video frame from loudness and formants alone (`power`: power_spectrum)."""
    openness, shape = target_openness(power, settings)
    step_ms = 1000.0 * _HOP / SAMPLE_RATE
    openness = attack_release(openness, settings.attack_ms, settings.release_ms, step_ms)
    shape = attack_release(shape + 1.0, settings.attack_ms, settings.attack_ms, step_ms) - 1.0
    # Each video frame averages the analysis frames of its own duration, shifted earlier by the lead.
    analysis_rate = SAMPLE_RATE / _HOP
    centres = (np.arange(frame_count) / fps + settings.lead_ms / 1000.0) * analysis_rate
    half = 0.5 * analysis_rate / fps
    bounds = np.clip(np.stack([centres - half, centres + half]).round().astype(int), 0, openness.size - 1)
    cumulative_open = np.concatenate([[0.0], np.cumsum(openness)])
    cumulative_shape = np.concatenate([[0.0], np.cumsum(shape)])
    counts = np.maximum(bounds[1] - bounds[0] + 1, 1)
    per_frame_open = (cumulative_open[bounds[1] + 1] - cumulative_open[bounds[0]]) / counts
    per_frame_shape = (cumulative_shape[bounds[1] + 1] - cumulative_shape[bounds[0]]) / counts
    # A dead zone rather than a threshold: tiny residues close fully without a visible jump.
    per_frame_open = np.clip((per_frame_open - settings.closed_below) / (1.0 - settings.closed_below), 0.0, 1.0)
    return per_frame_open, np.clip(per_frame_shape, -1, 1)
