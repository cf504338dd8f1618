"""ARKit-named blendshape coefficients in [0, 1] from the 3DMM fit: the 52 names of Apple's ``ARFaceAnchor``, for
avatar tools (VSeeFace's "perfect sync", Live Link Face importers, rigs with ARKit shape keys).

Where the numbers come from (no learned model, one table):

1. **Measures** (``SIGNALS``, :func:`raw_signals`): distances on the 68 landmarks in *model space* - the 3DMM shape
   ``u + W_shp a + W_exp e + W_ext x`` before the pose is applied (y up, x toward the subject's left, micrometres) -
   so a turned or tilted head reads the same as a frontal one. The extended expression (``model.expression_ext``:
   eyelids, mouth corners, jaw) and the 10 PCA expression coefficients both move these points. Every length is over
   the face's size, the distance between the outer eye corners (36-45, ~9 cm).
2. **Neutral**: the same measures of the face with its expression set to 0 (its identity alone: the prior), plus an
   offset each track learns over its first seconds and keeps adapting (``tracking.blendshape_tracker.NeutralAdapter``):
   a resting face reads ~0 whoever it is. Photos and tracks without history use the prior alone.
3. **Activations** (:func:`activations`): each measure's change from the neutral in its own full-scale unit
   (``SIGNAL_UNITS``), e.g. a lip gap of 0.30 face sizes = 1 = a wide-open mouth; the eyes are relative: closure
   ``1 - aspect / neutral aspect`` (1 = lids touch).
4. **Table** (``TABLE``): each estimated ARKit name = a weighted sum of activations mapped linearly from
   ``[lo, hi]`` to ``[0, 1]`` and clipped (``lo`` is a dead zone that absorbs fit noise at rest, ``hi`` the full
   value), optionally times another coefficient or its complement (``gate``: a squint is not counted during a
   blink, a pucker becomes a funnel as the mouth opens).

Left and right are **the subject's own** (ARKit's convention): ``eyeBlinkLeft`` is the subject's left eye
(landmarks 42-47, on the image's right for a frontal face, what ``ext``'s ``eye_close_l`` names), so a mirrored
video swaps every ``...Left`` with its ``...Right``.

Names not in ``ESTIMATED`` (gaze, cheeks, nose, tongue, lip rolls...) are always 0: the 68 points do not see them.
Units and dead zones are set from the face's geometry (a wide-open mouth, a lid on the lid, a ~7 mm corner raise);
the corner/width compensation for the jaw (``JAW_CORNER_DROP``, ``JAW_WIDTH_GAIN``) is the slope of the corners and
the mouth width on the lip gap measured on the training videos (d11, s20, s29), not on the measurement videos; the
blink rows' ``lo``/``hi`` (0.10, 0.60) were chosen on six training videos against MediaPipe's per-eye closure once the
expression fit had its part slack (``arkit-v2``; ``arkit-v1`` had 0.20, 0.80: correlation 0.69/0.77 -> 0.76/0.76,
blink frames read >= 0.5 on 84% -> 97%, open frames <= 0.3 on 99.8% -> 98.5%, with mb05), and ``jawOpen`` has no
dead zone (was 0.05: its correlation with MediaPipe's mouth opening 0.54 -> 0.62 there; a closed mouth reads <= 0.07
in 95% of frames). ``arkit-v3``: a track's neutral lip gap and chin drop are its 20th percentile, not its median
(``NEUTRAL_QUANTILE``: a talker's median mouth is open); on the six training videos jawOpen's correlation went
0.62 -> 0.75 (mb05) and 0.64 -> 0.73 (damdnet), a closed mouth (MediaPipe's lowest fifth) reads <= 0.14 in 95% of
its frames. ``arkit-v4``: the blink rows' ``lo`` 0.10 -> 0.05, chosen on the six training videos with the third
session's expression network (the most correlation that keeps open frames <= 0.3 on >= 99% and blink frames >= 0.5
on >= 90%, both models, means over the videos): correlation with MediaPipe's closure 0.76/0.68 -> 0.78/0.72 (mb05),
0.75/0.71 -> 0.78/0.75 (damdnet), blink frames 88% -> 93% (mb05); lo 0 went further (0.82/0.76) but open frames fell
to 98.6% (mb05; s29 93.7%); on the validation videos s32 and EdMarkey the mean correlation went 0.69/0.70 ->
0.72/0.70 (mb05), 0.68/0.68 -> 0.71/0.68 (damdnet). ``arkit-v5``: the blink rows' dead zone is a soft knee
(``SOFT_KNEE``, softness 0.20, lo 0.10, the neutral still 0): under the hard clip 84-99% of open-eye frames read
exactly 0, so a lid lowered a little (a look down, a squint), which MediaPipe's closure follows, read nothing, and
the correlation with it was 0.78/0.72 where the landmarks' own eye aspect ratio reached 0.90-0.98. Chosen by
arkit-v4's rule on the six training videos (the most correlation with open frames <= 0.3 on >= 99% and blink
frames >= 0.5 on >= 90%, both models): 0.78/0.72 -> 0.81/0.75 (mb05), 0.78/0.75 -> 0.81/0.78 (damdnet). A knee
without the shift back to 0 went further (0.83/0.77) but rested at ~0.1. ``arkit-v6``: where the correlation still
went (replaying the tracker on the six training videos' tracks): the model-space eye aspect itself correlates 0.85-0.89
with MediaPipe's closure, the activation against the learned neutral 0.82-0.84, the coefficient 0.77-0.81: the clip at
the neutral cut the eyes' open range (an eye a little wider than the first seconds' median read a flat 0 where
MediaPipe's closure kept moving), and the lip gap likewise lost its closed end below the 20th percentile. So the eyes'
neutral is their 60th aspect percentile, the knee has softness 0.05 from lo 0.05 to hi 0.60 with no shift (the
neutral reads 0.03, wider eyes toward 0), the lip gap's and chin's neutral is their 10th percentile and jawOpen's lo
-0.05 (its neutral reads 0.05). Chosen on the six training videos by the number of the avatar issue's criteria met
per video and model (each blink correlation >= 0.8, blink frames >= 0.5 on 90%, open frames <= 0.3 on 98%; jawOpen
>= 0.85): eyes 34 -> 37 of 48, jawOpen 6 -> 8 of 12; means l/r 0.81/0.77 -> 0.83/0.78, blink frames 93% -> 96%,
open frames 99.5% -> 99.1%, jawOpen 0.82 -> 0.85; on the validation videos (s32, EdMarkey) 0.73/0.70 -> 0.76/0.72
and 0.86 -> 0.90 (figures with both models). A resting eye at 0.1 (no shift, softness 0.1) went further still (0.86/0.80
on training) but let open frames over 0.3 on d6 (97%), as did a slower adaptation (120 s).
``BLENDSHAPES_VERSION`` names this definition; outputs that carry the coefficients carry the version.
"""
from __future__ import annotations

