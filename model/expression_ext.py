"""The extended expression: blendshapes the 3DMM's 10 PCA components lack (closed eyes, lopsided mouths, wide jaws).

The 10 expression components of the BFM cannot close an eye (the 68-point eye aspect ratio stays within 0.25-0.30
for +-3 std of each) nor move one mouth corner alone. ``EXT_NAMES`` lists the extra components, built once here from
the model's own mean geometry (no data): each is a displacement field on the 68 landmarks in model units (y up),
carried to every dense vertex set by the same linear spread that makes the dense grid follow the landmarks
(``model.dense_fit``). Decoding adds ``ext @ w_ext`` to the shape: ``S = u + W_shp a + W_exp e + W_ext x``.

Components (``x``, one value each, 0 = the mean face; sides are the subject's own: "right" is the eye of landmarks
36-41 and the mouth corner 48, on the image's left for a frontal face):

- ``eye_close_r``, ``eye_close_l``: 1 = the upper lid lies on the lower lid (gap 0, eye aspect ratio 0), following the
  mean eyeball; 0.5 half closed; negative values open the eye wider than the mean (-0.5 = gap x 1.5).
- ``mouth_corner_up_r``, ``mouth_corner_up_l``: that mouth corner (and its lip neighbours, less) raised by 0.15 x the
  mean outer mouth width per unit (a one-sided smile); negative lowers it (a frown).
- ``mouth_corner_out_r``, ``mouth_corner_out_l``: that corner pulled outward along the mouth by 0.15 x the mouth
  width per unit (a stretch); negative pulls it inward (a pucker).
- ``jaw_open``: the lower lip, chin and jaw dropped by 0.3 x the mouth width per unit, beyond what the PCA opens.
- ``lips_part`` (``ext-v2``): the inner lip line alone opened by 0.1 x the mouth width per unit, the upper and lower
  inner lips (61-63, 65-67) each taking half, the outer lips, corners and jaw held; negative closes it (fuller lips,
  lips pressed together). The BFM's lips are thinner than most people's: with the 10 PCA components and the jaw, a
  fit whose outer lips match a face leaves its inner lips apart by a few pixels when the mouth is closed, and the
  inner gap then grows more slowly than the face's (fitting MediaPipe's own lips on the six training videos: the
  fitted inner opening's slope on MediaPipe's 0.88, correlation 0.94; with this component and the stage's ridge 0.92
  and 0.99, the labels themselves 0.93-1.00; bench/RESULTS.md, "The lips' own opening").

``EXT_VERSION`` names this definition; every output that carries ``ext`` carries the version with it.
"""
from __future__ import annotations

import numpy as np

EXT_VERSION = "ext-v2"  # ext-v1: the first seven components, without lips_part
EXT_NAMES: tuple[str, ...] = ("eye_close_r", "eye_close_l", "mouth_corner_up_r", "mouth_corner_up_l",
                              "mouth_corner_out_r", "mouth_corner_out_l", "jaw_open", "lips_part")
N_EXT = len(EXT_NAMES)

# eyes: (outer corner, upper lid a, upper lid b, inner corner, lower lid b, lower lid a) of the 68-point convention
RIGHT_EYE = (36, 37, 38, 39, 40, 41)
LEFT_EYE = (45, 44, 43, 42, 47, 46)  # mirrored order: outer corner first, the upper lid point above each lower one
UPPER_SHARE = 0.8  # how much of a closing gap the upper lid travels (the lower lid does the rest)
CORNER_UNIT = 0.15  # corner moves per unit, in mean outer mouth widths
JAW_UNIT = 0.3  # jaw drop per unit, in mean outer mouth widths
# mouth corner and its neighbours with the share of the corner's motion they take: right side (48), left (54)
CORNER_R = {48: 1.0, 60: 0.9, 49: 0.5, 59: 0.5, 61: 0.35, 67: 0.35, 50: 0.2, 58: 0.2}
CORNER_L = {54: 1.0, 64: 0.9, 53: 0.5, 55: 0.5, 63: 0.35, 65: 0.35, 52: 0.2, 56: 0.2}
# jaw opening: the share of the lower inner lip's drop each point takes
JAW = {66: 1.0, 65: 1.0, 67: 1.0, 57: 1.0, 56: 0.95, 58: 0.95, 55: 0.7, 59: 0.7, 8: 0.85, 7: 0.75, 9: 0.75,
       6: 0.55, 10: 0.55, 5: 0.35, 11: 0.35, 4: 0.15, 12: 0.15}
