"""How real the built-in engine's mouth looks, measured against the person's own footage.

    python -m bench.mouth_quality                 # every case, 3 rounds of speed (about 8 minutes on 2 cores)
    python -m bench.mouth_quality --quick         # one speech over one clip, no speed
    python -m bench.mouth_quality --root /tmp/old # render with another checkout (e.g. an older commit)
    python -m bench.mouth_quality --strips DIR    # also write strips of consecutive mouth crops (PNG)
    python -m bench.mouth_quality --strips docs/quality --before DIR   # ... under the strips of an earlier run

Speech with known phone times, over two talking clips, a photo and an HEVC phone video from ../shared/media:
- `festival`: Festival's US voice (festvox-us-slt-hts) reading a text full of m/b/p, "oo" and "ee"; Festival
  writes the synthesiser's own phone times, so they are exact.
- `speech_en_1`: a real speaker, aligned to its known text by pocketsphinx's forced alignment, which gives word
  times. Phone times inside a word are not exact: each word's span is split among its CMU dictionary phones,
  vowels counting twice a consonant. Closures at a word's edge are accurate to a frame or two; inside a word
  ("people", "family") to about a third of the word.

Each case is rendered with `python -m heygem generate` (the whole CLI, default settings), then MediaPipe's
face mesh reads our output back (raw landmarks, as `heygem eval` reads them) and these figures are computed:

- closure: share of m/b/p whose smallest inner-lip gap (13-14 over the face width) within the phone, or up to
  two frames before it, is at most 0.25 x the open-vowel gap (median of the largest gap during each open vowel).
  Goal: at least 90 %. Beside it, how many vowels read as closed at their middle frame (a false closure; the
  vowels of speech_en_1 have word-split times, so a short vowel next to an m/b/p may count).
- oo/ee: mean lip width (61-291 over the face width) at the middle frame of rounded vowels (UW OW UH W) over
  that of spread vowels (IY IH EY). Goal: at most 0.92.
- interior: over open frames (gap at least 0.04 of the face width), the share of pixels inside the inner lips
  that are near-black (luma under 0.2 x the cheeks') and that are as bright as teeth (luma above 0.75 x the
  cheeks': teeth are lit less than the cheeks; these two thresholds reproduce the shares measured by eye on the
  clips, 11 % dark and about half teeth on video_talking_medium_skin.mp4),
  against the same person's open frames in the source footage. Goals: dark at most own + 0.10, teeth at least
  0.7 x own.
- closed lips: over closed frames (gap under 0.02), the share of teeth-like pixels (as bright as teeth above and
  greyer than the lips: under 0.6 x their saturation) in a band around the lip line, over the same share in the
  source's own closed frames (its least open tenth if it has none).
  Goal: at most 2.
- `heygem eval`'s sync correlation and its lag, the share of frames with a face, and PSNR outside the lower face
  against the source (videos only). Goals: correlation at least 0.5 at a lag of -3..+1, a face in every frame,
  PSNR at least 32 dB.
- speed (not in --quick): 8 s of 720p (bench.engine_speed's clip), a bare ffmpeg transcode and two renders of
  the same video with different speech, in the same run. Goals: first render at most 2.2 x, second at most
  1.6 x the transcode.

Results: a table on stdout and bench/results/mouth_quality.json. The metric functions take landmarks and frames
and are importable (tests use them on single frames).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.engine_speed import baseline_command, make_clip, timed
from heygem.config import Config, load_config
from heygem.pipeline import tracking as lm
from heygem.pipeline.evaluate import psnr_outside_lower_face, sync_figures, track_video
from heygem.pipeline.media import SAMPLE_RATE, VideoReader, ffmpeg_exe, probe_video, read_audio
from heygem.pipeline.phones import LipClass, Phone, lip_target

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED_MEDIA = ROOT.parent / "shared" / "media"

FESTIVAL_TEXT = ("Maybe Bob made a map for Pam. Two blue moons rose soon over the pool. "
                 "We see these green trees, Lee. Father saw a large car by the barn.")
SPEECH_EN_1_TEXT = ("i'm honored to represent a district made up largely of working people and i'm proud to tell "
                    "you that i come from a family of workers")
# Two talking clips, a photo, and a small face in an HEVC phone video (1080x1920, 229 px face).
FACES = ("video_talking_medium_skin.mp4", "video_portrait_static.mp4", "portrait_photo_1.png",
         "video_vertical_fullbody_hevc.mp4")
# Inner lip outline, in order around the opening.
INNER_OUTLINE = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
CHEEKS = (205, 425)
OPEN_GAP = 0.04  # inner-lip gap over face width above which a frame counts as open
CLOSED_GAP = 0.02  # ... and under which it counts as closed
OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AY", "AW")
DARK_BELOW, TEETH_ABOVE = 0.2, 0.75  # near-black and teeth-bright, as fractions of the cheeks' luma
# Closed lips: teeth are far greyer than lips. Bright pixels of the clips' open mouths have a median saturation
# of 46-83, their lips 116-137 (HSV); 0.6 x the lips' separates them.
TEETH_GREYER = 0.6
STRIP_FRAMES = 12


# ----- metrics on landmarks and frames ----------------------------------------------------------------------

def inner_gap(points: np.ndarray) -> float:
    """Inner-lip gap (13 to 14) over the face width."""
    return float(np.linalg.norm(points[lm.LOWER_LIP_INNER] - points[lm.UPPER_LIP_INNER])) / max(lm.face_size(points),
                                                                                                  1.0)


def lip_width(points: np.ndarray) -> float:
    """Mouth corner to corner (61 to 291) over the face width."""
    return float(np.linalg.norm(points[lm.MOUTH_RIGHT] - points[lm.MOUTH_LEFT])) / max(lm.face_size(points), 1.0)


def cheek_luma(luma: np.ndarray, points: np.ndarray) -> float:
    """Median luma of two small patches on the cheeks: how bright this face's skin is lit."""
    radius = max(2, round(0.03 * lm.face_size(points)))
    patches = []
    for index in CHEEKS:
        x, y = np.round(points[index]).astype(int)
        patch = luma[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]
        if patch.size:
            patches.append(patch.ravel())
    return float(np.median(np.concatenate(patches))) if patches else float(np.median(luma))