from typing import Any

import numpy as np

BLENDSHAPES_VERSION = "arkit-v6"

# Apple's order (ARFaceAnchor.BlendShapeLocation, as its documentation groups them).
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight",
    "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
N_BLEND = len(ARKIT_NAMES)
INDEX = {n: i for i, n in enumerate(ARKIT_NAMES)}

# --- measures ----------------------------------------------------------------------------------------------------
# name -> full-scale unit (an activation of 1), in face sizes (|p36 - p45|) unless relative.
SIGNALS: tuple[str, ...] = ("eye_r", "eye_l", "lid_r", "lid_l", "gap", "jaw", "corner_r", "corner_l", "out_r",
                            "out_l", "mouth_x", "jaw_x", "brow_in", "brow_r", "brow_l", "brow_out_r", "brow_out_l")
N_SIGNALS = len(SIGNALS)
SIG = {n: i for i, n in enumerate(SIGNALS)}
SIGNAL_UNITS: dict[str, float] = {
    "eye_r": 1.0, "eye_l": 1.0,  # relative: closure = 1 - aspect / neutral aspect (1: lids touch)
    "lid_r": 0.03, "lid_l": 0.03,  # lower lid raised toward the eye's corner line by ~2.5 mm
    "gap": 0.30,  # inner lip gap (mean of 61-67, 62-66, 63-65): 0.30 face sizes ~ 2.7 cm = a wide-open mouth
    "jaw": 0.26,  # nose base (33) to chin (8): the chin drops 0.85 x the lip gap as the jaw opens the lips (ext's
    # jaw_open), so 0.85 x 0.30: jaw and lips agree, and mouthClose (jaw minus lips) reads a jaw open behind closed lips
    "corner_r": 0.08, "corner_l": 0.08,  # a mouth corner raised by ~7 mm (against the nose base)
    "out_r": 0.08, "out_l": 0.08,  # a mouth corner pulled ~7 mm away from the mouth's centre (mean of 48-67)
    "mouth_x": 0.06, "jaw_x": 0.06,  # the mouth / chin shifted sideways by ~5 mm (+: toward the subject's left)
    "brow_in": 0.06, "brow_r": 0.06, "brow_l": 0.06, "brow_out_r": 0.06, "brow_out_l": 0.06,  # brows ~5 mm
}
RELATIVE = ("eye_r", "eye_l")
# How far a track's learned neutral may stray from its identity's prior, in units (eyes: as a share of the prior
# aspect): someone who smiles through the first seconds does not become "neutral" at a full smile.
MAX_OFFSET: dict[str, float] = {n: 1.0 for n in SIGNALS} | {"eye_r": 0.35, "eye_l": 0.35, "gap": 0.5, "jaw": 0.5}
# Which quantile of a track's own measures is its neutral: the median, except where the rest position is an extreme
# of the range rather than its middle: lips are together at rest and only part during speech, so a talker's median
# lip gap (and chin drop) is an open mouth and would read jawOpen 0 on half the words; their neutral is a low
# quantile (chosen on the training videos, bench/RESULTS.md "The neutral mouth"; the 10th since arkit-v6). The eyes'
# neutral is a little wider than their median (the 60th percentile of the aspect): a resting eye that opens a little
# wider than usual still reads under its neutral, not clipped at it (arkit-v6).
NEUTRAL_QUANTILE: dict[str, float] = {n: 0.5 for n in SIGNALS} | {"gap": 0.1, "jaw": 0.1, "eye_r": 0.6, "eye_l": 0.6}
JAW_CORNER_DROP = 0.18  # the corners fall ~0.18 x the lip gap as the jaw opens (not a frown)
JAW_WIDTH_GAIN = 0.25  # each corner moves out ~0.25 x the lip gap as the jaw opens (not a stretch)

