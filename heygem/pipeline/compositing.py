"""Putting a changed face region back into its frame without seams: feathered masks, blending, colour match."""

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
    """base*(1-alpha) + overlay*alpha for uint8 BGR images and a float 0..1 alpha of the same height and width."""
    weight = alpha[..., None] if alpha.ndim == 2 else alpha
    mixed = base.astype(np.float32) + (overlay.astype(np.float32) - base.astype(np.float32)) * weight
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def match_colour(patch: np.ndarray, reference: np.ndarray, patch_mask: np.ndarray | None = None,
                 reference_mask: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """Shifts the patch's mean and spread per Lab channel towards the reference's (Reinhard transfer).

    Used where pixels from elsewhere (a synthesised mouth, a generated face) must take on the lighting and
    white balance of the frame they are pasted into. Masks select which pixels the statistics come from.
    """
    patch_lab = cv2.cvtColor(patch, cv2.COLOR_BGR2LAB).astype(np.float32)
    reference_lab = cv2.cvtColor(reference, cv2.COLOR_BGR2LAB).astype(np.float32)
    source = patch_lab[patch_mask > 0] if patch_mask is not None else patch_lab.reshape(-1, 3)
    target = reference_lab[reference_mask > 0] if reference_mask is not None else reference_lab.reshape(-1, 3)
    if len(source) < 2 or len(target) < 2:
        return patch
    source_mean, source_std = source.mean(axis=0), source.std(axis=0) + 1e-3
    target_mean, target_std = target.mean(axis=0), target.std(axis=0) + 1e-3
    matched = (patch_lab - source_mean) * (target_std / source_std) + target_mean
    mixed = patch_lab + (matched - patch_lab) * strength
    return cv2.cvtColor(np.clip(mixed, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


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