LIPS_UNIT = 0.1  # inner lip gap opened per unit of lips_part, in mean outer mouth widths
# the inner lips' share of the opening: each lip (upper 61-63, lower 65-67) moves half of it, the middle point most
LIPS_UPPER = {61: 0.7, 62: 1.0, 63: 0.7}
LIPS_LOWER = {67: 0.7, 66: 1.0, 65: 0.7}


def ext_vector(**values: float) -> np.ndarray:
    """(1, N_EXT) float32 extension with the named components set, the others 0: ``ext_vector(eye_close_r=1.0)``."""
    e = np.zeros((1, N_EXT), np.float32)
    for name, v in values.items():
        if name not in EXT_NAMES:
            raise ValueError(f"unknown extension component '{name}' (expected one of {', '.join(EXT_NAMES)})")
        e[0, EXT_NAMES.index(name)] = v
    return e


def ext_landmark_basis(u: np.ndarray) -> np.ndarray:
    """The extension's basis on the 68 landmarks: ``u (68, 3)`` mean shape, model units -> ``(68, 3, N_EXT)`` float32.

    Built from the geometry alone (see the module docstring for each component and its unit).
    """
    u = np.asarray(u, dtype=np.float64).reshape(68, 3)
    w = np.zeros((68, 3, N_EXT))
    for k, eye in enumerate((RIGHT_EYE, LEFT_EYE)):
        _, up_a, up_b, _, lo_b, lo_a = eye
        for up, lo in ((up_a, lo_a), (up_b, lo_b)):
            gap = u[lo] - u[up]  # upper lid -> lower lid, 3D (follows the eyeball's curve between them)
            w[up, :, k] = UPPER_SHARE * gap
            w[lo, :, k] = -(1 - UPPER_SHARE) * gap
    width = float(np.linalg.norm(u[54] - u[48]))
    along = (u[54] - u[48]) / width  # subject's right corner -> left corner
    up_dir = np.array([0.0, 1.0, 0.0])
    for k, (pts, out_dir) in enumerate(((CORNER_R, -along), (CORNER_L, along))):
        for j, share in pts.items():
            w[j, :, 2 + k] = share * CORNER_UNIT * width * up_dir
            w[j, :, 4 + k] = share * CORNER_UNIT * width * out_dir
    for j, share in JAW.items():
        w[j, 1, 6] = -share * JAW_UNIT * width
    for lip, sign in ((LIPS_UPPER, 1.0), (LIPS_LOWER, -1.0)):
        for j, share in lip.items():
            w[j, 1, 7] = sign * 0.5 * share * LIPS_UNIT * width
    return w.astype(np.float32)


def eye_aspect_ratio(lm: np.ndarray) -> np.ndarray:
    """(N, 68, 2|3) points -> (N, 2) eye aspect ratio of the subject's right eye (36-41) and left eye (42-47).

    ``((|p37-p41| + |p38-p40|) / 2) / |p36-p39|`` (and 42-47 alike): about 0.28 open, 0 closed.
    """
    p = np.asarray(lm, dtype=np.float64)[..., :2]
    d = lambda a, b: np.linalg.norm(p[:, a] - p[:, b], axis=-1)  # noqa: E731
    right = (d(37, 41) + d(38, 40)) / 2 / d(36, 39)
    left = (d(43, 47) + d(44, 46)) / 2 / d(42, 45)
    return np.stack([right, left], axis=1)


def mouth_openness(lm: np.ndarray) -> np.ndarray:
    """(N, 68, 2|3) points -> (N,) inner-lip gap over the inner mouth width, ``|p62-p66| / |p60-p64|``."""
    p = np.asarray(lm, dtype=np.float64)[..., :2]
    return np.linalg.norm(p[:, 62] - p[:, 66], axis=-1) / np.linalg.norm(p[:, 60] - p[:, 64], axis=-1)