# --- the table ---------------------------------------------------------------------------------------------------
# (ARKit name, {activation: weight}, lo, hi, gate): value = clip((sum_k w_k a_k - lo) / (hi - lo), 0, 1), then
# times the gate: ("and", NAME) multiplies by that coefficient, ("not", NAME) by 1 - it (gates refer to rows above).
# Activations > 0: eye closing, lower lid up, lips apart, jaw down, corner up, corner out, mouth/chin toward the
# subject's left, brows up.
TABLE: tuple[tuple[str, dict[str, float], float, float, tuple[str, str] | None], ...] = (
    ("eyeBlinkLeft", {"eye_l": 1.0}, 0.05, 0.60, None),
    ("eyeBlinkRight", {"eye_r": 1.0}, 0.05, 0.60, None),
    ("eyeWideLeft", {"eye_l": -1.0}, 0.08, 0.40, None),
    ("eyeWideRight", {"eye_r": -1.0}, 0.08, 0.40, None),
    ("eyeSquintLeft", {"lid_l": 1.0}, 0.15, 1.0, ("not", "eyeBlinkLeft")),
    ("eyeSquintRight", {"lid_r": 1.0}, 0.15, 1.0, ("not", "eyeBlinkRight")),
    ("jawOpen", {"gap": 1.0}, -0.05, 1.0, None),
    ("jawLeft", {"jaw_x": 1.0}, 0.15, 1.0, None),
    ("jawRight", {"jaw_x": -1.0}, 0.15, 1.0, None),
    ("mouthClose", {"jaw": 1.0, "gap": -1.0}, 0.15, 0.80, None),
    ("mouthSmileLeft", {"corner_l": 1.0}, 0.15, 1.0, None),
    ("mouthSmileRight", {"corner_r": 1.0}, 0.15, 1.0, None),
    ("mouthFrownLeft", {"corner_l": -1.0}, 0.15, 1.0, None),
    ("mouthFrownRight", {"corner_r": -1.0}, 0.15, 1.0, None),
    ("mouthStretchLeft", {"out_l": 1.0}, 0.15, 1.0, None),
    ("mouthStretchRight", {"out_r": 1.0}, 0.15, 1.0, None),
    ("mouthLeft", {"mouth_x": 1.0}, 0.15, 1.0, None),
    ("mouthRight", {"mouth_x": -1.0}, 0.15, 1.0, None),
    ("mouthPucker", {"out_l": -0.5, "out_r": -0.5}, 0.15, 1.0, ("not", "jawOpen")),
    ("mouthFunnel", {"out_l": -0.5, "out_r": -0.5}, 0.15, 1.0, ("and", "jawOpen")),
    ("browInnerUp", {"brow_in": 1.0}, 0.15, 1.0, None),
    ("browDownLeft", {"brow_l": -1.0}, 0.15, 1.0, None),
    ("browDownRight", {"brow_r": -1.0}, 0.15, 1.0, None),
    ("browOuterUpLeft", {"brow_out_l": 1.0}, 0.15, 1.0, None),
    ("browOuterUpRight", {"brow_out_r": 1.0}, 0.15, 1.0, None),
)
# Rows with a soft knee instead of the clip's hard corner: value = min(s * softplus((x - lo) / s) / (hi - lo), 1) with
# x the weighted activation and s the softness: the neutral reads s softplus(-lo / s) / (hi - lo) (0.03 for the
# eyes), a lid lowered a little (a look down, a squint) a little more, an eye opened wider than the neutral less,
# toward 0, instead of a flat 0 up to lo (bench/RESULTS.md, arkit-v6).
SOFT_KNEE: dict[str, float] = {"eyeBlinkLeft": 0.05, "eyeBlinkRight": 0.05}
ESTIMATED: tuple[str, ...] = tuple(n for n in ARKIT_NAMES if n in {row[0] for row in TABLE})
ESTIMATED_MASK = np.array([n in ESTIMATED for n in ARKIT_NAMES])


