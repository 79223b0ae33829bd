"""From speech to lip shapes through phones: what the lips do, not only how loud the voice is.

pocketsphinx's phone recogniser ("allphone" search, US-English acoustic model and phone language model, both
inside the wheel: nothing is downloaded) turns the speech into CMU phones with 10 ms times. Each phone has a
lip class (as animators and viseme studies group them: lips together on M B P, lower lip to upper teeth on
F V, rounded on UW OW UH W, spread on IY IH EY, open by vowel height), a target openness and a target shape.
`frame_phones` turns the phone spans into per-video-frame targets with three timing rules:

- a closure shorter than a frame still closes at least one frame (a closure between two frame centres would
  otherwise never be seen);
- every shape is shown `anticipation_s` early (lips move before the sound: 1-2 frames);
- shapes are averaged over each frame's own duration, and a shape held for a single frame between two frames
  of another shape takes its neighbours' shape, so short phones blend instead of flickering.

The recogniser inserts spurious phones, and a spurious M in the middle of a vowel would snap the lips shut:
`confirmed_closures` keeps only closures the sound confirms (a dip of the speech level against its
surroundings, as a real closure silences or muffles the voice). That test needs no English, so it is also what
transfers to speech in other languages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from loguru import logger

from heygem.pipeline import phone_decoder
from heygem.pipeline.media import SAMPLE_RATE, read_audio

_PHONE_FRAME_S = phone_decoder.PHONE_FRAME_S
_PIECE_S, _CUT_SEARCH_S = 30.0, 5.0  # long speech is decoded in pieces of at most 30 s, cut in their last 5 s


class LipClass(enum.IntEnum):
    REST = 0  # silence: lips closed and relaxed
    CLOSED = 1  # M B P: the lips touch
    LABIODENTAL = 2  # F V: lower lip against the upper teeth
    ROUNDED = 3  # UW OW UH W: narrow, pushed forward
    SPREAD = 4  # IY IH EY: wide
    OPEN = 5  # open vowels: the jaw drops
    NEUTRAL = 6  # the other consonants and mid vowels: lips follow the jaw


@dataclasses.dataclass(frozen=True)
class LipTarget:
    lip_class: LipClass
    openness: float  # 0 closed .. 1 widest vowel
    shape: float  # -1 rounded .. 1 spread


def _target(lip_class: LipClass, openness: float, shape: float) -> LipTarget:
    return LipTarget(lip_class, openness, shape)


_REST = _target(LipClass.REST, 0.0, 0.0)
# CMU phones (pocketsphinx's set); anything else (SIL, +NSN+ noise, ...) is rest.
PHONE_TARGETS: dict[str, LipTarget] = {
    **{phone: _target(LipClass.CLOSED, 0.0, 0.0) for phone in ("M", "B", "P")},
    **{phone: _target(LipClass.LABIODENTAL, 0.1, 0.0) for phone in ("F", "V")},
    "UW": _target(LipClass.ROUNDED, 0.35, -1.0), "UH": _target(LipClass.ROUNDED, 0.45, -1.0),
    "W": _target(LipClass.ROUNDED, 0.25, -1.0), "OW": _target(LipClass.ROUNDED, 0.6, -1.0),
    "OY": _target(LipClass.ROUNDED, 0.6, -0.6),  # starts rounded
    "IY": _target(LipClass.SPREAD, 0.35, 1.0), "IH": _target(LipClass.SPREAD, 0.45, 1.0),
    "EY": _target(LipClass.SPREAD, 0.55, 0.9),
    "AA": _target(LipClass.OPEN, 1.0, 0.0), "AE": _target(LipClass.OPEN, 0.9, 0.3),
    "AY": _target(LipClass.OPEN, 0.9, 0.2), "AO": _target(LipClass.OPEN, 0.85, -0.4),
    "AW": _target(LipClass.OPEN, 0.85, -0.3),  # ends rounded
    "AH": _target(LipClass.OPEN, 0.7, 0.0),
    "EH": _target(LipClass.NEUTRAL, 0.65, 0.4), "ER": _target(LipClass.NEUTRAL, 0.45, -0.3),
    # Post-alveolars and R push the lips forward; S Z and Y spread them a little.
    **{phone: _target(LipClass.NEUTRAL, 0.25, -0.5) for phone in ("SH", "ZH", "CH", "JH")},
    "R": _target(LipClass.NEUTRAL, 0.3, -0.4),
    **{phone: _target(LipClass.NEUTRAL, 0.2, 0.3) for phone in ("S", "Z", "Y")},
    **{phone: _target(LipClass.NEUTRAL, 0.25, 0.0) for phone in ("T", "D", "N", "L", "TH", "DH", "K", "G",
                                                                   "NG", "HH")},
}


# pocketsphinx's "+SPN+" is speech it could not place (a mumble): the jaw half open, the lips neutral.
PHONE_TARGETS["+SPN+"] = _target(LipClass.NEUTRAL, 0.6, 0.0)


def lip_target(phone: str) -> LipTarget:
    return PHONE_TARGETS.get(phone.upper(), _REST)


@dataclasses.dataclass(frozen=True)
class Phone:
    label: str  # CMU phone, upper case
    start: float  # seconds
    end: float  # seconds, > start


def recognise_phones(audio: np.ndarray) -> list[Phone]:
    """CMU phones of 16 kHz mono float `audio`, with their times (pocketsphinx allphone search).

    Long speech is decoded in pieces of at most `_PIECE_S`, cut at the quietest moment of each piece's last
    `_CUT_SEARCH_S`: the decoder's memory grows with an utterance's length, and a cut in a pause loses nothing.
    The decoder runs in a child process (heygem.pipeline.phone_decoder), so this thread waits without holding
    the GIL and the job's other threads go on meanwhile. Where `audio` is the speech `recognise_file_ahead` read
    (`read_speech` gave it), this waits for the phones already being recognised instead of decoding again.
    """
    ahead = _take_ahead(audio)
    if ahead is None:
        return _decode(*_decoder_input(audio))
    logger.info("the speech's phones come from the recognition started before the engine was loaded")
    return ahead.phones.result()


_FileRead = tuple[Path, float, int, tuple[int, ...]]  # path, max_duration_s, max_side, the file's identity


def _file_read(path: Path, max_duration_s: float, max_side: int) -> _FileRead:
    """How a file is read, and which file it is now: device, inode, size and modification time (in nanoseconds,
    so a file rewritten since reads as another); a file that cannot be stat'ed is nobody's."""
    try:
        status = path.stat()
    except OSError:
        return path, max_duration_s, max_side, ()
    return path, max_duration_s, max_side, (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclasses.dataclass(frozen=True)
class _Ahead:
    """A recognition started ahead of the job (recognise_file_ahead): which file it read, how and when it was as
    read (`_FileRead`), its samples (read-only), then their phones."""

    read: _FileRead
    samples: Future[np.ndarray]
    phones: Future[list[Phone]]


_AHEAD: list[_Ahead] = []
_AHEAD_LOCK = threading.Lock()
_AHEAD_KEPT = 4


def recognise_file_ahead(path: Path, max_duration_s: float, max_side: int) -> None:
    """Starts reading the speech file `path` (media.read_audio with these limits) and recognising its phones in a
    thread: the job's `read_speech` of the same, unchanged file then takes those samples, and recognise_phones of
    them those phones.

    A render (the CLI, a task's worker: engines.registry.recognise_phones_ahead) starts this before it imports the
    engine and the pipeline, which is half a second on one core: the decoder works on the other one meanwhile. A
    file that cannot be read is left to the job, which reads it itself and says what is wrong.
    """
    ahead = _Ahead(_file_read(path, max_duration_s, max_side), Future(), Future())
    with _AHEAD_LOCK:
        # Each render takes its own; one that failed before its speech was analysed leaves its recognition here.
        del _AHEAD[:-_AHEAD_KEPT + 1]
        _AHEAD.append(ahead)

    def recognise() -> None:
        # The child loads its models while the speech is read; leaving the block ends it (its input closes).
        with _start_decoder() as decoder:
            try:
                audio = read_audio(path, max_duration_s, max_side)
                audio.flags.writeable = False  # the job's samples: what was recognised is what it renders
                ahead.samples.set_result(audio)
            except BaseException as exc:  # the job reads the file again and reports it
                ahead.samples.set_exception(exc)
                return
            try:
                ahead.phones.set_result(_decode(*_decoder_input(audio), decoder))
            except BaseException as exc:  # re-raised by recognise_phones, as its own decoding would raise it
                ahead.phones.set_exception(exc)

    threading.Thread(target=recognise, name="phones-ahead", daemon=True).start()


def read_speech(path: Path, max_duration_s: float, max_side: int) -> np.ndarray:
    """The job's speech: media.read_audio(path, max_duration_s, max_side), whose samples `recognise_file_ahead`
    already read where it was started on this file, unchanged since, with these limits (then read-only); else
    read now. One read of the file (a probe and an ffmpeg run) per render, and one place that keeps samples."""
    read = _file_read(path, max_duration_s, max_side)
    with _AHEAD_LOCK:
        started = [ahead for ahead in _AHEAD if ahead.read == read and read[3]]
    for ahead in started:
        with contextlib.suppress(Exception):  # a file the ahead could not read: read here, which says why
            return ahead.samples.result()
    return read_audio(path, max_duration_s, max_side)


def _take_ahead(audio: np.ndarray) -> _Ahead | None:
    """The recognition started ahead whose samples are `audio` (no longer kept), if any; recognitions whose file
    could not be read are dropped too."""
    with _AHEAD_LOCK:
        started = list(_AHEAD)
    for ahead in started:
        samples = None
        with contextlib.suppress(Exception):
            samples = ahead.samples.result()
        if samples is None or samples is audio:
            with _AHEAD_LOCK, contextlib.suppress(ValueError):
                _AHEAD.remove(ahead)
            if samples is audio:
                return ahead
    return None


def _decoder_input(audio: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The decoder's input: `audio` as 16-bit samples, and the sample ranges decoded one by one."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    return pcm, [(start, stop) for start, stop in pieces(audio) if stop - start >= SAMPLE_RATE // 10]


def _start_decoder() -> subprocess.Popen[bytes]:
    """The decoder's child process; it loads its models at once, then waits for the speech."""
    # -P: the decoder's own folder (heygem/pipeline) must not shadow the modules pocketsphinx imports.
    return subprocess.Popen([sys.executable, "-P", str(Path(phone_decoder.__file__))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _decode(pcm: np.ndarray, ranges: list[tuple[int, int]],
            decoder: subprocess.Popen[bytes] | None = None) -> list[Phone]:
    """The phones of each range of `pcm`, decoded in the child process (`decoder`, or one started now)."""
    decoder = decoder or _start_decoder()
    header = json.dumps({"ranges": ranges}).encode() + b"\n"
    output, errors = decoder.communicate(header + pcm.tobytes())
    if decoder.returncode != 0:
        raise RuntimeError(f"phone recognition failed: {errors.decode(errors='replace').strip()[-500:]}")
    return [Phone(label, start / SAMPLE_RATE + begin, start / SAMPLE_RATE + end)
            for (start, _), line in zip(ranges, output.splitlines(), strict=True)
            for label, begin, end in json.loads(line)]


def pieces(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges covering `audio`, each at most _PIECE_S long, cut where the 10 ms energy is lowest."""
    piece, search, hop = int(_PIECE_S * SAMPLE_RATE), int(_CUT_SEARCH_S * SAMPLE_RATE), SAMPLE_RATE // 100
    ranges, start = [], 0
    while audio.size - start > piece:
        window = audio[start + piece - search:start + piece]
        energy = (window[:window.size // hop * hop].reshape(-1, hop) ** 2).sum(axis=1)
        cut = start + piece - search + int(energy.argmin()) * hop + hop // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, audio.size))
    return ranges


def confirmed_closures(phones: Sequence[Phone], level_db: np.ndarray, dip_db: float) -> list[Phone]:
    """The M/B/P phones during which the speech level (dB per 10 ms, `level_db`) dips at least `dip_db` under
    the loudest sound within 150 ms either side: a real closure silences (b, p) or muffles (m) the voice.
    """
    kept = []
    for phone in phones:
        if lip_target(phone.label).lip_class is not LipClass.CLOSED:
            continue
        start, stop = int(phone.start / _PHONE_FRAME_S), max(int(np.ceil(phone.end / _PHONE_FRAME_S)), 1)
        inside = level_db[min(start, level_db.size - 1):max(stop, start + 1)]
        around = level_db[max(start - 15, 0):stop + 15]
        if inside.size and around.size and around.max() - inside.min() >= dip_db:
            kept.append(phone)
    return kept


@dataclasses.dataclass(frozen=True)
class FramePhones:
    """Per video frame: the dominant lip class and the phones' targets, after the timing rules."""

    lip_class: np.ndarray  # LipClass values, int8
    openness: np.ndarray  # 0..1, overlap-weighted over the frame
    shape: np.ndarray  # -1..1, overlap-weighted over the frame
    closed: np.ndarray  # bool: the lips touch
    labiodental: np.ndarray  # bool: lower lip to upper teeth


def frame_phones(phones: Sequence[Phone], fps: float, frame_count: int, anticipation_s: float) -> FramePhones:
    """Applies the timing rules (module docstring) to `phones`; frame i shows the instant i / fps and covers
    the half frame either side of it.
    """
    frame_s = 1.0 / fps
    count = (frame_count, len(LipClass))
    class_time = np.zeros(count)  # seconds of each class inside each frame
    openness, shape, covered = np.zeros(frame_count), np.zeros(frame_count), np.zeros(frame_count)
    closed, labiodental = np.zeros(frame_count, bool), np.zeros(frame_count, bool)
    for phone in phones:
        target = lip_target(phone.label)
        start, end = phone.start - anticipation_s, phone.end - anticipation_s
        first, last = max(int(np.floor(start * fps + 0.5)), 0), min(int(np.ceil(end * fps + 0.5)), frame_count)
        if first >= last:
            continue
        frames = np.arange(first, last)
        overlap = np.clip(np.minimum(end, (frames + 0.5) * frame_s) - np.maximum(start, (frames - 0.5) * frame_s),
                          0.0, None)
        class_time[frames, target.lip_class] += overlap
        openness[frames] += overlap * target.openness
        shape[frames] += overlap * target.shape
        covered[frames] += overlap
        if target.lip_class in (LipClass.CLOSED, LipClass.LABIODENTAL):
            marks = closed if target.lip_class is LipClass.CLOSED else labiodental
            marks[touched_frames(frames, overlap, 0.5 * min(frame_s, end - start))] = True
    # Time not covered by any phone is rest (openness 0, shape 0).
    class_time[:, LipClass.REST] += np.clip(frame_s - covered, 0.0, None)
    lip_class = class_time.argmax(axis=1).astype(np.int8)
    labiodental &= ~closed
    lip_class[labiodental] = LipClass.LABIODENTAL
    lip_class[closed] = LipClass.CLOSED
    shape = shape / frame_s
    hold_single_frames(lip_class, shape)
    return FramePhones(lip_class=lip_class, openness=np.clip(openness / frame_s, 0.0, 1.0),
                       shape=np.clip(shape, -1.0, 1.0), closed=closed, labiodental=labiodental)


def touched_frames(frames: np.ndarray, overlap: np.ndarray, enough: float) -> np.ndarray:
    """Frames a closure marks: each it covers for at least `enough` seconds, else the one it covers most."""
    chosen = frames[overlap >= enough]
    return chosen if chosen.size else frames[[int(overlap.argmax())]]


def hold_single_frames(lip_class: np.ndarray, shape: np.ndarray) -> None:
    """A rounded/spread/open/neutral shape held for one frame between two frames of one other shape takes
    their class and shape (in place): a one-frame shape reads as flicker. Closures and rest are kept.
    """
    movable = (LipClass.ROUNDED, LipClass.SPREAD, LipClass.OPEN, LipClass.NEUTRAL)
    for index in range(1, lip_class.size - 1):
        before, now, after = lip_class[index - 1], lip_class[index], lip_class[index + 1]
        if now in movable and before == after and before != now and before in movable:
            lip_class[index] = before
            shape[index] = (shape[index - 1] + shape[index + 1]) / 2
