"""Putting a changed face region back into its frame without seams: feathered masks and blending; labels."""

from __future__ import annotations

import cv2
import numpy as np


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """A float32 0..1 mask whose edges fall off smoothly over about `radius` pixels."""
    soft = mask.astype(np.float32)
    if soft.max() > 1.0:
        soft /= 255.0
    if radius <= 0:
        return soft
    size = 2 * int(np.ceil(2 * radius)) + 1
    return cv2.GaussianBlur(soft, (size, size), radius)


def blend(base: np.ndarray, overlay: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """base*(1-alpha) + overlay*alpha for uint8 BGR images and a float 0..1 alpha of the same height and width,
    rounded to the nearest level: one pass in OpenCV, several times faster than float arithmetic in numpy."""
    weight = np.ascontiguousarray(alpha.reshape(alpha.shape[:2]), np.float32)
    return cv2.blendLinear(overlay, base, weight, 1 - weight)


def draw_badge(frame: np.ndarray, text: str, corner: str, opacity: float) -> None:
    """Draws `text` on a dark rounded label in a corner ("bottom-left" or "bottom-right"), in place."""
    height, width = frame.shape[:2]
    scale = max(0.35, min(width, height) / 1400)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(3, round(text_h * 0.45))
    margin = max(6, round(min(width, height) * 0.02))
    box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    x0 = margin if corner == "bottom-left" else width - margin - box_w
    y0 = height - margin - box_h
    if x0 < 0 or y0 < 0:
        return
    region = frame[y0:y0 + box_h, x0:x0 + box_w]
    label = region.copy()
    cv2.rectangle(label, (0, 0), (box_w - 1, box_h - 1), (32, 32, 32), thickness=-1, lineType=cv2.LINE_AA)
    cv2.putText(label, text, (pad, pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, (245, 245, 245), thickness,
                cv2.LINE_AA)
    region[:] = blend(region, label, np.full(region.shape[:2], opacity, np.float32))
