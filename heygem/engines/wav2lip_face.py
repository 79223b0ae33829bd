"""Face crops for Wav2Lip and the paste-back of what it generates.

The original cuts the raw detector box, squashes it to 96x96 and pastes the whole box back, which leaves
a visible square seam and a mouth that slides when the head tilts. Here the crop is square and rotated so
the eyes are level, and only the lower face (inside the jaw line, below the nose) is blended back with a
feathered mask, so nothing outside the mouth area can change.
"""

from __future__ import annotations

import cv2
import numpy as np

from heygem.pipeline.compositing import blend, feather
from heygem.pipeline.tracking import JAW, LEFT_EYE_OUTER, RIGHT_EYE_OUTER

# The crop's centre sits this fraction of its side below the landmarks' centre, leaving room under the
# chin as the original's 10 px bottom padding did.
_DROP = 0.06


def crop_matrix(landmarks: np.ndarray, size: int, scale: float) -> np.ndarray:
    """2x3 affine from frame pixels to a `size` square crop, eyes level, face filling it (times `scale`)."""
    left_eye, right_eye = landmarks[LEFT_EYE_OUTER], landmarks[RIGHT_EYE_OUTER]
    angle = float(np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0])))
    centre = (landmarks.min(axis=0) + landmarks.max(axis=0)) / 2
    level = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    aligned = landmarks @ level[:, :2].T + level[:, 2]
    low, high = aligned.min(axis=0), aligned.max(axis=0)
    side = float(max(high - low)) * scale
    middle = (low + high) / 2 + np.array([0.0, _DROP * side])
    zoom = size / side
    # aligned -> crop: scale about the square's centre so that it lands on the crop's centre.
    to_crop = np.array([[zoom, 0, size / 2 - middle[0] * zoom], [0, zoom, size / 2 - middle[1] * zoom]])
    return compose(to_crop, level)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine applying `inner` first, then `outer`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def cut_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    # Linear, as the original's cv2.resize of the face box, so the model sees the sharpness it was trained on.
    # Crops can reach past the frame edge (a face near the border): replicate rather than paint black,
    # which the model would read as a face feature.
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def paste_lower_face(frame: np.ndarray, generated: np.ndarray, matrix: np.ndarray, landmarks: np.ndarray,
                     feather_fraction: float) -> np.ndarray:
    """`frame` with the generated crop's lower face blended in; pixels outside the mask stay identical."""
    size = generated.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    height, width = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int), [width, height])
    if x1 <= x0 or y1 <= y0:
        return frame
    # crop -> region of interest: the inverse warp, shifted by the region's origin.
    to_region = compose(np.array([[1.0, 0, -x0], [0, 1.0, -y0]]), inverse)
    region_size = (int(x1 - x0), int(y1 - y0))
    face = cv2.warpAffine(generated, to_region, region_size, flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    side = size / float(np.hypot(matrix[0, 0], matrix[0, 1]))
    alpha = lower_face_mask(landmarks - [x0, y0], region_size, to_region, size, feather_fraction * side)
    result = frame.copy()
    result[y0:y1, x0:x1] = blend(frame[y0:y1, x0:x1], face, alpha)
    return result


def lower_face_mask(landmarks: np.ndarray, region_size: tuple[int, int], crop_to_region: np.ndarray,
                    crop_size: int, radius: float) -> np.ndarray:
    """0..1 mask over the region: inside the jaw line and below the middle of the crop (just under the nose),
    where the model drew from the audio; edges softened over about `radius` pixels.

    The soft edge ends exactly at the jaw line, so nothing outside the face changes. At the crop's middle line
    it is centred on the line instead: the model's upper half reproduces its input, so blending a little into
    it is harmless, and the upper lip just below the line is fully replaced.
    """
    # feather's Gaussian kernel is a square reaching two radii each side: shrinking the area by that same
    # square makes the blurred edge end at the outline.
    reach = int(np.ceil(2 * radius))
    outline = cv2.convexHull(np.round(landmarks[list(JAW)]).astype(np.int32))
    inside_jaw = np.zeros(region_size[::-1], np.uint8)
    cv2.fillConvexPoly(inside_jaw, outline, (255,))
    region_per_crop_pixel = float(np.hypot(crop_to_region[0, 0], crop_to_region[0, 1]))
    lower: np.ndarray = np.zeros((crop_size, crop_size), np.uint8)
    lower[max(0, round(crop_size / 2 - reach / region_per_crop_pixel)):] = 255
    lower = cv2.warpAffine(lower, crop_to_region, region_size, flags=cv2.INTER_NEAREST)
    mask = np.minimum(inside_jaw, lower)
    if reach > 0:
        mask = cv2.erode(mask, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    return feather(mask, radius)
