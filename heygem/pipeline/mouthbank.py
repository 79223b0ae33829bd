"""The person's own mouth images, taken from their footage (Video Rewrite, Bregler et al. 1997).

Analysis (once per video, cached with the tracking by heygem.pipeline.analysis): every frame with a face
gives one bank entry, its lower face warped into one reference frame's coordinates (an affine fit on points
the mouth does not move: under the nose, the philtrum, the cheeks beside the nose), with its mouth geometry
(inner-lip gap, corner to corner width, both over face width), how far the head is turned, and appearance
(share of the mouth interior bright as teeth, share near-black).

Selection (once per task): for each output frame the bank entry whose mouth is closest to the wanted shape,
with a cost for jumping between far-apart entries, minimised over the whole clip by dynamic programming
(Viterbi), so consecutive output frames play runs of consecutive source frames instead of flickering between
unrelated ones.

Stitching (per output frame): the chosen entry is mapped onto the current frame by the same stable points,
colour-matched to the current frame's skin around the mouth (gains smoothed over time), and blended in with a
feathered mask over lips, chin and the skin between; the warp then corrects what is left (heygem.engines).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from heygem.pipeline import compositing
from heygem.pipeline import tracking as lm

# Points the mouth and jaw do not move, close to the mouth's own plane (so a turned head maps the mouth where
# it is, not where the nose tip or the face sides put it): under the nose, the philtrum, the cheeks beside the
# nose and the upper lip's outer midline, which sits on the upper jaw.
STABLE_POINTS = (2, 98, 327, 164, 167, 393, 165, 391, 0, 37, 267, 205, 425, 206, 426, 203, 423)
# The region a bank entry replaces: lips, the skin around them down the chin, bounded by cheeks and jaw.
_LOWER_FACE = (*lm.OUTER_UPPER, *lm.OUTER_LOWER, 164, 167, 393, 206, 426, 207, 427, 214, 434, 150, 149, 176, 148,
               152, 377, 400, 378, 379)
_LOWER_FACE_INDEX = np.array(_LOWER_FACE)
_CHEEKS = (205, 425, 50, 280)
# Teeth are lit less than the cheeks (inside the mouth, under the upper lip): a pixel this bright against the
# cheeks is teeth. As bright as the cheeks themselves missed most teeth of a small face filmed in warm light
# (0.05 of the open mouth where they fill 0.4 by eye; bench.mouth_quality counts them the same way).
_TEETH_LIT = 0.75
# Landmarks a stitched entry brings along: its lips, the skin under them and the jaw.
_MOVES_WITH_MOUTH = sorted({*lm.OUTER_UPPER, *lm.OUTER_LOWER, *lm.INNER_UPPER, *lm.INNER_LOWER, 18, 200, 199, 175,
                            83, 313, 201, 421, 194, 418, 32, 262, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378,
                            379, 365, 397})


# Where lips must meet, the cost of an entry whose lips do not: more than two cuts (there and back) between a
# wide-open and a closed mouth at the default jump cost (3.0 each, plus their distance, about 4).
_OPEN_LIPS_COST = 16.0
# ... and of a closed footage mouth at the closed threshold against one whose lips read fully shut.
_FIRM_LIPS_COST = 6.0
# Where the mouth is open, how much a footage mouth all teeth is preferred over one without, in units of shape
# distance: a tie-break, about the cost of a mouth a sixth of a wide opening more or less open (at 1 and more,
# a talking mouth with teeth was kept on through a "p" the recogniser missed and warped shut over its teeth).
_TEETH_PREFERENCE = 0.5


@dataclasses.dataclass(frozen=True)
class BankSettings:
    max_entries: int  # the bank keeps at most this many frames, spread evenly over the video
    jump_cost: float  # cost of a cut between non-consecutive entries, in units of shape distance
    closed_gap: float  # inner-lip gap over face width under which an entry counts as closed


@dataclasses.dataclass
class MouthBank:
    """Entries are source frames with a face; arrays are indexed by entry."""

    frames: np.ndarray  # (n,) int: the video grid frame each entry comes from
    landmarks: np.ndarray  # (n, 468, 2) float32: each entry's landmarks in reference coordinates
    gap: np.ndarray  # (n,) inner-lip gap over face width
    width: np.ndarray  # (n,) corner-to-corner width over face width
    turn: np.ndarray  # (n,) how far the head is turned (head_turn)
    teeth: np.ndarray  # (n,) share of the mouth interior as bright as teeth
    dark: np.ndarray  # (n,) share of the mouth interior near-black
    reference: np.ndarray  # (len(STABLE_POINTS), 2) float32: stable points of the reference coordinates
    origin: np.ndarray  # (2,) float32: reference coordinates of the patches' top-left pixel
    patches: list[bytes]  # JPEG of each entry's lower face in reference coordinates
    # The last patch decoded: consecutive output frames often show the same entry (112 of 188 on the speed bench).
    _decoded: tuple[int, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)
    # The least-squares solver of `stable_affine` from `reference`, which every stitched frame maps from.
    _from_reference: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.frames)

    def patch(self, entry: int) -> np.ndarray:
        """The entry's lower face (BGR, read-only)."""
        if self._decoded is None or self._decoded[0] != entry:
            image = cv2.imdecode(np.frombuffer(self.patches[entry], np.uint8), cv2.IMREAD_COLOR)
            image.flags.writeable = False
            self._decoded = (entry, image)
        return self._decoded[1]

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """The 2x3 affine matrix mapping reference coordinates onto a frame whose landmarks are `points`: the
        same least-squares fit as `stable_affine`, its solver computed once per bank."""
        if self._from_reference is None:
            self._from_reference = np.linalg.pinv(affine_rows(self.reference))
        return (self._from_reference @ points[list(STABLE_POINTS)].astype(np.float64)).T


