"""The built-in engine: moves the lips and jaw of each frame to a mouth shape driven by the speech.

No model files and no GPU. For every frame it measures the mouth of the input (so a talking input has its own
motion replaced, not added to), computes where each lip and jaw landmark must go, and warps the lower face
with a smooth dense displacement field (cv2.remap). The upper lip and the lower lip/jaw have separate fields,
so the lips can close over an open mouth without smearing it; where the mouth opens beyond the input, the
interior comes from the person's own most open mouth in their footage (upper teeth moving with the upper lip),
and only footage without any open mouth gets a cavity synthesised from the lips' colours, with a hint of teeth.

All geometry is in a mouth-local frame: origin between the inner lips, u along the mouth (left to right
corner), v towards the chin, both in units of half the mouth width.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import cv2
import numpy as np

from heygem.config import Config, MeshWarpConfig
from heygem.options import TaskOptions
from heygem.pipeline import compositing, mouthbank
from heygem.pipeline import tracking as lm
from heygem.pipeline.analysis import VideoAnalysis
from heygem.pipeline.engine import Box, FrameBatch, LipSyncEngine
from heygem.pipeline.mouthbank import BankSettings, MouthBank, WantedMouth
from heygem.pipeline.mouthcues import CueSettings, MouthCues, mouth_cues

_OUTER_UPPER_MID = lm.OUTER_UPPER[1:-1]
_OUTER_LOWER_MID = lm.OUTER_LOWER[1:-1]
# Between the lower lip and the chin, on the midline and beside it: these follow the jaw.
_CHIN_SKIN = (18, 200, 199, 175, 83, 313, 201, 421, 194, 418, 32, 262)
_LOWER_JAW = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397)
# Points that never move: nose, cheeks, face sides. They keep the warp inside the lower face.
_ANCHORS = (1, 2, 98, 327, 164, 205, 425, 50, 280, 187, 411, 207, 427, 234, 454, 93, 323, 132, 361, 58, 288)
_SIGMA = 0.32  # reach of each control point in the interpolated fields (mouth half-widths)
_GRID_STEP = 0.2  # spacing of the coarse grid the fields are computed on (mouth half-widths)
_UNCHANGED_BELOW_PX = 0.2  # pixels displaced less than this keep their exact input values
_UPPER_INTERIOR_SHARE = 0.65  # of the input's visible mouth interior, the part that moves with the upper lip
_TEETH_HEIGHT = 0.25  # visible upper teeth, in mouth half-widths
_LIP_PRESS = 0.12  # overlap of closed lips, in mouth half-widths
# Closed lips: the band this close to the meeting line (mouth half-widths) is filled with lip texture, and the
# crease where the lips meet darkens them by this share.
_SEAM_REACH, _CREASE_DEPTH = 0.06, 0.25
_TEETH_TUCK = 0.14  # how far above the measured inner upper lip its real edge is taken to be, when open
_MAX_OPENNESS = 1.3  # the widest mouth any cue and intensity may ask for (1 = max_open_ratio)
# The render box (render_box) around every frame's region of interest, in face sizes: room for what the render
# reads beyond what it moves (remap sources, skin samples, a stitched mouth opened wider than the frame's own).
_BOX_MARGIN = 0.2
_BOX_MOST = 0.5  # a render box larger than this share of the frame is no box: whole frames cost no more
_INTERIOR_DARKNESS = 0.4  # mouth interior colour as a fraction of the lip colour
# Of a donor mouth whose inside is all teeth (a smile), the colour that stands in for its shadow and tongue,
# as a fraction of its lip colour per channel (BGR): a mouth's inside is lip tissue, less lit and redder. Any
# lighter and the lower half of an opening reads as more lower lip: the mouth looks (and the face mesh reads) shut.
_DONOR_SHADOW = np.array([0.22, 0.24, 0.38], np.float32)
_DONOR_FADE = 0.08  # where a donor's own interior runs out, it fades to its shadow over this many half-widths
_LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights of luma
# Cheeks beside the nose and the mouth (anchors: the warp never moves them): the skin whose colour tells how a
# donor mouth must be lit to sit in the frame. Lips would not do: their shading changes with the mouth's shape.
_SKIN = (205, 425, 207, 427)


@dataclasses.dataclass
class MeshWarpState:
    """Per-job data: the audio cues and what the renderer learns about the face as frames pass."""

    cues: MouthCues
    intensity: float
    width_reference: float | None = None  # the face's usual mouth width over face width
    interior: np.ndarray | None = None  # running mean colour (BGR) of the mouth interior
    bank: MouthBank | None = None  # the person's own mouths, from the video's analysis
    entries: np.ndarray | None = None  # per output frame: the bank entry to stitch in, -1 for none
    openness: np.ndarray | None = None  # per output frame: the openness to warp to, in the person's own range
    fitting: np.ndarray | None = None  # per output frame: the chosen footage mouth needs no warp
    donor: InteriorDonor | None = None  # the person's own open mouth, for what the warp opens beyond the frame's
    donor_gain: np.ndarray | None = None  # running per-channel colour gain from the donor's lips to the frame's


@dataclasses.dataclass(frozen=True)
class MouthFrame:
    """Mouth-local coordinates of one frame: centre, unit axes and scale in pixels."""

    centre: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    scale: float
    face: float  # the face's width in pixels (teeth keep their size in the face's units, not the mouth's)

    @classmethod
    def of(cls, points: np.ndarray) -> MouthFrame:
        left, right = points[lm.MOUTH_LEFT].astype(np.float64), points[lm.MOUTH_RIGHT].astype(np.float64)
        axis_u = (right - left) / max(np.linalg.norm(right - left), 1e-6)
        axis_v = np.array([-axis_u[1], axis_u[0]])
        centre = (points[lm.UPPER_LIP_INNER] + points[lm.LOWER_LIP_INNER]).astype(np.float64) / 2
        return cls(centre, axis_u, axis_v, max(float(np.linalg.norm(right - left)) / 2, 2.0),
                   max(lm.face_size(points), 1.0))

    def local(self, pixels: np.ndarray) -> np.ndarray:
        offset = pixels - self.centre
        return np.stack([offset @ self.axis_u, offset @ self.axis_v], axis=-1) / self.scale

    def pixels(self, local: np.ndarray) -> np.ndarray:
        return self.centre + (local[..., :1] * self.axis_u + local[..., 1:] * self.axis_v) * self.scale

    def pixel_maps(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`pixels` of mouth-local `u`, `v` arrays as cv2.remap's float32 x and y maps: for whole pixel grids,
        where float64 would double the work (remap itself resolves a 32nd of a pixel)."""
        axis_u, axis_v = (np.float32(self.scale) * axis.astype(np.float32) for axis in (self.axis_u, self.axis_v))
        centre = self.centre.astype(np.float32)
        return (u * axis_u[0] + v * axis_v[0] + centre[0]), (u * axis_u[1] + v * axis_v[1] + centre[1])


