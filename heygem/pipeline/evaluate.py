"""Quality figures of a lip-synced video, measured from its pixels with an independent face-mesh pass.

docs/quality.md explains each figure. Nothing here trusts what the generator reported about itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heygem.config import Config
from heygem.pipeline import tracking as lm
from heygem.pipeline.media import SAMPLE_RATE, VideoInfo, VideoReader, probe_video, read_audio
from heygem.pipeline.mouthcues import frame_loudness_db

MAX_OFFSET_FRAMES = 8
# Points that do not move with speech: nose tip, eye corners, forehead, cheekbones.
_STABLE_POINTS = [1, 33, 133, 263, 362, 10, 234, 454]
# Speech frames are this far above the clip's quiet level; silence is below the quiet level plus a margin.
_SPEECH_ABOVE_DB = 15.0
_SILENCE_ABOVE_DB = 6.0


def track_video(info: VideoInfo, config: Config) -> list[np.ndarray | None]:
    """Raw (unsmoothed) landmarks of every frame: the measurement must see jitter, not hide it."""
    settings = lm.TrackerSettings(min_confidence=config.media.detect_confidence,
                                  crop_scale=config.media.mesh_crop_scale, mesh_size=config.media.mesh_size,
                                  smooth_min_cutoff=info.fps * 100, smooth_beta=0.0)
    tracker = lm.FaceTracker(info.fps, settings)
    try:
        return [tracker.track(frame) for _, frame in VideoReader(info, (info.width, info.height)).frames()]
    finally:
        tracker.close()


def speech_level(audio: np.ndarray, fps: float, frame_count: int) -> np.ndarray:
    """Speech-band level (dB) per video frame: the loudest 10 ms analysis frame within each video frame."""
    level = frame_loudness_db(audio)
    per_frame = np.full(frame_count, level.min() if level.size else -120.0)
    hops_per_frame = SAMPLE_RATE / 160 / fps
    for index in range(frame_count):
        start, stop = int(index * hops_per_frame), int((index + 1) * hops_per_frame)
        if start < level.size:
            per_frame[index] = level[start:max(stop, start + 1)].max()
    return per_frame


def correlation_by_offset(opening: np.ndarray, envelope: np.ndarray) -> dict[int, float]:
    """Pearson correlation of mouth opening at t with the speech envelope at t + offset (frames)."""
    result = {}
    for offset in range(-MAX_OFFSET_FRAMES, MAX_OFFSET_FRAMES + 1):
        if offset >= 0:
            a, b = opening[:opening.size - offset], envelope[offset:]
        else:
            a, b = opening[-offset:], envelope[:envelope.size + offset]
        valid = ~(np.isnan(a) | np.isnan(b))
        if valid.sum() > 5 and np.std(a[valid]) > 1e-6 and np.std(b[valid]) > 1e-6:
            result[offset] = float(np.corrcoef(a[valid], b[valid])[0, 1])
    return result


def landmark_jitter(landmarks: list[np.ndarray | None]) -> float | None:
    """Median frame-to-frame acceleration of points that do not move with speech, in % of the face width.

    A steady head scores about 0.1-0.3; visible shaking starts around 0.5.
    """
    values = []
    for before, now, after in zip(landmarks, landmarks[1:], landmarks[2:], strict=False):
        if before is None or now is None or after is None:
            continue
        acceleration = np.linalg.norm(after[_STABLE_POINTS] - 2 * now[_STABLE_POINTS] + before[_STABLE_POINTS],
                                      axis=1)
        values.append(float(np.median(acceleration)) / max(lm.face_size(now), 1.0) * 100)
    return round(float(np.median(values)), 3) if values else None


def lower_face_mask(points: np.ndarray, shape: tuple[int, ...], margin: float) -> np.ndarray:
    """True over the lower face (jaw line up to just under the nose), grown by `margin` face widths."""
    import cv2

    jaw = points[list(lm.JAW)]
    top = points[lm.NOSE_TIP, 1] + 0.3 * (points[lm.NOSE_BASE, 1] - points[lm.NOSE_TIP, 1])
    outline = np.concatenate([[[jaw[0, 0], top]], jaw, [[jaw[-1, 0], top]]])
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], (1,))
    grow = max(1, round(margin * lm.face_size(points)))
    return cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)


def psnr_outside_lower_face(video: VideoInfo, reference: VideoInfo,
                            landmarks: list[np.ndarray | None]) -> float | None:
    """PSNR (dB) of the output against the reference over everything but the lower face.

    Only frames that show the reference's own frame at the same instant count (the first pass).
    """
    if (video.width, video.height) != (reference.width, reference.height):
        return None
    count = min(video.frame_count, reference.frame_count)
    squared, pixels = 0.0, 0
    size = (video.width, video.height)
    pairs = zip(VideoReader(video, size).frames(0, count), VideoReader(reference, size).frames(0, count),
                strict=True)
    for (index, output), (_, original) in pairs:
        keep = np.ones(output.shape[:2], bool)
        points = landmarks[index]
        if points is not None:
            keep &= ~lower_face_mask(points, output.shape[:2], margin=0.08)
        difference = output[keep].astype(np.float32) - original[keep].astype(np.float32)
        squared += float((difference**2).sum())
        pixels += difference.size
    if pixels == 0:
        return None
    mse = squared / pixels
    return round(float(10 * np.log10(255.0**2 / mse)), 2) if mse > 0 else 99.0


def opening_stats(opening: np.ndarray) -> dict[str, float | None]:
    valid = opening[~np.isnan(opening)]
    if valid.size == 0:
        return {"mean": None, "std": None, "p10": None, "p50": None, "p90": None}
    p10, p50, p90 = np.percentile(valid, [10, 50, 90])
    return {"mean": round(float(valid.mean()), 4), "std": round(float(valid.std()), 4), "p10": round(float(p10), 4),
            "p50": round(float(p50), 4), "p90": round(float(p90), 4)}


def sync_figures(landmarks: list[np.ndarray | None], audio: np.ndarray, fps: float) -> dict[str, Any]:
    opening = np.array([lm.mouth_opening(points) if points is not None else np.nan for points in landmarks])
    level = speech_level(audio, fps, opening.size)
    quiet = float(np.percentile(level, 10))
    speech, silence = level > quiet + _SPEECH_ABOVE_DB, level < quiet + _SILENCE_ABOVE_DB
    envelope = np.clip(level - quiet, 0, None)
    correlations = correlation_by_offset(opening, envelope)
    best = max(correlations, key=correlations.__getitem__) if correlations else None

    def mean_where(selection: np.ndarray) -> float | None:
        values = opening[selection & ~np.isnan(opening)]
        return round(float(values.mean()), 4) if values.size else None

    return {
        "face_share": round(float(np.mean([points is not None for points in landmarks])), 4),
        "mouth_opening": opening_stats(opening),
        "sync_correlation": round(correlations[best], 3) if best is not None else None,
        "sync_correlation_at_zero": round(correlations.get(0, float("nan")), 3) if 0 in correlations else None,
        "best_offset_frames": best,
        "opening_in_silence": mean_where(silence),
        "opening_in_speech": mean_where(speech),
        "silence_frames": int(silence.sum()),
        "speech_frames": int(speech.sum()),
        "landmark_jitter_pct": landmark_jitter(landmarks),
    }


def evaluate(video_path: Path, audio_path: Path, reference_path: Path | None, config: Config) -> dict[str, Any]:
    """All figures for `video_path` against the speech in `audio_path` (and the input video, if given)."""
    video = probe_video(video_path)
    audio = read_audio(audio_path, config.media.max_audio_duration_s)
    landmarks = track_video(video, config)
    report: dict[str, Any] = {"video": video_path.name, "frames": len(landmarks), "fps": round(video.fps, 3),
                              "duration": round(len(landmarks) / video.fps, 3),
                              "audio_duration": round(audio.size / SAMPLE_RATE, 3),
                              **sync_figures(landmarks, audio, video.fps)}
    if reference_path is not None:
        reference = probe_video(reference_path)
        report["psnr_outside_lower_face_db"] = psnr_outside_lower_face(video, reference, landmarks)
        reference_landmarks = track_video(reference, config)
        report["reference"] = {key: value for key, value in sync_figures(reference_landmarks, audio, reference.fps)
                               .items() if key not in ("silence_frames", "speech_frames")}
    return report