def _compile() -> tuple[np.ndarray, ...]:
    weights = np.zeros((N_SIGNALS, len(TABLE)))
    lo = np.array([r[2] for r in TABLE])
    hi = np.array([r[3] for r in TABLE])
    cols = np.array([INDEX[r[0]] for r in TABLE])
    for j, (name, combo, _, _, gate) in enumerate(TABLE):
        for sig, w in combo.items():
            weights[SIG[sig], j] = w
        if gate is not None:
            if gate[0] not in ("and", "not") or gate[1] not in {r[0] for r in TABLE[:j]}:
                raise ValueError(f"bad gate of {name}: {gate}")
    return weights, lo, hi, cols


_W, _LO, _HI, _COLS = _compile()
_SOFT = np.array([SOFT_KNEE.get(r[0], 0.0) for r in TABLE])
_SOFT_ROWS = np.flatnonzero(_SOFT > 0)
_SOFT_S, _SOFT_SPAN = _SOFT[_SOFT_ROWS], (_HI - _LO)[_SOFT_ROWS]
_GATES = [(j, INDEX[g[1]], g[0] == "not") for j, (_, _, _, _, g) in enumerate(TABLE) if g is not None]
_UNITS = np.array([SIGNAL_UNITS[n] for n in SIGNALS])
_REL = np.array([n in RELATIVE for n in SIGNALS])
_MAXOFF = np.array([MAX_OFFSET[n] for n in SIGNALS])
QUANTILES = np.array([NEUTRAL_QUANTILE[n] for n in SIGNALS])  # (N_SIGNALS,) the neutral's quantile per measure

# 68-point left/right mirror (a landmark's counterpart on the other side of the face).
MIRROR_68 = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                      26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                      27, 28, 29, 30, 35, 34, 33, 32, 31,
                      45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                      54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
                      64, 63, 62, 61, 60, 67, 66, 65])
MIRROR_NAMES = np.array([INDEX[n.replace("Left", "#").replace("Right", "Left").replace("#", "Right")]
                         for n in ARKIT_NAMES])  # coefficient index of each name's mirror image


