"""Parts of a decoded frame, converted to BGR and warped exactly as the whole frame would be.

A first render's analysis looks at two parts of each frame: the square around the face that the face mesh sees and
the lower face a mouth bank entry keeps. Converting a whole 720p frame from its decoded I420 planes to BGR for them
cost more than both parts together; `bgr_region` converts only a box, and `warp_matrix_from` lets `cv2.warpAffine`
read from that box with the very sampling positions it uses on the whole frame, so the result is the same to the bit.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from heygem.pipeline.media import to_bgr

# Around the source pixels a warp samples: its bilinear neighbours, and rounding to the planes' 2x2 chroma blocks.
_MARGIN = 2
# Black in the planes' limited range (BT.601, as OpenCV converts them).
_BLACK_Y = 16
_BLACK_CHROMA = 128


def frame_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of a frame as VideoReader.compact_frames yields it: I420 planes or BGR."""
    height, width = image.shape[:2]
    return (width, height * 2 // 3) if image.ndim == 2 else (width, height)


def bgr_region(image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[np.ndarray, int, int]:
    """BGR pixels of the frame (I420 planes or BGR, as VideoReader.compact_frames yields it) in `box` (x0, y0, x1,
    y1), widened by a margin, to even coordinates and clipped to the frame (at least its edge where the box lies past
    it); and where they start in the frame (x, y).

    They are the pixels of the whole frame's conversion (OpenCV converts each 2x2 block from its own chroma sample).
    Where the box reaches past the frame's edge, the part ends at that edge, so a warp's border is the frame's own.
    """
    width, height = frame_size(image)
    # At least the frame's last two rows or columns where the box lies past them: what a warp's border repeats.
    x0 = min(max(math.floor(box[0]) - _MARGIN, 0), width - 2) & ~1
    y0 = min(max(math.floor(box[1]) - _MARGIN, 0), height - 2) & ~1
    x1 = max(min(math.ceil(box[2]) + _MARGIN + 1, width), x0 + 2)
    y1 = max(min(math.ceil(box[3]) + _MARGIN + 1, height), y0 + 2)
    if image.ndim == 3 or width % 2 or height % 2:
        return to_bgr(image)[y0:y1, x0:x1], x0, y0
    x1, y1 = x1 + (x1 & 1), y1 + (y1 & 1)
    planes = image.reshape(-1)
    luma = image[y0:y1, x0:x1]
    chroma_size = (height // 2) * (width // 2)
    box_rows, box_columns = slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2)
    u = planes[width * height:width * height + chroma_size].reshape(height // 2, width // 2)[box_rows, box_columns]
    v = planes[width * height + chroma_size:].reshape(height // 2, width // 2)[box_rows, box_columns]
    part = np.concatenate([luma.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape((y1 - y0) * 3 // 2, x1 - x0)
    return cv2.cvtColor(part, cv2.COLOR_YUV2BGR_I420), x0, y0


def warp_matrix_from(matrix: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """For `cv2.warpAffine(part, ..., flags=... | cv2.WARP_INVERSE_MAP)` on a part of a frame starting at `origin`:
    the inverse of `matrix` (frame to destination) computed as warpAffine inverts it, moved to the part's origin, so
    each destination pixel samples the same frame position as `cv2.warpAffine(frame, matrix, ...)` does."""
    m = [float(value) for value in np.asarray(matrix, np.float64).reshape(-1)]
    determinant = m[0] * m[4] - m[1] * m[3]
    inverse = 1.0 / determinant if determinant != 0 else 0.0
    a11, a12, a21, a22 = m[4] * inverse, m[1] * -inverse, m[3] * -inverse, m[0] * inverse
    b1 = -a11 * m[2] - a12 * m[5]
    b2 = -a21 * m[2] - a22 * m[5]
    return np.array([[a11, a12, b1 - origin[0]], [a21, a22, b2 - origin[1]]], np.float64)


def source_box(matrix: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box of frame positions that `cv2.warpAffine(frame, matrix, size)` samples (x0, y0, x1, y1)."""
    width, height = size
    inverse = warp_matrix_from(matrix, (0, 0))
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], np.float64)
    mapped = corners @ inverse.T
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def warp_rgb(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`cv2.warpAffine(frame, matrix, size)` (bilinear, black beyond the frame) as RGB, from the frame as
    VideoReader.compact_frames yields it.

    From I420 planes the planes themselves are warped (luma at full, chroma at half resolution) and only the small
    result converted, instead of converting the frame, or the large part of it a close face covers, to BGR first: a
    face mesh crop of a 720p frame costs a fifth. The chroma is then interpolated from its own samples rather than
    repeated over 2x2 pixels, so the crop is not the same to the bit as one from the BGR frame (at most a few levels
    at colour edges)."""
    width, height = size
    if image.ndim == 3 or width % 2 or height % 2:
        return cv2.cvtColor(cv2.warpAffine(to_bgr(image), matrix, size, flags=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    frame_width, frame_height = frame_size(image)
    luma = cv2.warpAffine(image[:frame_height], matrix, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(_BLACK_Y,))
    # A chroma sample sits at the centre of its 2x2 luma pixels: x_luma = 2 x_chroma + 0.5, likewise at the crop.
    chroma_matrix = np.asarray(matrix, np.float64).copy()
    chroma_matrix[:, 2] = (chroma_matrix[:, 2] + 0.5 * chroma_matrix[:, :2].sum(axis=1) - 0.5) / 2
    planes = image.reshape(-1)
    chroma_size = (frame_height // 2) * (frame_width // 2)
    start = frame_width * frame_height
    chroma = [cv2.warpAffine(planes[offset:offset + chroma_size].reshape(frame_height // 2, frame_width // 2),
                             chroma_matrix, (width // 2, height // 2), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(_BLACK_CHROMA,))
              for offset in (start, start + chroma_size)]
    part = np.concatenate([luma.reshape(-1), chroma[0].reshape(-1), chroma[1].reshape(-1)])
    return cv2.cvtColor(part.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