@dataclasses.dataclass(frozen=True)
class MouthTarget:
    """Where the lips go, in mouth-local units: control points with their backward displacement."""

    upper_points: np.ndarray  # (n, 2) destination positions of the upper lip's control points
    upper_shift: np.ndarray  # (n, 2) destination -> source displacement at those points
    lower_points: np.ndarray  # the same for the lower lip, chin and jaw
    lower_shift: np.ndarray
    anchors: np.ndarray  # (m, 2) points that stay put in both fields
    inner_upper: np.ndarray  # (11, 2) inner upper lip at the destination
    inner_lower: np.ndarray  # (11, 2) inner lower lip at the destination
    source_upper: np.ndarray  # (11, 2) the same lips in the input frame
    source_lower: np.ndarray
    teeth: float  # 0..1, how much of the upper teeth shows
    closed: bool  # the lips press together: nothing of the mouth's inside may show between them
    nose_v: float  # height of the nose tip: nothing above it moves
    lip_top_v: float  # height of the top of the upper lip: everything below it may move fully


@dataclasses.dataclass(frozen=True)
class InteriorDonor:
    """The person's own open mouth (a bank entry, mouthbank.interior_donor) that fills whatever the warp opens
    beyond the mouth of the frame shown: its upper teeth, tongue and shadow instead of a painted cavity."""

    image: np.ndarray  # the entry's lower face (BGR)
    mouth: MouthFrame  # its mouth-local frame, in the image's pixels
    upper: np.ndarray  # (11, 2) its inner upper lip, in its mouth-local units
    lower: np.ndarray  # (11, 2) its inner lower lip
    skin: np.ndarray  # (3,) its skin's colour (BGR) beside the mouth, as skin_colour measures the frame's
    shadow: np.ndarray  # (3,) the darker part of its interior (tongue, throat), or its lips in shadow
    split: float  # share of its opening, from the top, that moves with the upper lip (its upper teeth)

    @classmethod
    def of(cls, bank: MouthBank, entry: int) -> InteriorDonor:
        image = bank.patch(entry)
        points = bank.landmarks[entry] - bank.origin
        mouth = MouthFrame.of(points)
        local = mouth.local(points.astype(np.float64))
        upper, lower = local[list(lm.INNER_UPPER)], local[list(lm.INNER_LOWER)]
        lips = lip_colour(image, mouth, upper, lower)
        skin = skin_colour(image, mouth, local[list(_SKIN)])
        inner = np.concatenate([points[list(lm.INNER_UPPER)], points[list(reversed(lm.INNER_LOWER))]])
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], (1,))
        inside = image[mask > 0].astype(np.float32).reshape(-1, 3)
        luma = inside @ _LUMA
        shadow = np.median(inside[luma <= np.percentile(luma, 40)], axis=0) if len(inside) else lips
        if float(shadow @ _LUMA) > 0.6 * float(lips @ _LUMA):
            shadow = lips * _DONOR_SHADOW
        return cls(image, mouth, upper, lower, skin, shadow.astype(np.float32),
                   teeth_split(image, mouth, upper, lower))


class MeshWarpEngine(LipSyncEngine):
    name: ClassVar[str] = "meshwarp"
    device = "cpu"
    gpu_memory_gb = 0.0
    takes_options = LipSyncEngine.takes_options | {"mouth_intensity", "speech_language"}

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings = config.meshwarp

    def audio_features(self, audio: np.ndarray, fps: float, frame_count: int, options: TaskOptions) -> MeshWarpState:
        intensity, language = options.mouth_intensity, options.speech_language
        assert intensity is not None and language is not None, "options are resolved at submit (TaskOptions.resolve)"
        settings = self.settings
        cues = mouth_cues(audio, fps, frame_count, CueSettings(
            lead_ms=settings.lead_ms, attack_ms=settings.attack_ms, release_ms=settings.release_ms,
            gate_db=settings.gate_db, range_db=settings.range_db, voicing_threshold=settings.voicing_threshold,
            closed_below=settings.closed_below, speech_language=language, closure_dip_db=settings.closure_dip_db))
        return MeshWarpState(cues=cues, intensity=intensity)

    def bank_settings(self) -> BankSettings | None:
        settings = self.settings
        return BankSettings(max_entries=settings.bank_max_frames, jump_cost=settings.bank_jump_cost,
                            closed_gap=settings.bank_closed_gap) if settings.mouth_bank else None

    def attach_video(self, features: MeshWarpState, analysis: VideoAnalysis, shown: np.ndarray) -> MeshWarpState:
        settings = self.bank_settings()
        bank = analysis.bank
        if settings is None or len(bank) == 0:
            return features
        wanted = wanted_mouth(features, analysis, shown, self.settings)
        entries = mouthbank.select_entries(bank, wanted, settings)
        fitting = fits_as_it_is(bank, entries, wanted, self.settings)
        # Where the chosen mouth is the frame's own, nothing is stitched.
        entries[bank.frames[entries] == shown[:len(entries)]] = -1
        # The warp corrects the others towards the same mouth, in its own unit (a share of max_open_ratio).
        openness = wanted.gap / (self.settings.max_open_ratio * float(np.median(bank.width)))
        donor = mouthbank.interior_donor(bank, settings.closed_gap)
        return dataclasses.replace(features, bank=bank, entries=entries, openness=openness, fitting=fitting,
                                   donor=None if donor is None else InteriorDonor.of(bank, donor))

    def render_box(self, landmarks: list[np.ndarray | None], size: tuple[int, int]) -> Box | None:
        return render_box(landmarks, size)

    def render(self, batch: FrameBatch, features: MeshWarpState) -> list[np.ndarray]:
        for index, frame, points in zip(batch.indices, batch.frames, batch.landmarks, strict=True):
            if points is not None:
                # Beyond this the jaw would fold over the neck; intensity scales speech, not anatomy.
                openness = min(float(features.cues.openness[index]) * features.intensity, _MAX_OPENNESS)
                if features.openness is not None:
                    openness = float(features.openness[index])
                shape = float(features.cues.shape[index])
                if features.bank is not None and features.entries is not None and features.entries[index] >= 0:
                    stitched = mouthbank.stitch(frame, points, features.bank, int(features.entries[index]))
                    points = points if stitched is None else stitched
                if features.fitting is None or not features.fitting[index]:
                    render_mouth(frame, points, openness, shape, features, self.settings)
        return batch.frames