def stable_affine(source: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """The 2x3 affine matrix mapping `source` stable points onto `destination`, least squares."""
    solution, *_ = np.linalg.lstsq(affine_rows(source), destination.astype(np.float64), rcond=None)
    return solution.T.astype(np.float64)


def affine_rows(source: np.ndarray) -> np.ndarray:
    """The least-squares system of an affine fit from `source` points: one row (x, y, 1) per point."""
    return np.concatenate([source.astype(np.float64), np.ones((len(source), 1))], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def mouth_geometry(points: np.ndarray) -> tuple[float, float]:
    """(inner-lip gap, corner-to-corner width), both over face width."""
    face = max(lm.face_size(points), 1.0)
    gap = float(np.linalg.norm(points[lm.LOWER_LIP_INNER] - points[lm.UPPER_LIP_INNER])) / face
    width = float(np.linalg.norm(points[lm.MOUTH_RIGHT] - points[lm.MOUTH_LEFT])) / face
    return gap, width


def head_turn(points: np.ndarray) -> float:
    """Where the nose tip sits between the face sides: 0 facing the camera, about +-0.1 for a clear turn."""
    left, right = points[lm.FACE_LEFT].astype(np.float64), points[lm.FACE_RIGHT].astype(np.float64)
    across = right - left
    return float((points[lm.NOSE_TIP] - left) @ across / max(float(across @ across), 1.0)) - 0.5


def interior_appearance(frame: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """(teeth share, near-black share) of the pixels between the inner lips; (0, 0) for a closed mouth."""
    inner = np.concatenate([points[list(lm.INNER_UPPER)], points[list(reversed(lm.INNER_LOWER))]])
    x0, y0 = np.floor(inner.min(axis=0)).astype(int)
    x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + 1
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0, 0.0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(inner - [x0, y0]).astype(np.int32)], (1,))
    if mask.sum() < 4:
        return 0.0, 0.0
    grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)[mask > 0].astype(np.float32)
    cheeks = np.round(points[list(_CHEEKS)]).astype(int)
    cheeks = np.clip(cheeks, 0, [width - 1, height - 1])
    skin = float(np.median(cv2.cvtColor(frame[cheeks[:, 1], cheeks[:, 0]][None], cv2.COLOR_BGR2GRAY)))
    return float(np.mean(grey > _TEETH_LIT * skin)), float(np.mean(grey < 0.25 * skin))