# raw_signals' building blocks: the point pairs whose 3D distances it needs, and the measures that are linear in the
# points' x and y (over the face size), as one (68 * 2, N_SIGNALS) matrix.
_PAIRS = np.array([(36, 45), (37, 41), (38, 40), (36, 39), (43, 47), (44, 46), (42, 45), (61, 67), (62, 66),
                   (63, 65)])


def _linear_measures() -> np.ndarray:
    w = np.zeros((68, 2, N_SIGNALS))  # [point, x|y, signal]

    def add(sig: str, axis: int, points: list[int], weight: float) -> None:
        for j in points:
            w[j, axis, SIG[sig]] += weight / len(points)

    mid = [27, 28, 29, 30, 33]
    for sig, low, corners in (("lid_r", [40, 41], [36, 39]), ("lid_l", [46, 47], [42, 45])):
        add(sig, 1, low, 1.0)
        add(sig, 1, corners, -1.0)
    add("jaw", 1, [33], 1.0)
    add("jaw", 1, [8], -1.0)
    for sig, corner in (("corner_r", 48), ("corner_l", 54)):
        add(sig, 1, [corner], 1.0)
        add(sig, 1, [33], -1.0)
    mouth = list(range(48, 68))  # a corner's stretch: its distance from the mouth's own centre (a sideways mouth
    add("out_r", 0, mouth, 1.0)  # moves both and stretches neither)
    add("out_r", 0, [48], -1.0)
    add("out_l", 0, [54], 1.0)
    add("out_l", 0, mouth, -1.0)
    add("mouth_x", 0, list(range(48, 68)), 1.0)
    add("mouth_x", 0, mid, -1.0)
    add("jaw_x", 0, [8], 1.0)
    add("jaw_x", 0, mid, -1.0)
    add("brow_in", 1, [20, 21, 22, 23], 1.0)
    add("brow_in", 1, [39, 42], -1.0)
    add("brow_r", 1, list(range(17, 22)), 1.0)
    add("brow_r", 1, [36, 39], -1.0)
    add("brow_l", 1, list(range(22, 27)), 1.0)
    add("brow_l", 1, [42, 45], -1.0)
    add("brow_out_r", 1, [17, 18], 1.0)
    add("brow_out_r", 1, [36], -1.0)
    add("brow_out_l", 1, [25, 26], 1.0)
    add("brow_out_l", 1, [45], -1.0)
    return w.reshape(136, N_SIGNALS)


_LINEAR = _linear_measures()
# the jaw's share in the corner and width measures (times the lip gap)
_GAP_TERM = np.zeros(N_SIGNALS)
_GAP_TERM[[SIG["corner_r"], SIG["corner_l"]]] = JAW_CORNER_DROP
_GAP_TERM[[SIG["out_r"], SIG["out_l"]]] = -JAW_WIDTH_GAIN


def raw_signals(points: np.ndarray) -> np.ndarray:
    """Model-space landmarks ``(N, 68, 3)`` (y up, x toward the subject's left) -> the measures ``(N, N_SIGNALS)``
    float64 in ``SIGNALS`` order (lengths over the outer-eye-corner distance |p36-p45|; eyes: the 3D eye aspect
    ratio ``mean(|p37-p41|, |p38-p40|) / |p36-p39|``; the lip gap the mean of |p61-p67|, |p62-p66|, |p63-p65|;
    vertical measures on y; the mouth and chin sideways on x against the nose line 27-30, 33, the corners' stretch
    against the mouth's centre; see ``_linear_measures``)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 68, 3)
    diff = p[:, _PAIRS[:, 0]] - p[:, _PAIRS[:, 1]]
    d = np.sqrt(np.einsum("npk,npk->np", diff, diff))
    size = d[:, 0]
    gap = d[:, 7:10].mean(1) / size
    out = (p[:, :, :2].reshape(-1, 136) @ _LINEAR) / size[:, None] + gap[:, None] * _GAP_TERM
    out[:, SIG["eye_r"]] = (d[:, 1] + d[:, 2]) / 2 / d[:, 3]
    out[:, SIG["eye_l"]] = (d[:, 4] + d[:, 5]) / 2 / d[:, 6]
    out[:, SIG["gap"]] = gap
    return out


_BASES: dict[int, tuple[Any, tuple]] = {}


def _float64_basis(basis: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(u (204,), W^T (50, 204), W_ext^T (N_EXT, 204) | None) in float64, made once per basis."""
    hit = _BASES.get(id(basis))
    if hit is None or hit[0] is not basis:
        u, w = basis.flat()
        we = basis.flat_ext()
        hit = _BASES[id(basis)] = (basis, (u.astype(np.float64), np.ascontiguousarray(w.T, np.float64),
                                           None if we is None else np.ascontiguousarray(we.T, np.float64)))
    return hit[1]