def render_box(landmarks: list[np.ndarray | None], size: tuple[int, int]) -> Box | None:
    """Every frame's region_of_interest, grown by _BOX_MARGIN of its face, in one box with even corners; None where
    no frame has a face, or where the box would be most of the frame (whole frames cost no more then)."""
    width, height = size
    corners = []
    for points in landmarks:
        if points is None:
            continue
        mouth = MouthFrame.of(points)
        roi = region_of_interest(mouth, mouth.local(points.astype(np.float64)), (height, width))
        if roi is not None:
            margin = _BOX_MARGIN * lm.face_size(points)
            corners.append((roi[0] - margin, roi[1] - margin, roi[2] + margin, roi[3] + margin))
    if not corners:
        return None
    spans = np.array(corners)
    x0, y0 = (max(0, int(np.floor(value)) // 2 * 2) for value in spans[:, :2].min(axis=0))
    x1, y1 = (min(limit, -(-int(np.ceil(value)) // 2) * 2) for value, limit in zip(spans[:, 2:].max(axis=0),
                                                                                   (width, height), strict=True))
    if (x1 - x0) * (y1 - y0) > _BOX_MOST * width * height:
        return None
    return x0, y0, x1, y1


def fits_as_it_is(bank: MouthBank, entries: np.ndarray, wanted: WantedMouth, settings: MeshWarpConfig) -> np.ndarray:
    """Per output frame: the chosen footage mouth is this close to the wanted one, so it is shown as it is (the
    warp would only blur it). Where the lips must meet, only a footage mouth whose lips meet fits. (Pressing
    such a mouth further with the warp pulls the chin over what the frame's own open mouth left below the
    stitched one: a pale patch under the lower lip.) A footage mouth whose lips meet fits wherever they must
    meet, whatever its width: pressed further, a seam shows between its lips."""
    gap, width = bank.gap[entries], bank.width[entries]
    near = (np.abs(gap - wanted.gap) <= 0.15 * open_gap(bank, settings)) & (np.abs(width / wanted.width - 1) <= 0.04)
    return np.where(wanted.closed, gap < settings.bank_closed_gap, near)


def open_gap(bank: MouthBank, settings: MeshWarpConfig) -> float:
    """The lip gap (over face width) of full openness: the person's own wide-open mouth (the 95th percentile of
    their footage) where they talk in it, or the warp's max_open_ratio where the mouth barely moves (a photo,
    a still smile, a silent video)."""
    most = float(np.percentile(bank.gap, 95))
    return most if talking(bank, settings) else settings.max_open_ratio * float(np.median(bank.width))


def talking(bank: MouthBank, settings: MeshWarpConfig) -> bool:
    """The footage's mouth opens and closes (a talking video), rather than barely moving (a photo, a still
    smile, a silent video)."""
    least, most = np.percentile(bank.gap, [5, 95])
    return bool(most - least >= 3 * settings.bank_closed_gap)


def wanted_mouth(state: MeshWarpState, analysis: VideoAnalysis, shown: np.ndarray,
                 settings: MeshWarpConfig) -> WantedMouth:
    """The cues as the bank measures mouths: lip gap and width over face width, lips closed or not.

    Full openness is `open_gap`: speech uses the mouths the person has; footage without open mouths (a photo,
    a silent closed-mouth video) keeps the warp's own scale, and the warp opens it.
    """
    bank = analysis.bank
    openness = np.minimum(state.cues.openness * state.intensity, _MAX_OPENNESS)
    shape = state.cues.shape
    usual_width = float(np.median(bank.width))
    gap = openness * open_gap(bank, settings)
    if talking(bank, settings):
        # No wider than the person's own widest mouths: beyond them the warp would open a painted cavity, darker
        # and with fewer teeth than the person's own.
        gap = np.minimum(gap, float(np.percentile(bank.gap, 99)))
    width = usual_width * (1 - settings.round_strength * np.maximum(-shape, 0)
                           + settings.spread_strength * np.maximum(shape, 0))
    frames = len(openness)
    entry_of_frame = np.full(int(max(bank.frames.max(), shown.max())) + 1, -1, np.int64)
    entry_of_frame[bank.frames] = np.arange(len(bank))
    turns = np.array([np.nan if points is None else mouthbank.head_turn(points) for points in analysis.landmarks])
    return WantedMouth(gap=gap.astype(np.float32), width=width.astype(np.float32),
                       closed=(state.cues.closed | (openness <= 0))[:frames], turn=turns[shown[:frames]],
                       own=entry_of_frame[shown[:frames]])


def render_mouth(frame: np.ndarray, points: np.ndarray, openness: float, shape: float, state: MeshWarpState,
                 settings: MeshWarpConfig) -> None:
    """Moves the mouth in `frame` (in place) to the given openness (0..1+) and shape (-1 round .. 1 spread)."""
    mouth = MouthFrame.of(points)
    local = mouth.local(points.astype(np.float64))
    width_ratio = 2 * mouth.scale / max(lm.face_size(points), 1.0)
    state.width_reference = width_ratio if state.width_reference is None else (
        0.98 * state.width_reference + 0.02 * width_ratio)
    target = plan_mouth(local, openness, shape, width_ratio / state.width_reference, settings)
    roi = region_of_interest(mouth, local, frame.shape)
    if roi is None:
        return
    warp_region(frame, mouth, target, roi, state)
    if target.closed:
        fill_closed_seam(frame, mouth, target, roi)


def plan_mouth(local: np.ndarray, openness: float, shape: float, width_now: float,
                 settings: MeshWarpConfig) -> MouthTarget:
    """Control points of both fields for the wanted mouth, given the input's own mouth (`local` landmarks)."""
    inner_upper, inner_lower = local[list(lm.INNER_UPPER)], local[list(lm.INNER_LOWER)]
    corners_u = inner_upper[[0, -1], 0]
    middle, half = corners_u.mean(), max((corners_u[1] - corners_u[0]) / 2, 0.2)
    profile = np.sqrt(np.clip(1 - ((inner_upper[:, 0] - middle) / half) ** 2, 0, 1))
    # Closed lips press together slightly, so they meet along a line rather than just touching.
    wanted_gap = (2 * settings.max_open_ratio * openness - _LIP_PRESS * max(0.0, 1 - openness / 0.1)) * profile
    source_gap = np.maximum(inner_lower[:, 1] - inner_upper[:, 1], 0)
    # On an open input the mesh puts the inner upper lip a little low, on the teeth; treating the lip edge as
    # slightly higher makes closed lips meet on lip tissue instead of leaving a line of teeth between them.
    tuck = _TEETH_TUCK * profile * np.clip(source_gap.max() / 0.1, 0, 1)
    measured_upper = inner_upper
    inner_upper = inner_upper - np.stack([np.zeros_like(tuck), tuck], axis=1)
    source_gap = source_gap + tuck
    change = wanted_gap - source_gap
    share = settings.upper_lip_share
    # Rounded vowels narrow the mouth, spread ones widen it, relative to this face's usual width.
    wanted_width = 1 - settings.round_strength * max(-shape, 0) + settings.spread_strength * max(shape, 0)
    widen = float(np.clip(wanted_width / width_now, 0.8, 1.2)) - 1

    def moved(source: np.ndarray, lip_share: float) -> tuple[np.ndarray, np.ndarray]:
        vertical = np.interp(source[:, 0], inner_upper[:, 0], change) * lip_share
        shift = np.stack([widen * (source[:, 0] - middle), vertical], axis=1)
        return source + shift, shift

    upper_inner_dest, upper_inner_shift = moved(inner_upper, -share)
    lower_inner_dest, lower_inner_shift = moved(inner_lower, 1 - share)
    upper_outer_dest, upper_outer_shift = moved(local[list(_OUTER_UPPER_MID)], -share)
    lower_outer_dest, lower_outer_shift = moved(local[list(_OUTER_LOWER_MID)], 1 - share)
    corners_dest, corners_shift = moved(local[[lm.MOUTH_LEFT, lm.MOUTH_RIGHT]], 0.0)

    jaw_source, jaw_shift = move_jaw(local, (1 - share) * float(change[len(change) // 2]), settings.jaw_follow)
    upper_points = np.concatenate([upper_inner_dest, upper_outer_dest, corners_dest])
    upper_shift = np.concatenate([upper_inner_shift, upper_outer_shift, corners_shift])
    lower_points = np.concatenate([lower_inner_dest, lower_outer_dest, corners_dest, jaw_source + jaw_shift])
    lower_shift = np.concatenate([lower_inner_shift, lower_outer_shift, corners_shift, jaw_shift])
    return MouthTarget(upper_points=upper_points, upper_shift=-upper_shift, lower_points=lower_points,
                       lower_shift=-lower_shift, anchors=np.concatenate([local[list(_ANCHORS)], boundary_ring(local)]),
                       inner_upper=upper_inner_dest, inner_lower=lower_inner_dest,
                       source_upper=measured_upper, source_lower=inner_lower,
                       teeth=float(np.clip((openness - settings.teeth_from) / 0.25, 0, 1)),
                       closed=bool(wanted_gap.max() <= 0),
                       nose_v=float(local[lm.NOSE_TIP, 1]),
                       lip_top_v=float(max(local[list(lm.OUTER_UPPER), 1].min(), local[lm.NOSE_TIP, 1] + 0.1)))


def move_jaw(local: np.ndarray, lip_drop: float, follow: float) -> tuple[np.ndarray, np.ndarray]:
    """Jaw and chin control points and their shifts: the chin follows the lower lip, the jaw angles barely.

    Lips close over teeth mostly by themselves, so the jaw rises only half as much as it drops.
    """
    drop = lip_drop * follow * (1.0 if lip_drop > 0 else 0.5)
    chin_v = max(local[lm.CHIN, 1], 0.5)
    source = local[list(_LOWER_JAW + _CHIN_SKIN)]
    shift = np.stack([np.zeros(len(source)), drop * np.clip(source[:, 1] / chin_v, 0, 1)], axis=1)
    return source, shift


def boundary_ring(local: np.ndarray) -> np.ndarray:
    """Fixed points around the lower face: under the jaw line, beside the cheeks, and under the nose."""
    jaw = local[list(lm.JAW)]
    centre = np.array([0.0, local[lm.NOSE_TIP, 1] * 0.3])
    outward = jaw - centre
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-6)
    below_jaw = jaw + outward * 0.9
    nose = local[lm.NOSE_TIP]
    top = np.stack([np.linspace(jaw[0, 0], jaw[-1, 0], 7), np.full(7, nose[1])], axis=1)
    return np.concatenate([below_jaw, top])


def region_of_interest(mouth: MouthFrame, local: np.ndarray, shape: tuple[int, ...]) -> Box | None:
    """Pixel box (x0, y0, x1, y1) holding everything that may move: jaw, chin, lips, up to the nose."""
    outline = np.concatenate([boundary_ring(local), local[list(lm.JAW)]])
    corners = mouth.pixels(outline)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    height, width = shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def shepard_fields(grid: np.ndarray, target: MouthTarget) -> tuple[np.ndarray, np.ndarray]:
    """The upper and lower displacement fields at `grid` (..., 2): Gaussian-weighted averages of the control
    points' shifts, the anchors counting as zero shifts in both. Smooth, and never overshoot.
    """
    flat = grid.reshape(-1, 2).astype(np.float32)
    points = np.concatenate([target.upper_points, target.lower_points, target.anchors]).astype(np.float32)
    distances = (flat**2).sum(axis=1)[:, None] + (points**2).sum(axis=1)[None, :] - 2 * flat @ points.T
    weights = np.exp(np.minimum(distances, 50.0) * np.float32(-0.5 / _SIGMA**2)) + np.float32(1e-12)
    upper_count, lower_count = len(target.upper_points), len(target.lower_points)
    upper_weights, lower_weights = weights[:, :upper_count], weights[:, upper_count:upper_count + lower_count]
    still = weights[:, upper_count + lower_count:].sum(axis=1, keepdims=True)
    upper = upper_weights @ target.upper_shift.astype(np.float32) / (upper_weights.sum(axis=1, keepdims=True) + still)
    lower = lower_weights @ target.lower_shift.astype(np.float32) / (lower_weights.sum(axis=1, keepdims=True) + still)
    shape = (*grid.shape[:-1], 2)
    return upper.reshape(shape), lower.reshape(shape)


def pixel_shift(mouth: MouthFrame, local_shift: np.ndarray) -> np.ndarray:
    """A displacement in mouth-local units as float32 pixels (x, y)."""
    axes = np.stack([mouth.axis_u, mouth.axis_v]) * mouth.scale
    return (local_shift @ axes).astype(np.float32)


def bounding_box(pixels: np.ndarray, margin: float, limit: Box) -> Box | None:
    """The pixel box around `pixels` grown by `margin`, clipped to `limit`; None when empty."""
    x0, y0 = np.floor(pixels.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(pixels.max(axis=0) + margin).astype(int) + 1
    box = (max(int(x0), limit[0]), max(int(y0), limit[1]), min(int(x1), limit[2]), min(int(y1), limit[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def local_grid(mouth: MouthFrame, box: Box) -> np.ndarray:
    """Mouth-local coordinates of every pixel in `box`, float32 (h, w, 2), stored by plane: grid[..., 0] (u) and
    grid[..., 1] (v) are each contiguous, so the per-pixel arithmetic on them runs at full speed."""
    xs = np.arange(box[0], box[2], dtype=np.float32)[None, :] - np.float32(mouth.centre[0])
    ys = np.arange(box[1], box[3], dtype=np.float32)[:, None] - np.float32(mouth.centre[1])
    inverse = np.float32(1.0 / mouth.scale)
    u = (xs * np.float32(mouth.axis_u[0]) + ys * np.float32(mouth.axis_u[1])) * inverse
    v = (xs * np.float32(mouth.axis_v[0]) + ys * np.float32(mouth.axis_v[1])) * inverse
    return np.stack([u, v]).transpose(1, 2, 0)


def warp_region(frame: np.ndarray, mouth: MouthFrame, target: MouthTarget, roi: Box, state: MeshWarpState) -> None:
    """Warps the lower face inside `roi` in place and paints the mouth opening.

    The two smooth fields are computed on a coarse grid and upsampled; only near the lips, where the split
    between them is sharp, is the split evaluated per pixel. Only the box around the cells that move by more
    than a fifth of a pixel is rewritten; everything outside it keeps its exact input values.
    """
    x0, y0, x1, y1 = roi
    step = max(3.0, _GRID_STEP * mouth.scale)
    columns, rows = max(2, round((x1 - x0) / step)), max(2, round((y1 - y0) / step))
    grid = CoarseGrid(roi, columns, rows)
    grid_pixels = grid.points()
    coarse = mouth.local(grid_pixels)
    # The fields fade out towards the nose tip, so nothing above it moves at all.
    fade = np.clip((coarse[..., 1:] - target.nose_v) / (0.6 * (target.lip_top_v - target.nose_v)), 0, 1)
    upper_field, lower_field = shepard_fields(coarse, target)
    upper, lower = pixel_shift(mouth, upper_field * fade), pixel_shift(mouth, lower_field * fade)
    weight = split_weight(coarse[..., 0], coarse[..., 1], target)[..., None]
    coarse_shift = upper + (lower - upper) * weight

    lips = mouth.pixels(np.concatenate([target.inner_upper, target.inner_lower, target.source_upper,
                                        target.source_lower]))
    lip_box = bounding_box(lips, 0.3 * mouth.scale + 2, roi)
    moving = np.argwhere(np.abs(coarse_shift).max(axis=-1) > _UNCHANGED_BELOW_PX)
    if len(moving) == 0 or lip_box is None:
        return
    lip_corners = np.array([lip_box[:2], np.subtract(lip_box[2:], 1)], np.float64)
    box = bounding_box(np.concatenate([grid_pixels[moving[:, 0], moving[:, 1]], lip_corners]), step + 1, roi)
    assert box is not None
    bx0, by0, bx1, by1 = box
    # The maps are kept by plane (x, y), each a contiguous 2-D array: numpy's arithmetic on interleaved pairs
    # runs element pair by pair, several times slower.
    map_x, map_y = (grid.upsample_whole(np.ascontiguousarray(coarse_shift[..., axis]))[by0 - y0:by1 - y0,
                                                                                      bx0 - x0:bx1 - x0]
                    for axis in (0, 1))
    lx0, ly0, lx1, ly1 = lip_box
    near_lips = (slice(ly0 - by0, ly1 - by0), slice(lx0 - bx0, lx1 - bx0))
    pixels = local_grid(mouth, lip_box)
    sharp = split_weight(pixels[..., 0], pixels[..., 1], target)
    upper_x, upper_y, lower_x, lower_y = cv2.split(grid.upsample(np.concatenate([upper, lower], axis=-1), lip_box))
    map_x[near_lips] = upper_x + (lower_x - upper_x) * sharp
    map_y[near_lips] = upper_y + (lower_y - upper_y) * sharp

    map_x += np.arange(bx0, bx1, dtype=np.float32)[None, :]
    map_y += np.arange(by0, by1, dtype=np.float32)[:, None]
    warped = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cavity_box = bounding_box(mouth.pixels(np.concatenate([target.inner_upper, target.inner_lower])), 2, box)
    if cavity_box is not None:
        paint_opening(frame, warped, mouth, target, cavity_box, box, state)
    frame[by0:by1, bx0:bx1] = warped


def fill_closed_seam(frame: np.ndarray, mouth: MouthFrame, target: MouthTarget, box: Box) -> None:
    """Lip, not teeth, where closed lips meet (in place).

    Closing an open input pulls the lips together from both sides, but the mesh puts the inner lip edges on the
    teeth, so a line of teeth, or a slit of the mouth's inside, can remain between them. The narrow band along
    the meeting line, and near it any pixels that look like teeth (brighter than the lips and far less
    saturated), are filled from the lip texture on both sides (inpainting), then a soft crease is drawn where
    the lips meet, as on a real closed mouth. Lips so closed also read as closed to a face mesh: a slit or a
    line of teeth reads as parted lips, to the mesh and to a viewer.
    """
    line = (target.inner_upper + target.inner_lower) / 2
    reach = np.array([0.0, 0.35])
    seam_box = bounding_box(mouth.pixels(np.concatenate([line - reach, line + reach])), 3, box)
    if seam_box is None:
        return
    grid = local_grid(mouth, seam_box)
    middle = np.interp(grid[..., 0], line[:, 0], line[:, 1]).astype(np.float32)
    inside = (grid[..., 0] > line[0, 0]) & (grid[..., 0] < line[-1, 0])
    offset = np.abs(grid[..., 1] - middle)
    near = (offset < 0.22) & inside
    x0, y0, x1, y1 = seam_box
    region = frame[y0:y1, x0:x1]
    hsv = cv2.cvtColor(region, cv2.COLOR_BGR2HSV)
    lips = near & (hsv[..., 1] > np.percentile(hsv[..., 1][near], 60)) if near.any() else near
    if lips.sum() < 8:
        return
    lip_saturation, lip_value = np.median(hsv[..., 1][lips]), np.median(hsv[..., 2][lips])
    teeth = near & (hsv[..., 1] < 0.6 * lip_saturation) & (hsv[..., 2] > lip_value + 10)
    grown = cv2.dilate(teeth.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(mouth.scale / 30)))
    pixel = 1.0 / mouth.scale  # one pixel in mouth-local units
    seam = (offset < max(_SEAM_REACH, 1.5 * pixel)) & inside
    holes = ((grown.astype(bool) & near) | seam).astype(np.uint8)
    # Only around the holes: inpainting costs by the area it looks at.
    ys, xs = np.nonzero(holes)
    top, left = max(int(ys.min()) - 4, 0), max(int(xs.min()) - 4, 0)
    bottom, right = int(ys.max()) + 5, int(xs.max()) + 5
    patch = region[top:bottom, left:right]
    patch[:] = cv2.inpaint(patch, holes[top:bottom, left:right], 3, cv2.INPAINT_TELEA)
    # The crease: a pixel wide, strongest mid-mouth, fading out at the corners.
    across = (grid[..., 0] - (line[0, 0] + line[-1, 0]) / 2) / max((line[-1, 0] - line[0, 0]) / 2, 1e-3)
    crease = np.clip(1 - offset / pixel, 0, 1) * np.clip(1 - np.abs(across), 0, 1) ** 0.5 * inside
    region[:] = np.clip(region * (1 - _CREASE_DEPTH * crease[..., None]) + 0.5, 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class CoarseGrid:
    """A grid of columns x rows sample points over a pixel box, placed as cv2.resize places them."""

    box: Box
    columns: int
    rows: int

    def points(self) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        xs = x0 + (np.arange(self.columns) + 0.5) * (x1 - x0) / self.columns - 0.5
        ys = y0 + (np.arange(self.rows) + 0.5) * (y1 - y0) / self.rows - 0.5
        return np.stack(np.meshgrid(xs, ys), axis=-1)

    def upsample(self, values: np.ndarray, box: Box) -> np.ndarray:
        """Bilinear values at every pixel of `box` (inside self.box), computed for that box only."""
        x0, y0, x1, y1 = self.box
        scale_x, scale_y = self.columns / (x1 - x0), self.rows / (y1 - y0)
        to_grid = np.array([[scale_x, 0, (box[0] - x0 + 0.5) * scale_x - 0.5],
                            [0, scale_y, (box[1] - y0 + 0.5) * scale_y - 0.5]], np.float32)
        size = (box[2] - box[0], box[3] - box[1])
        return cv2.warpAffine(values, to_grid, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def upsample_whole(self, values: np.ndarray) -> np.ndarray:
        """`upsample` over all of self.box: a plain resize, a third of the cost of the warp `upsample` needs."""
        x0, y0, x1, y1 = self.box
        return cv2.resize(values, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def paint_opening(frame: np.ndarray, warped: np.ndarray, mouth: MouthFrame, target: MouthTarget,
                  cavity_box: Box, box: Box, state: MeshWarpState) -> None:
    """Blends the mouth interior into `warped` (which covers `box`), in place."""
    grid = local_grid(mouth, cavity_box)
    lines = lip_lines(grid[..., 0], target)
    cavity_alpha = cavity_mask(grid, lines, target, mouth.scale)
    if not cavity_alpha.any():
        return
    region = (slice(cavity_box[1] - box[1], cavity_box[3] - box[1]),
              slice(cavity_box[0] - box[0], cavity_box[2] - box[0]))
    interior = mouth_interior(frame, mouth, target, grid, lines, state)
    warped[region] = compositing.blend(warped[region], interior, cavity_alpha)


def lip_lines(pixel_u: np.ndarray, target: MouthTarget) -> tuple[np.ndarray, np.ndarray]:
    """The destination inner upper and lower lip heights (v) under each pixel's u, flat beyond the corners."""
    upper = np.interp(pixel_u, target.inner_upper[:, 0], target.inner_upper[:, 1]).astype(np.float32)
    lower = np.interp(pixel_u, target.inner_lower[:, 0], target.inner_lower[:, 1]).astype(np.float32)
    return upper, lower


def split_weight(pixel_u: np.ndarray, pixel_v: np.ndarray, target: MouthTarget) -> np.ndarray:
    """How much each pixel follows the lower (jaw) field: a sharp step between the lips, soft beyond the corners."""
    upper, lower = lip_lines(pixel_u, target)
    split = (upper + lower) / 2
    left, right = target.inner_upper[0, 0], target.inner_upper[-1, 0]
    beyond = np.maximum(np.maximum(left - pixel_u, pixel_u - right), 0)
    softness = 0.025 + 0.8 * beyond
    return (1 / (1 + np.exp(-np.clip((pixel_v - split) / softness, -30, 30)))).astype(np.float32)


def cavity_mask(grid: np.ndarray, lines: tuple[np.ndarray, np.ndarray], target: MouthTarget,
                scale: float) -> np.ndarray:
    """Soft alpha of the open mouth at the destination (between the inner `lines`) over `grid`.

    Where the opening is thinner than a few pixels (near the corners) the lips' own pixels show instead,
    so no dark specks appear where the lips almost meet.
    """
    pixel_u, pixel_v = grid[..., 0], grid[..., 1]
    upper, lower = lines
    left, right = target.inner_upper[0, 0], target.inner_upper[-1, 0]
    inside = (pixel_v > upper) & (pixel_v < lower) & (pixel_u > left) & (pixel_u < right)
    if not inside.any():
        return np.zeros(pixel_u.shape, np.float32)
    thickness = np.clip(((lower - upper) * scale - 1.0) / 3.0, 0, 1).astype(np.float32)
    return compositing.feather(inside.astype(np.float32) * thickness, 0.8)


def mouth_interior(frame: np.ndarray, mouth: MouthFrame, target: MouthTarget, grid: np.ndarray,
                   lines: tuple[np.ndarray, np.ndarray], state: MeshWarpState) -> np.ndarray:
    """The open mouth over `grid` (mouth-local coordinates of its pixels), between the inner lip `lines`:
    a cavity shaded from the face's own lip colour, under what the input itself showed between its lips.
    """
    pixel_u, pixel_v = grid[..., 0], grid[..., 1]
    upper, lower = lines
    depth = np.clip((pixel_v - upper) / np.maximum(lower - upper, 1e-3), 0, 1)
    left, right = target.inner_upper[0, 0], target.inner_upper[-1, 0]
    across = np.clip((pixel_u - (left + right) / 2) / max((right - left) / 2, 1e-3), -1, 1)

    donor = state.donor
    own: tuple[np.ndarray, np.ndarray] | None = None
    if donor is None:
        colour = interior_colour(frame, mouth, target, state)
    else:
        # With the person's own open mouth at hand, what it lacks (a wider opening than its own) darkens towards
        # its own shadow, not towards a painted one.
        gain = donor_gain(frame, target, mouth, donor, state)
        colour = donor.shadow * gain
        own = donor_interior(donor, mouth, target, grid, lines, gain)
    shade = 1.0 - 0.45 * (1 - depth_curve(depth)) * (1 - across**2)
    interior = colour[None, None, :] * shade[..., None]
    # A hint of tongue low in the mouth; kept dark so the lower lip's edge stays unmistakable. Under the person's
    # own teeth (which mark the lower lip's edge) the tongue fills the lower half, as in a real open mouth.
    rises, reach = (0.7, 0.3) if donor is None else (0.45, 0.6)
    tongue = np.clip((depth - rises) / (1 - rises), 0, 1)[..., None] * reach
    interior = interior + (colour * 1.6 - interior) * tongue
    if own is not None:
        interior = interior + (own[0] - interior) * own[1][..., None]
    if np.max(target.source_lower[:, 1] - target.source_upper[:, 1]) * mouth.scale >= 1.0:
        kept, kept_weight = keep_input_interior(frame, mouth, target, grid, lines)
        interior = interior + (kept.astype(np.float32) - interior) * kept_weight[..., None]
    if donor is None:
        # The lips' brightness tells how brightly the teeth would be lit.
        lighting = float(np.clip(colour.mean() / (_INTERIOR_DARKNESS * 140), 0.5, 1.2))
        interior = add_teeth(interior, depth, across, lower - upper, target.teeth, lighting)
    return cv2.GaussianBlur(np.clip(interior, 0, 255).astype(np.uint8), (3, 3), 0.8)


def keep_input_interior(frame: np.ndarray, mouth: MouthFrame, target: MouthTarget, grid: np.ndarray,
                        lines: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the input showed between its lips, attached to the lip it belongs to, and where it applies.

    Upper teeth move with the upper lip, lower teeth with the jaw; the rest of a wider opening is left to
    the synthesised cavity (weight 0).
    """
    pixel_u, pixel_v = grid[..., 0], grid[..., 1]
    upper, lower = lines
    source_upper = np.interp(pixel_u, target.source_upper[:, 0], target.source_upper[:, 1]).astype(np.float32)
    source_lower = np.interp(pixel_u, target.source_lower[:, 0], target.source_lower[:, 1]).astype(np.float32)
    source_gap = np.maximum(source_lower - source_upper, 0)
    from_top, from_bottom = pixel_v - upper, lower - pixel_v
    # Upper teeth show more than lower ones: the upper lip keeps the larger share of what was visible.
    upper_reach, lower_reach = _UPPER_INTERIOR_SHARE * source_gap, (1 - _UPPER_INTERIOR_SHARE) * source_gap
    from_upper = from_top / np.maximum(upper_reach, 1e-3) <= from_bottom / np.maximum(lower_reach, 1e-3)
    source_v = np.where(from_upper, source_upper + from_top, source_lower - from_bottom)
    kept = cv2.remap(frame, *mouth.pixel_maps(pixel_u, source_v), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    overshoot = np.where(from_upper, from_top - upper_reach, from_bottom - lower_reach)
    return kept, np.clip(-overshoot / 0.06, 0, 1).astype(np.float32)


def teeth_split(image: np.ndarray, mouth: MouthFrame, upper: np.ndarray, lower: np.ndarray) -> float:
    """Where an open mouth's upper part ends (share of its opening, from the top): across the middle of the
    mouth, the darkest row between brighter ones, the line where upper and lower teeth meet or the dark between
    them. Above it the upper teeth hang from the upper lip, below it the lower teeth and tongue ride on the jaw."""
    across = np.linspace(0.3, 0.7, 9)
    down = np.linspace(0.0, 1.0, 41)
    u = upper[0, 0] + across * (upper[-1, 0] - upper[0, 0])
    top, bottom = np.interp(u, upper[:, 0], upper[:, 1]), np.interp(u, lower[:, 0], lower[:, 1])
    v = top[None, :] + down[:, None] * (bottom - top)[None, :]
    sample = mouth.pixels(np.stack([np.broadcast_to(u, v.shape), v], axis=-1)).astype(np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    profile = np.median(cv2.remap(grey, sample[..., 0], sample[..., 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE).astype(np.float32), axis=1)
    profile = np.convolve(profile, np.ones(3) / 3, mode="same")
    # A dark row between brighter ones above and below it (not the lips' own shaded edges); none (upper teeth
    # resting on the lower lip, as in a smile): everything but the lower lip's edge is upper teeth.
    valley = np.minimum(np.maximum.accumulate(profile), np.maximum.accumulate(profile[::-1])[::-1]) - profile
    valley[(down < 0.2) | (down > 0.85)] = -1
    best = int(np.argmax(valley))
    return float(down[best]) if valley[best] >= 0.15 * float(profile.max()) else 0.85


def donor_interior(donor: InteriorDonor, mouth: MouthFrame, target: MouthTarget, grid: np.ndarray,
                   lines: tuple[np.ndarray, np.ndarray], gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The donor's interior at `grid` (float32 BGR, colour-matched by `gain`), and where it applies.

    Placed as a real mouth opens: across, corner to corner; down, its upper part (upper teeth) hangs from the
    upper lip and its lower part (lower teeth, tongue) rises from the lower lip, each at its own size in the
    face's units (teeth are not stretched with the opening), split at its darkest row (teeth_split). Where the
    opening is wider than the donor's own, the gap between the two parts is left to the shadow beneath (weight
    falling to 0 over _DONOR_FADE).
    """
    pixel_u, pixel_v = grid[..., 0], grid[..., 1]
    upper, lower = lines
    left, right = target.inner_upper[0, 0], target.inner_upper[-1, 0]
    donor_left, donor_right = donor.upper[0, 0], donor.upper[-1, 0]
    donor_u = donor_left + (pixel_u - left) / max(right - left, 1e-3) * (donor_right - donor_left)
    donor_upper = np.interp(donor_u, donor.upper[:, 0], donor.upper[:, 1]).astype(np.float32)
    donor_lower = np.interp(donor_u, donor.lower[:, 0], donor.lower[:, 1]).astype(np.float32)
    donor_gap = np.maximum(donor_lower - donor_upper, 0)
    # Mouth-local units are half the mouth's width: the same depth in the face is this many of the donor's.
    to_donor = np.float32((mouth.scale / mouth.face) / (donor.mouth.scale / donor.mouth.face))
    from_top, from_bottom = (pixel_v - upper) * to_donor, (lower - pixel_v) * to_donor
    upper_reach, lower_reach = donor.split * donor_gap, (1 - donor.split) * donor_gap
    from_upper = from_top / np.maximum(upper_reach, 1e-3) <= from_bottom / np.maximum(lower_reach, 1e-3)
    donor_v = np.where(from_upper, donor_upper + np.minimum(from_top, upper_reach),
                       donor_lower - np.minimum(from_bottom, lower_reach))
    own = cv2.remap(donor.image, *donor.mouth.pixel_maps(donor_u, donor_v), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    beyond = np.where(from_upper, from_top - upper_reach, from_bottom - lower_reach)
    weight = np.clip(1 - beyond / _DONOR_FADE, 0, 1).astype(np.float32)
    return own.astype(np.float32) * gain.astype(np.float32), weight


def donor_gain(frame: np.ndarray, target: MouthTarget, mouth: MouthFrame, donor: InteriorDonor,
               state: MeshWarpState) -> np.ndarray:
    """Per-channel gain that makes the donor's skin beside the mouth the colour of this frame's (the interior is
    lit as the face around it is); averaged over time so the interior does not flicker."""
    measured = skin_colour(frame, mouth, target.anchors[[_ANCHORS.index(point) for point in _SKIN]])
    gain = np.clip(measured / np.maximum(donor.skin, 1.0), 0.6, 1.6).astype(np.float32)
    state.donor_gain = gain if state.donor_gain is None else 0.9 * state.donor_gain + 0.1 * gain
    return state.donor_gain


def skin_colour(image: np.ndarray, mouth: MouthFrame, spots: np.ndarray) -> np.ndarray:
    """Median colour (BGR) of small patches (3 % of the face wide) around `spots` (mouth-local)."""
    radius = max(1, round(0.03 * mouth.face))
    height, width = image.shape[:2]
    patches = []
    for x, y in np.round(mouth.pixels(spots)).astype(int):
        x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        patches.append(image[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1].reshape(-1, 3))
    return np.median(np.concatenate(patches).astype(np.float32), axis=0)


def lip_colour(frame: np.ndarray, mouth: MouthFrame, inner_upper: np.ndarray, inner_lower: np.ndarray) -> np.ndarray:
    """Median colour (BGR) of the lips along their inner contour (mouth-local), a little outside it: the lip
    itself, not the opening."""
    spots = np.round(mouth.pixels(np.concatenate([inner_upper - np.array([0.0, 0.12]),
                                                  inner_lower + np.array([0.0, 0.12])]))).astype(int)
    spots = np.clip(spots, 0, [frame.shape[1] - 1, frame.shape[0] - 1])
    return np.median(frame[spots[:, 1], spots[:, 0]].astype(np.float32), axis=0)


def depth_curve(depth: np.ndarray) -> np.ndarray:
    """1 at the lips, 0 in the middle of the opening: light falls off into the mouth."""
    return np.abs(2 * depth - 1) ** 1.5


def interior_colour(frame: np.ndarray, mouth: MouthFrame, target: MouthTarget, state: MeshWarpState) -> np.ndarray:
    """Dark mouth colour of this face: its own lip colour in deep shadow (a mouth interior is the lips' tissue).

    Averaged over time, so the synthesised interior does not flicker.
    """
    colour = lip_colour(frame, mouth, target.source_upper, target.source_lower) * _INTERIOR_DARKNESS
    state.interior = colour if state.interior is None else 0.9 * state.interior + 0.1 * colour
    return state.interior


def add_teeth(interior: np.ndarray, depth: np.ndarray, across: np.ndarray, gap: np.ndarray, visible: float,
              lighting: float) -> np.ndarray:
    """A soft band of upper teeth under the upper lip on wide openings, lit like the face.

    Where the input's own teeth already show there (as bright as the band), they are left as they are.
    """
    if visible <= 0:
        return interior
    teeth = np.array([190.0, 206.0, 224.0], np.float32) * lighting
    # Six teeth across the opening: 1 at a tooth's middle, 0 between two teeth.
    tooth = np.abs(np.sin(np.pi * 3 * (across + 1)))
    height = np.minimum(_TEETH_HEIGHT / np.maximum(gap, 1e-3), 0.45) * (0.8 + 0.2 * np.sqrt(tooth))
    band = np.clip((height - depth) / np.maximum(height * 0.3, 1e-3), 0, 1) * np.clip(1 - np.abs(across) ** 3, 0, 1)
    darker = np.clip((teeth.mean() - interior.mean(axis=-1)) / 60, 0, 1)
    alpha = (band * darker * visible * 0.85)[..., None]
    shade = ((1 - 0.35 * np.abs(across)) * (0.82 + 0.18 * np.sqrt(tooth)))[..., None]
    return interior + (teeth * shade - interior) * alpha