def inner_mask(shape: tuple[int, ...], points: np.ndarray, grow_px: int) -> np.ndarray:
    """The area inside the inner lips, grown (positive) or shrunk (negative) by `grow_px`."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(INNER_OUTLINE)]).astype(np.int32)], (1,))
    kernel = np.ones((2 * abs(grow_px) + 1,) * 2, np.uint8)
    if grow_px > 0:
        mask = cv2.dilate(mask, kernel)
    elif grow_px < 0:
        mask = cv2.erode(mask, kernel)
    return mask.astype(bool)


def interior_shares(frame: np.ndarray, points: np.ndarray) -> tuple[float, float] | None:
    """(near-black share, teeth share) of the pixels inside the inner lips of an open mouth; None if too small."""
    luma = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    inside = luma[inner_mask(frame.shape, points, -1)]
    if inside.size < 20:
        return None
    skin = cheek_luma(luma, points)
    return float(np.mean(inside < DARK_BELOW * skin)), float(np.mean(inside > TEETH_ABOVE * skin))


def closed_bright_share(frame: np.ndarray, points: np.ndarray) -> float:
    """Share of teeth-like pixels in a band around the lip line of a closed mouth (teeth left between lips):
    as bright as teeth and, unlike lips, nearly grey (saturation under TEETH_GREYER x the lips' own, their
    band's 75th percentile). Brightness alone would count pale pink lips on a pale face as teeth.
    """
    luma = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    saturation = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)[..., 1].astype(np.float32)
    band = inner_mask(frame.shape, points, max(2, round(0.015 * lm.face_size(points))))
    lips = float(np.percentile(saturation[band], 75))
    teeth = (luma[band] > TEETH_ABOVE * cheek_luma(luma, points)) & (saturation[band] < TEETH_GREYER * lips)
    return float(np.mean(teeth))


def frames_of(phone: Phone, fps: float, lead_frames: int = 0) -> np.ndarray:
    """Video frames whose instant (index / fps) falls in the phone, or up to `lead_frames` before it; at least
    the frame nearest its middle.
    """
    first, last = int(np.ceil(phone.start * fps)) - lead_frames, int(np.floor(phone.end * fps))
    if last < first:
        middle = round((phone.start + phone.end) / 2 * fps)
        first = min(first, middle)
        last = middle
    return np.arange(max(first, 0), last + 1)


def closure_figures(gaps: np.ndarray, phones: Sequence[Phone], fps: float) -> dict[str, Any]:
    """m/b/p whose lips meet (gap at most 0.25 x the open-vowel gap), with the open-vowel gap itself."""

    def gap_values(phone: Phone, lead: int) -> np.ndarray:
        frames = frames_of(phone, fps, lead)
        values = gaps[frames[frames < gaps.size]]
        return values[~np.isnan(values)]

    open_peaks = [values.max() for phone in phones if phone.label in OPEN_VOWELS
                  for values in [gap_values(phone, 0)] if values.size]
    open_gap = float(np.median(open_peaks)) if open_peaks else float("nan")
    closures = [values.min() for phone in phones if lip_target(phone.label).lip_class is LipClass.CLOSED
                for values in [gap_values(phone, 2)] if values.size]
    met = [value <= 0.25 * open_gap for value in closures]
    # False closures: vowels whose middle frame reads as closed as a met m/b/p (a w is half consonant).
    vowels = [round((phone.start + phone.end) / 2 * fps) for phone in phones if phone.label != "W"
              and lip_target(phone.label).lip_class in (LipClass.OPEN, LipClass.ROUNDED, LipClass.SPREAD)]
    middles = gaps[[index for index in vowels if index < gaps.size]]
    return {"open_vowel_gap": round(open_gap, 4), "closures": len(closures),
            "closures_met": round(float(np.mean(met)), 3) if met else None,
            "vowels": len(middles), "vowels_closed": int(np.sum(middles <= 0.25 * open_gap))}


def width_ratio(widths: np.ndarray, phones: Sequence[Phone], fps: float) -> float | None:
    """Mean lip width at the middle of rounded vowels over that of spread vowels."""
    def mean_width(kind: LipClass) -> float:
        middles = [round((phone.start + phone.end) / 2 * fps) for phone in phones
                   if lip_target(phone.label).lip_class is kind]
        values = widths[[index for index in middles if index < widths.size]]
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")

    ratio = mean_width(LipClass.ROUNDED) / mean_width(LipClass.SPREAD)
    return None if np.isnan(ratio) else round(ratio, 3)


@dataclasses.dataclass
class Footage:
    """A video's frames' mouth measures: gap and width per frame, interior and closed-lip statistics."""

    gaps: np.ndarray
    widths: np.ndarray
    dark: float | None
    teeth: float | None
    closed_bright: float | None
    face_share: float


def measure_footage(path: Path, landmarks: list[np.ndarray | None]) -> Footage:
    info = probe_video(path)
    gaps = np.array([inner_gap(points) if points is not None else np.nan for points in landmarks])
    widths = np.array([lip_width(points) if points is not None else np.nan for points in landmarks])
    closed_limit = CLOSED_GAP if np.sum(gaps < CLOSED_GAP) >= 3 else float(np.nanpercentile(gaps, 10))
    interiors, brights = [], []
    for index, frame in VideoReader(info, (info.width, info.height)).frames(0, len(landmarks)):
        points = landmarks[index]
        if points is None:
            continue
        if gaps[index] >= OPEN_GAP and (shares := interior_shares(frame, points)) is not None:
            interiors.append(shares)
        if gaps[index] <= closed_limit:
            brights.append(closed_bright_share(frame, points))
    dark, teeth = (np.mean(interiors, axis=0).tolist() if interiors else (None, None))
    return Footage(gaps=gaps, widths=widths, dark=dark, teeth=teeth,
                   closed_bright=float(np.mean(brights)) if brights else None,
                   face_share=float(np.mean([points is not None for points in landmarks])))


# ----- speech with phone times ---------------------------------------------------------------------------

FESTIVAL_NAMES = {"pau": "SIL", "ax": "AH", "h#": "SIL"}


def festival_speech(folder: Path) -> tuple[Path, list[Phone]]:
    """Festival's US voice reading FESTIVAL_TEXT, with the synthesiser's own phone times."""
    wav, segs, script = folder / "festival.wav", folder / "festival.segs", folder / "festival.scm"
    script.write_text(f'(voice_cmu_us_slt_arctic_hts)\n(set! utt (utt.synth (Utterance Text "{FESTIVAL_TEXT}")))\n'
                      f'(utt.save.wave utt "{wav}" \'riff)\n(utt.save.segs utt "{segs}")\n')
    subprocess.run(["festival", "-b", str(script)], check=True, capture_output=True, timeout=120)
    phones, start = [], 0.0
    for line in segs.read_text().splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        end = float(fields[0])
        phones.append(Phone(FESTIVAL_NAMES.get(fields[2], fields[2].upper()), start, end))
        start = end
    return wav, phones


def aligned_speech(path: Path, text: str) -> list[Phone]:
    """Phones of a real recording of `text`: word times by forced alignment, each word's span split among its
    dictionary phones (a vowel counting twice a consonant).
    """
    from pocketsphinx import Decoder, get_model_path

    model = get_model_path()
    dictionary_path = f"{model}/en-us/cmudict-en-us.dict"
    decoder = Decoder(hmm=f"{model}/en-us/en-us", dict=dictionary_path, lm=None, loglevel="FATAL")
    decoder.set_align_text(text)
    audio = read_audio(path, 600)
    decoder.start_utt()
    decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    pronunciations = {}
    for line in Path(dictionary_path).read_text(encoding="utf-8", errors="replace").splitlines():
        word, *phones = line.split()
        pronunciations[word] = phones
    result = []
    for segment in decoder.seg():
        start, end = segment.start_frame / 100, (segment.end_frame + 1) / 100
        phones = pronunciations.get(segment.word, [])
        if not phones:
            result.append(Phone("SIL", start, end))
            continue
        weights = np.array([2.0 if phone[0] in "AEIOU" else 1.0 for phone in phones])
        edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        result += [Phone(phone, float(a), float(b)) for phone, a, b in zip(phones, edges, edges[1:], strict=False)]
    return result


# ----- rendering and one case ------------------------------------------------------------------------------

def render(root: Path, video: Path, audio: Path, out: Path, data_dir: Path) -> float:
    """`python -m heygem generate` in the checkout at `root`, its data (the analysis cache) in `data_dir`;
    returns its wall time."""
    started = time.perf_counter()
    environment = {**os.environ, "HEYGEM_PATHS__DATA_DIR": str(data_dir)}
    subprocess.run([sys.executable, "-m", "heygem", "generate", "--video", str(video), "--audio", str(audio),
                    "--out", str(out)], cwd=root, check=True, capture_output=True, timeout=900, env=environment)
    return time.perf_counter() - started


def strip(path: Path, landmarks: list[np.ndarray | None], first: int, out: Path) -> None:
    """Consecutive mouth crops (STRIP_FRAMES of them from `first`) side by side, 96x64 each, as a PNG."""
    info = probe_video(path)
    crops = []
    for index, frame in VideoReader(info, (info.width, info.height)).frames(first, first + STRIP_FRAMES):
        points = landmarks[index] if index < len(landmarks) else None
        if points is None:
            crops.append(np.zeros((64, 96, 3), np.uint8))
            continue
        centre, half = points[[lm.MOUTH_LEFT, lm.MOUTH_RIGHT]].mean(axis=0), 0.3 * lm.face_size(points)
        reach = np.array([half, half * 2 / 3])
        x0, y0 = np.round(centre - reach).astype(int)
        x1, y1 = np.round(centre + reach).astype(int)
        crop = frame[max(y0, 0):y1, max(x0, 0):x1]
        crops.append(cv2.resize(crop, (96, 64), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(out), np.concatenate(crops, axis=1))


def strip_name(face: Path, speech: Path) -> str:
    return f"mouth_strip_{face.stem}__{speech.stem}.png"


def stack_under(before: Path, after: Path) -> None:
    """Writes `after` with the same-sized strip `before` above it, a 2 px white line between (in place)."""
    old, new = cv2.imread(str(before)), cv2.imread(str(after))
    if old is None or new is None or old.shape != new.shape:
        return
    cv2.imwrite(str(after), np.concatenate([old, np.full((2, new.shape[1], 3), 255, np.uint8), new]))


def as_video(face: Path, folder: Path) -> Path:
    """The face as a video: a photo becomes 10 s of it at 25 fps, as a user turns a photo into a template
    (`heygem generate` reads videos only)."""
    if face.suffix.lower() == ".mp4":
        return face
    video = folder / f"{face.stem}.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-loop", "1", "-i", str(face), "-t", "10",
                    "-r", "25", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p", "-crf", "12",
                    str(video)], check=True)
    return video


def measure_case(root: Path, face: Path, speech: Path, phones: list[Phone], folder: Path, config: Config,
                 source: Footage, strips: Path | None, strip_from: int) -> dict[str, Any]:
    out = folder / f"{face.stem}__{speech.stem}.mp4"
    wall = render(root, as_video(face, folder), speech, out, folder / "data")
    info = probe_video(out)
    landmarks = track_video(info, config)
    ours = measure_footage(out, landmarks)
    audio = read_audio(speech, config.media.max_audio_duration_s)
    sync = sync_figures(landmarks, audio, info.fps)
    row: dict[str, Any] = {"face": face.name, "speech": speech.stem, "render_s": round(wall, 1),
                           **closure_figures(ours.gaps, phones, info.fps),
                           "oo_ee_width": width_ratio(ours.widths, phones, info.fps),
                           "dark": _round(ours.dark), "dark_own": _round(source.dark),
                           "teeth": _round(ours.teeth), "teeth_own": _round(source.teeth),
                           "closed_bright": _round(ours.closed_bright),
                           "closed_bright_own": _round(source.closed_bright),
                           "sync_correlation": sync["sync_correlation"], "sync_lag": sync["best_offset_frames"],
                           "face_share": ours.face_share, "psnr_outside_lower_face_db": None}
    if face.suffix.lower() == ".mp4":
        row["psnr_outside_lower_face_db"] = psnr_outside_lower_face(info, probe_video(face), landmarks)
    if strips is not None:
        strip(out, landmarks, strip_from, strips / strip_name(face, speech))
    return row


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def verdicts(row: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal of the module docstring for one row: True met, False missed, None not measurable."""

    def check(condition: bool | None, *needed: Any) -> bool | None:
        return None if any(value is None for value in needed) else bool(condition)

    dark, dark_own, teeth, teeth_own = row["dark"], row["dark_own"], row["teeth"], row["teeth_own"]
    bright, bright_own = row["closed_bright"], row["closed_bright_own"]
    return {
        "closure": check(row["closures_met"] is not None and row["closures_met"] >= 0.9, row["closures_met"]),
        "oo_ee": check(row["oo_ee_width"] is not None and row["oo_ee_width"] <= 0.92, row["oo_ee_width"]),
        "dark": check(None if dark is None or dark_own is None else dark <= dark_own + 0.10, dark, dark_own),
        "teeth": check(None if teeth is None or teeth_own is None else teeth >= 0.7 * teeth_own, teeth, teeth_own),
        "closed_bright": check(None if bright is None or bright_own is None else
                               bright <= 2 * max(bright_own, 0.005), bright, bright_own),
        "sync": check(row["sync_correlation"] is not None and row["sync_correlation"] >= 0.5
                      and -3 <= row["sync_lag"] <= 1, row["sync_correlation"]),
        "face": row["face_share"] >= 1.0,
        "psnr": check(row["psnr_outside_lower_face_db"] is not None and row["psnr_outside_lower_face_db"] >= 32,
                      row["psnr_outside_lower_face_db"]),
    }


def measure_speed(root: Path, folder: Path, rounds: int) -> dict[str, Any]:
    """Rounds of a bare transcode and two renders of the same 8 s 720p video with different speech, back to
    back; medians of the ratios (the machine is shared: one round's ratio is noise).
    """
    video, audio, description = make_clip(folder, 8.0)
    other = folder / "speech_other_8s.wav"
    second_speech = SHARED_MEDIA / "speech_en_long.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(second_speech), "-t", "8", str(other)],
                   check=True)
    times: list[tuple[float, float, float]] = []
    for _ in range(rounds):
        transcode = timed(baseline_command(video, audio, folder / "transcode.mp4"))[0]
        # A new data folder each round: the first render finds no analysis of the video, the second finds it.
        data_dir = folder / f"data{len(times)}"
        times.append((transcode, render(root, video, audio, folder / f"first{len(times)}.mp4", data_dir),
                      render(root, video, other, folder / f"second{len(times)}.mp4", data_dir)))
    transcodes, firsts, seconds = (np.array(column) for column in zip(*times, strict=True))
    return {"clip": description, "rounds": rounds, "transcode_s": round(float(np.median(transcodes)), 2),
            "first_render_s": round(float(np.median(firsts)), 2),
            "second_render_s": round(float(np.median(seconds)), 2),
            "first_over_transcode": round(float(np.median(firsts / transcodes)), 2),
            "second_over_transcode": round(float(np.median(seconds / transcodes)), 2)}