class BankBuilder:
    """Collects bank entries frame by frame while the video is analysed."""

    def __init__(self, settings: BankSettings, frame_count: int) -> None:
        self.settings = settings
        # Entries are kept on an even stride so a long video still fits max_entries.
        self.stride = max(1, int(np.ceil(frame_count / max(settings.max_entries, 1))))
        self.reference: np.ndarray | None = None
        self.box: tuple[int, int, int, int] | None = None  # patch box in reference coordinates
        self.entries: list[tuple[int, np.ndarray, float, float, float, float, float, bytes]] = []

    def add(self, grid_index: int, frame: np.ndarray, points: np.ndarray | None) -> None:
        if points is None or grid_index % self.stride:
            return
        if self.reference is None:
            self.reference = points[list(STABLE_POINTS)].astype(np.float32)
            self.box = patch_box(points)
        assert self.box is not None
        to_reference = stable_affine(points[list(STABLE_POINTS)], self.reference)
        x0, y0, x1, y1 = self.box
        shifted = to_reference.copy()
        shifted[:, 2] -= (x0, y0)
        patch = cv2.warpAffine(frame, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        ok, encoded = cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        gap, width = mouth_geometry(points)
        teeth, dark = interior_appearance(frame, points)
        self.entries.append((grid_index, apply_affine(to_reference, points), gap, width, head_turn(points), teeth,
                             dark, encoded.tobytes()))

    def bank(self) -> MouthBank:
        entries = self.entries
        reference = self.reference if self.reference is not None else np.zeros((len(STABLE_POINTS), 2), np.float32)
        origin = np.array(self.box[:2] if self.box else (0, 0), np.float32)
        return MouthBank(
            frames=np.array([e[0] for e in entries], np.int64),
            landmarks=np.array([e[1] for e in entries], np.float32).reshape(-1, lm.LANDMARK_COUNT, 2),
            gap=np.array([e[2] for e in entries], np.float32), width=np.array([e[3] for e in entries], np.float32),
            turn=np.array([e[4] for e in entries], np.float32), teeth=np.array([e[5] for e in entries], np.float32),
            dark=np.array([e[6] for e in entries], np.float32), reference=reference, origin=origin,
            patches=[e[7] for e in entries])


def patch_box(points: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel box of the lower face (cheek to cheek, nose to below the chin) with room for a dropped jaw."""
    face = lm.face_size(points)
    lower = points[list(_LOWER_FACE)]
    x0, y0 = lower.min(axis=0) - 0.08 * face
    x1, y1 = lower.max(axis=0) + np.array([0.08, 0.2]) * face
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


@dataclasses.dataclass(frozen=True)
class WantedMouth:
    """Per output frame: the mouth to show, in the bank's units (over face width)."""

    gap: np.ndarray
    width: np.ndarray
    closed: np.ndarray  # bool: lips must touch
    turn: np.ndarray  # how far the head is turned in the frame shown (NaN: no face there)
    own: np.ndarray  # int: the entry of the frame the output shows anyway (-1: none); staying on it is free


def selection_costs(bank: MouthBank, wanted: WantedMouth, closed_gap: float) -> np.ndarray:
    """(frames, entries) cost of showing each entry at each output frame: shape distance in units of a
    typical change between syllables (a quarter of a wide-open gap), the difference in head turn, and a large
    penalty for open lips where they must be closed."""
    gap_unit = max(float(np.percentile(bank.gap, 95)) * 0.25, 0.01) if len(bank) else 0.01
    width_unit = 0.02
    cost = ((wanted.gap[:, None] - bank.gap[None, :]) / gap_unit) ** 2
    # Widths beyond the footage's own are left to the warp, which stretches lips cheaply; asking the bank for
    # them would trade the opening for width, and the warp would then open a narrower mouth with a painted
    # cavity.
    reachable = np.clip(wanted.width, *np.percentile(bank.width, [5, 95])) if len(bank) else wanted.width
    cost += ((reachable[:, None] - bank.width[None, :]) / width_unit) ** 2
    # A mouth seen from another angle does not fit the face it is stitched into.
    cost += np.nan_to_num((wanted.turn[:, None] - bank.turn[None, :]) / 0.03) ** 2
    # Lips meet only when they meet in the footage: anything left open shows between them, and an open mouth
    # the warp presses shut still reads as parted lips (0.013-0.017 of the face width on a face mesh, against
    # 0.004-0.010 for the person's own closed mouth). So any open entry costs more than two cuts (to one of the
    # footage's closed mouths and back), and the more open, the more.
    opened_by = np.maximum(bank.gap[None, :] - closed_gap, 0) / (0.3 * closed_gap)
    # Among the closed ones, the most firmly closed: stitched over another frame's jaw, a closed footage mouth
    # reads a little more parted than it did in the footage (0.012-0.016 of the face width for one read 0.009).
    firmness = _FIRM_LIPS_COST * np.minimum(bank.gap[None, :] / closed_gap, 1) ** 2
    cost += np.where(wanted.closed[:, None], opened_by**2 + _OPEN_LIPS_COST * (bank.gap[None, :] >= closed_gap)
                     + firmness, 0.0)
    # Teeth belong to an open mouth. Among mouths of about the wanted shape, an open one (from a quarter of a wide
    # opening, in full from half of one) is the one that shows the person's teeth: a viewer reads an open mouth by its
    # teeth, and a teeth-less one from the footage (a turned head, the tongue in the way) looks like a hole. A
    # nearly closed one is the one that shows none: warped shut, a mouth showing teeth leaves them between the lips.
    opening = np.clip(wanted.gap / gap_unit - 1, -1, 1) * ~wanted.closed
    cost -= _TEETH_PREFERENCE * opening[:, None] * bank.teeth[None, :]
    # The frame's own mouth needs no stitching at all; prefer it where it fits.
    own = wanted.own >= 0
    cost[np.flatnonzero(own), wanted.own[own]] -= 0.5
    return cost.astype(np.float32)


def select_entries(bank: MouthBank, wanted: WantedMouth, settings: BankSettings) -> np.ndarray:
    """The entry to show at every output frame: the Viterbi path through `selection_costs` where moving on to
    the next entry (or staying) is free and any other move costs jump_cost plus the two mouths' distance."""
    costs = selection_costs(bank, wanted, settings.closed_gap)
    frames, entries = costs.shape
    if entries == 0:
        return np.full(frames, -1, np.int64)
    geometry = np.stack([bank.gap / max(float(np.percentile(bank.gap, 95)) * 0.25, 0.01), bank.width / 0.02], 1)
    transition = settings.jump_cost + np.sqrt(((geometry[:, None, :] - geometry[None, :, :]) ** 2).sum(-1))
    consecutive = np.flatnonzero(np.diff(bank.frames) == int(np.min(np.diff(bank.frames), initial=1)))
    transition[np.arange(entries), np.arange(entries)] = 0.0
    transition[consecutive, consecutive + 1] = 0.0
    transition = transition.astype(np.float32)
    back = np.empty((frames, entries), np.int32)
    total = costs[0].copy()
    for index in range(1, frames):
        through = total[:, None] + transition
        back[index] = np.argmin(through, axis=0)
        total = through[back[index], np.arange(entries)] + costs[index]
    path = np.empty(frames, np.int64)
    path[-1] = int(np.argmin(total))
    for index in range(frames - 1, 0, -1):
        path[index - 1] = back[index, path[index]]
    return path


def interior_donor(bank: MouthBank, closed_gap: float) -> int | None:
    """The entry whose interior fills what the warp opens beyond the mouth of the frame shown: the person's own teeth,
    from the frame that shows them best. Among their open mouths facing the camera as usual and opened at least
    three quarters as wide as the widest of them (a narrower one has no interior for a wide opening: a painted
    shadow band then splits its teeth), the one showing the most teeth out of deep shadow (opening times teeth
    share times the share not near-black). Footage whose open mouths show no teeth: the widest dark interior.
    None when no open entry shows anything but lips between them (a closed-mouth photo or video: the face mesh
    reads up to twice closed_gap on closed lips)."""
    if len(bank) == 0:
        return None
    facing = np.abs(bank.turn - np.median(bank.turn)) <= 0.03
    candidates = facing & (bank.gap > 3 * closed_gap) & (bank.teeth + bank.dark >= 0.1)
    if not candidates.any():
        return None
    candidates &= bank.gap >= 0.75 * float(bank.gap[candidates].max())
    teeth = bank.gap * bank.teeth * (1 - bank.dark) * candidates
    score = teeth if teeth.max() > 0 else bank.gap * bank.dark * candidates
    return int(np.argmax(score))


def stitch(frame: np.ndarray, points: np.ndarray, bank: MouthBank, entry: int,
           feather_share: float = 0.035) -> np.ndarray | None:
    """Blends bank `entry` into `frame` (in place); returns the landmarks as they now are (the entry's mouth,
    lips and jaw mapped onto the frame, everything else the frame's own), or None when nothing was stitched."""
    to_frame = bank.to_frame(points)
    entry_points = apply_affine(to_frame, bank.landmarks[entry])
    face = max(lm.face_size(points), 1.0)
    entry_face, frame_face = entry_points[_LOWER_FACE_INDEX], points[_LOWER_FACE_INDEX]
    outline = np.concatenate([entry_face, frame_face])
    height, width = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int), 0)
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 1
    # The mask and the colour field are smooth: they are computed on a grid a few pixels apart, then upsampled.
    radius = feather_share * face
    step = max(1, round(radius / 3))
    # Whole cells where the frame allows: the grid's area averages are then plain block means (ten times cheaper).
    x1, y1 = min(x0 + -(-(x1 - x0) // step) * step, width), min(y0 + -(-(y1 - y0) // step) * step, height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    # Patch pixel -> reference (+origin) -> frame, then shifted to the region's corner.
    patch_to_region = to_frame.copy()
    patch_to_region[:, 2] += to_frame[:, :2] @ bank.origin - (x0, y0)
    region = frame[y0:y1, x0:x1]
    pasted = cv2.warpAffine(bank.patch(entry), patch_to_region, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    coarse = Coarse(step, (x0, y0), (-(-(y1 - y0) // step), -(-(x1 - x0) // step)))
    # Inside both faces' lower face only: beyond either face's outline lies background, which moves with the head.
    mask = face_region(coarse.points(frame_face), coarse.shape) * face_region(coarse.points(entry_face), coarse.shape)
    # Shrunk by the feather radius so the soft edge stays inside the face.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(radius / step) + 1,) * 2)
    alpha = compositing.feather(cv2.erode(mask, kernel), radius / step)
    lips = [coarse.points(outline[list(lm.OUTER_UPPER + lm.OUTER_LOWER[::-1])]) for outline in (points, entry_points)]
    full = (x1 - x0, y1 - y0)
    gain = colour_gain(coarse.down(pasted), coarse.down(region), alpha, lips, radius / step)
    if gain is not None:
        pasted = cv2.multiply(pasted, cv2.resize(gain, full, interpolation=cv2.INTER_LINEAR), dtype=cv2.CV_8U)
    region[:] = compositing.blend(region, pasted, cv2.resize(alpha, full, interpolation=cv2.INTER_LINEAR))
    merged = points.copy()
    merged[_MOVES_WITH_MOUTH] = entry_points[_MOVES_WITH_MOUTH]
    return merged


@dataclasses.dataclass(frozen=True)
class Coarse:
    """A grid `step` pixels apart over a region whose top-left pixel is `origin`; `shape` is (rows, columns)."""

    step: int
    origin: tuple[int, int]
    shape: tuple[int, int]

    def points(self, pixels: np.ndarray) -> np.ndarray:
        return (pixels - self.origin) / self.step

    def down(self, image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, self.shape[::-1], interpolation=cv2.INTER_AREA)


def face_region(outline: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """1 inside the lower face's `outline` (its _LOWER_FACE points: cheeks beside the mouth, chin) over an image of
    `shape`, else 0."""
    mask = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(outline).astype(np.int32)), (1.0,))
    return mask


def colour_gain(pasted: np.ndarray, region: np.ndarray, alpha: np.ndarray, lips: list[np.ndarray],
                radius: float) -> np.ndarray | None:
    """A smooth per-channel gain field that makes `pasted`'s skin match the frame's skin (`region`) under the
    mask: lighting that differs across the face (a shadow under the lip, a lit cheek) is matched where it is,
    not only on average. None when there is too little skin to tell.

    Both mouths (`lips`: outer lip outlines) are left out of the measurement, since they are what differs;
    there the field is interpolated from the skin around them.
    """
    weight = (alpha > 0.2).astype(np.uint8)
    for outline in lips:
        cv2.fillPoly(weight, [np.round(outline).astype(np.int32)], (0,))
    if weight.sum() < 8:
        return None
    size = 2 * int(np.ceil(3 * radius)) + 1
    weights = cv2.GaussianBlur(weight.astype(np.float32), (size, size), 1.5 * radius)[..., None]
    # Skin only (zero elsewhere), masked by OpenCV: numpy's broadcast of a one-channel mask runs pixel by pixel.
    have, wanted = (cv2.GaussianBlur(cv2.bitwise_and(image, image, mask=weight).astype(np.float32), (size, size),
                                     1.5 * radius) for image in (pasted, region))
    mean_gain = np.array(cv2.mean(region, weight)[:3]) / np.maximum(cv2.mean(pasted, weight)[:3], 1.0)
    gain = wanted / np.maximum(have, 1.0)
    np.copyto(gain, mean_gain.astype(np.float32), where=weights <= 0.05)
    return np.clip(gain, 0.75, 1.33, out=gain)