def model_points(basis: Any, params: np.ndarray, ext: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 68 model-space landmarks of each face ``(N, 68, 3)`` and of its identity alone (expression and ``ext``
    set to 0: the prior neutral), from ``basis`` (``MorphableModel.sparse``), params (N, 62), ext (N, N_EXT)|None."""
    params = np.asarray(params, dtype=np.float64).reshape(-1, 62)
    u, wt, wet = _float64_basis(basis)
    n = params.shape[0]
    coeff = np.empty((2 * n, 50))
    coeff[:n] = params[:, 12:62]
    coeff[n:, :40] = params[:, 12:52]
    coeff[n:, 40:] = 0.0
    s = coeff @ wt + u
    if ext is not None and wet is not None:
        s[:n] += np.asarray(ext, dtype=np.float64).reshape(n, -1) @ wet
    return s[:n].reshape(n, 68, 3), s[n:].reshape(n, 68, 3)


def clamp_offset(offset: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """A learned neutral offset ``(..., N_SIGNALS)`` (measure units) limited to ``MAX_OFFSET`` of each unit (eyes:
    of the prior aspect)."""
    lim = np.where(_REL, np.abs(prior) * _MAXOFF, _UNITS * _MAXOFF)
    return np.clip(offset, -lim, lim)


def units(prior: np.ndarray) -> np.ndarray:
    """The full-scale unit of each measure (``SIGNAL_UNITS``; eyes: the prior aspect), broadcast like ``prior``."""
    return np.where(_REL, np.abs(prior), _UNITS)


def activations(signals: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Measures and their neutral ``(N, N_SIGNALS)`` -> activations (0 at neutral, 1 at full scale; eyes: closure)."""
    s = np.asarray(signals, dtype=np.float64)
    n = np.asarray(neutral, dtype=np.float64)
    rel = (n - s) / np.maximum(np.abs(n), 1e-6)  # eye closure: 1 - aspect / neutral
    return np.where(_REL, rel, (s - n) / _UNITS)


def coefficients(act: np.ndarray) -> np.ndarray:
    """Activations ``(N, N_SIGNALS)`` -> the 52 coefficients ``(N, N_BLEND)`` float32 in [0, 1] (``TABLE``, the soft
    knees of ``SOFT_KNEE``; names not estimated are 0)."""
    act = np.asarray(act, dtype=np.float64).reshape(-1, N_SIGNALS)
    x = act @ _W - _LO
    v = np.clip(x / (_HI - _LO), 0.0, 1.0)
    if _SOFT_ROWS.size:
        v[:, _SOFT_ROWS] = np.minimum(_SOFT_S * np.logaddexp(0.0, x[:, _SOFT_ROWS] / _SOFT_S) / _SOFT_SPAN, 1.0)
    out = np.zeros((act.shape[0], N_BLEND), np.float32)
    out[:, _COLS] = v
    for j, src, invert in _GATES:
        g = out[:, src]
        out[:, _COLS[j]] *= (1.0 - g) if invert else g
    return out


def blendshapes(basis: Any, params: np.ndarray, ext: np.ndarray | None = None,
                offsets: np.ndarray | None = None) -> np.ndarray:
    """The 52 coefficients ``(N, N_BLEND)`` float32 of faces without history (photos): the neutral is each face's
    identity with its expression at 0, plus ``offsets`` (N, N_SIGNALS) learned by a track, when given."""
    pts, prior_pts = model_points(basis, params, ext)
    sig, prior = raw_signals(pts), raw_signals(prior_pts)
    neutral = prior if offsets is None else prior + clamp_offset(np.asarray(offsets), prior)
    return coefficients(activations(sig, neutral))


def as_dict(values: np.ndarray | None, digits: int | None = None) -> dict[str, float] | None:
    """(N_BLEND,) coefficients -> ``{ARKit name: value}`` in ``ARKIT_NAMES`` order (rounded to ``digits``)."""
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64).reshape(N_BLEND)
    return {k: (round(float(x), digits) if digits is not None else float(x)) for k, x in zip(ARKIT_NAMES, v)}