def print_table(rows: list[dict[str, Any]], speed: dict[str, Any] | None) -> None:
    def cell(row: dict[str, Any], text: str, goal: str) -> str:
        met = row["verdicts"][goal]
        return f"{text}{'' if met is None else (' ✓' if met else ' ✗')}"

    print("| face | speech | m/b/p closed (≥ 90 %) | oo/ee width (≤ 0.92) | dark / own (≤ own + 0.10) "
          "| teeth / own (≥ 0.7 × own) | closed-lip bright / own (≤ 2×) | sync corr, lag (≥ 0.5, −3..+1) "
          "| face | PSNR outside lower face (≥ 32 dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        closures = "n/a" if row["closures_met"] is None else (
            f"{100 * row['closures_met']:.0f} % of {row['closures']} "
            f"(vowels: {row['vowels_closed']} of {row['vowels']})")
        texts = {"closure": closures, "oo_ee": str(row["oo_ee_width"]), "dark": f"{row['dark']} / {row['dark_own']}",
                 "teeth": f"{row['teeth']} / {row['teeth_own']}",
                 "closed_bright": f"{row['closed_bright']} / {row['closed_bright_own']}",
                 "sync": f"{row['sync_correlation']}, {row['sync_lag']}", "face": f"{row['face_share']:.2f}",
                 "psnr": str(row["psnr_outside_lower_face_db"])}
        cells = " | ".join(cell(row, text, goal) for goal, text in texts.items())
        print(f"| {row['face']} | {row['speech']} | {cells} |")
    if speed:
        print(f"\nspeed (medians of {speed['rounds']} rounds), {speed['clip']}: transcode {speed['transcode_s']} s, "
              f"first render {speed['first_render_s']} s "
              f"({speed['first_over_transcode']}×, goal ≤ 2.2×), second render of the same video "
              f"{speed['second_render_s']} s ({speed['second_over_transcode']}×, goal ≤ 1.6×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one speech over one talking clip, no speed")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose `heygem generate` renders")
    parser.add_argument("--strips", type=Path, help="write strips of consecutive mouth crops (PNG) here")
    parser.add_argument("--before", type=Path, help="with --strips: a folder of strips of an earlier run, stacked "
                                                    "above this run's (before on top, after below)")
    parser.add_argument("--out", type=Path, default=RESULTS / "mouth_quality.json")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the speed measure (0: none)")
    parser.add_argument("--faces", nargs="+", choices=FACES, help="only these faces (default: all; --quick: the first)")
    args = parser.parse_args()
    faces = args.faces or (FACES[:1] if args.quick else FACES)
    missing = [name for name in (*faces, "speech_en_1.wav") if not (SHARED_MEDIA / name).is_file()]
    if missing:
        sys.exit(f"the real clips are missing from {SHARED_MEDIA}: {', '.join(missing)}")
    config = load_config(environ={})
    with tempfile.TemporaryDirectory(prefix="mouth-quality-") as work:
        folder = Path(work)
        real = SHARED_MEDIA / "speech_en_1.wav"
        # (speech, its phones, first frame of the strip: "made up" / "Maybe Bob made a map")
        speeches = [(real, aligned_speech(real, SPEECH_EN_1_TEXT), 82)]
        if not args.quick:
            wav, phones = festival_speech(folder)
            speeches.append((wav, phones, 2))
        if args.strips is not None:
            args.strips.mkdir(parents=True, exist_ok=True)
        rows = []
        for face_name in faces:
            face = SHARED_MEDIA / face_name
            video = as_video(face, folder)
            source = measure_footage(video, track_video(probe_video(video), config))
            for speech, phones, strip_from in speeches:
                row = measure_case(args.root, face, speech, phones, folder, config, source, args.strips, strip_from)
                row["verdicts"] = verdicts(row)
                rows.append(row)
                print(f"  {face_name} + {speech.name}: rendered in {row['render_s']} s", file=sys.stderr)
        speed = None if args.quick or args.rounds < 1 else measure_speed(args.root, folder, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"root": str(args.root), "machine": f"{os.cpu_count()} CPU cores",
                                    "load_average": os.getloadavg(), "sample_rate": SAMPLE_RATE, "rows": rows,
                                    "speed": speed}, indent=2))
    if args.strips is not None and args.before is not None:
        for row in rows:
            name = strip_name(Path(row["face"]), Path(row["speech"]))
            stack_under(args.before / name, args.strips / name)
    print_table(rows, speed)


if __name__ == "__main__":
    main()