# --- a rig of our own mesh driven by the ARKit names (the page's 3D view "from blendshapes") ---------------------
# ARKit name -> ({ext component: direction}, signal, target activation): the ext combination that moves ``signal`` by
# ``target`` activation units from the mean face (for the eyes: closure), so that the estimator reads ~the value back.
# Names the extension cannot make (brows, a sideways jaw or mouth, closed lips over an open jaw) are not rigged.
# The jaw's row also moves the corners down and out as a real jaw does (``JAW_CORNER_DROP``, ``JAW_WIDTH_GAIN``), so
# that an open jaw is not read as a smile or a pucker.
_JAW_HOLDS = {"corner_l": "mouth_corner_up_l", "corner_r": "mouth_corner_up_r", "out_l": "mouth_corner_out_l",
              "out_r": "mouth_corner_out_r"}
RIG: tuple[tuple[str, dict[str, float], str, float], ...] = (
    ("eyeBlinkLeft", {"eye_close_l": 1.0}, "eye_l", 0.80),
    ("eyeBlinkRight", {"eye_close_r": 1.0}, "eye_r", 0.80),
    ("eyeWideLeft", {"eye_close_l": -1.0}, "eye_l", -0.40),
    ("eyeWideRight", {"eye_close_r": -1.0}, "eye_r", -0.40),
    ("jawOpen", {"jaw_open": 1.0}, "gap", 1.0),
    ("mouthSmileLeft", {"mouth_corner_up_l": 1.0}, "corner_l", 1.0),
    ("mouthSmileRight", {"mouth_corner_up_r": 1.0}, "corner_r", 1.0),
    ("mouthFrownLeft", {"mouth_corner_up_l": -1.0}, "corner_l", -1.0),
    ("mouthFrownRight", {"mouth_corner_up_r": -1.0}, "corner_r", -1.0),
    ("mouthStretchLeft", {"mouth_corner_out_l": 1.0}, "out_l", 1.0),
    ("mouthStretchRight", {"mouth_corner_out_r": 1.0}, "out_r", 1.0),
    ("mouthPucker", {"mouth_corner_out_l": -1.0, "mouth_corner_out_r": -1.0}, "out_l", -1.0),
)


def ext_rig(basis: Any) -> np.ndarray:
    """``(N_EXT, N_BLEND)`` float32: the extended expression that shows each rigged ARKit name at value 1 on the
    model's mean face (``ext = rig @ blendshapes``; unrigged names have zero columns), scaled from the measures'
    response to each ext direction on the mean face (``RIG``)."""
    from model.expression_ext import EXT_NAMES, N_EXT

    u, wt, wet = _float64_basis(basis)
    if wet is None:
        return np.zeros((N_EXT, N_BLEND), np.float32)
    base = raw_signals(u.reshape(1, 68, 3))

    def response(direction: np.ndarray) -> np.ndarray:  # activations per unit of an ext direction
        return activations(raw_signals((u + direction @ wet).reshape(1, 68, 3)), base)[0]

    rig = np.zeros((N_EXT, N_BLEND))
    for name, combo, sig, target in RIG:
        direction = np.zeros(N_EXT)
        for comp, w in combo.items():
            direction[EXT_NAMES.index(comp)] = w
        if name == "jawOpen":
            for held, comp in _JAW_HOLDS.items():
                c = np.zeros(N_EXT)
                c[EXT_NAMES.index(comp)] = 1.0
                direction = direction - c * response(direction)[SIG[held]] / response(c)[SIG[held]]
        rig[:, INDEX[name]] = direction * (target / response(direction)[SIG[sig]])
    return rig.astype(np.float32)
