"""Eye and mouth patches: where the expression stage looks, and how its points map back to the frame.

Each patch is the frame warped by an affine map fixed by two anchor landmarks (the eye's or the mouth's corners), so
the patch shows the part at one size and upright whatever the face's size and roll. The subject's left eye is
mirrored (its outer corner on the patch's left, like the right eye's), so one network reads both eyes.

Patch coordinates: pixels of the patch, x right, y down. Points are given to and returned by the network in
"anchor units": patch pixels over the anchors' distance in the patch (``ANCHOR_GAP``), origin at the first anchor.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

EYE_SIZE = (32, 48)  # (H, W) pixels
MOUTH_SIZE = (56, 48)  # tall enough for a wide-open mouth: lips from -0.86 to +1.14 corner widths
ANCHOR_GAP = 28.0  # the two anchors' distance in the patch, pixels


@dataclass(frozen=True)
class PartSpec:
    """One part: the 68-point indices it predicts (``points``), its two anchors (first -> second runs along patch x),
    the patch size (H, W) and where the first anchor sits in the patch (x, y) pixels."""

    name: str
    points: tuple[int, ...]
    anchors: tuple[int, int]
    size: tuple[int, int]
    origin: tuple[float, float]


RIGHT_EYE = PartSpec("eye_r", (36, 37, 38, 39, 40, 41), (36, 39), EYE_SIZE, (10.0, 17.0))
# mirrored: outer corner 45 first; point order matches RIGHT_EYE's role by role (outer, upper a, upper b, inner, ...)
LEFT_EYE = PartSpec("eye_l", (45, 44, 43, 42, 47, 46), (45, 42), EYE_SIZE, (10.0, 17.0))
MOUTH = PartSpec("mouth", tuple(range(48, 68)), (48, 54), MOUTH_SIZE, (10.0, 24.0))
PARTS = (RIGHT_EYE, LEFT_EYE, MOUTH)
# the mouth's mirror (subject's right <-> left), by position in MOUTH.points: used to flip mouth patches in training
MOUTH_MIRROR = np.array([6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 16, 15, 14, 13, 12, 19, 18, 17])


_ANCHOR_A = np.array([p.anchors[0] for p in PARTS])
_ANCHOR_B = np.array([p.anchors[1] for p in PARTS])
_ORIGINS = np.array([p.origin for p in PARTS], np.float64)


@nb.njit(cache=True)
def _frames_kernel(lm, anchor_a, anchor_b, origins, gap, frames, affines):  # pragma: no cover (numba)
    for i in range(lm.shape[0]):
        dx = -(lm[i, 45, 1] - lm[i, 36, 1])  # down the face: the across vector (36 -> 45) turned by +90 degrees
        dy = lm[i, 45, 0] - lm[i, 36, 0]
        dn = max(np.sqrt(dx * dx + dy * dy), 1e-9)
        for p in range(anchor_a.shape[0]):
            ax, ay = lm[i, anchor_a[p], 0], lm[i, anchor_a[p], 1]
            exx, exy = lm[i, anchor_b[p], 0] - ax, lm[i, anchor_b[p], 1] - ay
            k = np.sqrt(exx * exx + exy * exy) / dn
            eyx, eyy = dx * k, dy * k
            frames[p, i, 0, 0], frames[p, i, 0, 1] = ax, ay
            frames[p, i, 1, 0], frames[p, i, 1, 1] = exx, exy
            frames[p, i, 2, 0], frames[p, i, 2, 1] = eyx, eyy
            det = exx * eyy - eyx * exy
            if abs(det) < 1e-12:
                det = 1e-12
            s = gap / det
            l00, l01, l10, l11 = eyy * s, -eyx * s, -exy * s, exx * s
            affines[p, i, 0, 0], affines[p, i, 0, 1] = l00, l01
            affines[p, i, 1, 0], affines[p, i, 1, 1] = l10, l11
            affines[p, i, 0, 2] = origins[p, 0] - (l00 * ax + l01 * ay)
            affines[p, i, 1, 2] = origins[p, 1] - (l10 * ax + l11 * ay)


def frames_and_affines(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every part's anchor frame and frame -> patch affine in one pass (see ``part_frames``, ``part_affines``):
    (N, 68, 2+) landmarks frame px -> frames (len(PARTS), N, 3, 2) (a, ex, ey) and affines (len(PARTS), N, 2, 3),
    in ``PARTS`` order."""
    lm = np.ascontiguousarray(np.asarray(landmarks, np.float64)[..., :2])
    frames = np.empty((len(PARTS), len(lm), 3, 2))
    affines = np.empty((len(PARTS), len(lm), 2, 3))
    _frames_kernel(lm, _ANCHOR_A, _ANCHOR_B, _ORIGINS, ANCHOR_GAP, frames, affines)
    return frames, affines


def part_frames(landmarks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every part's anchor units in the frame from (N, 68, 2+) landmarks: name -> (a, ex, ey), (N, 2) each: a point
    at units (ux, uy) is at frame px ``a + ux * ex + uy * ey``; ``ex`` runs from the first anchor to the second,
    ``ey`` is as long, perpendicular to the face's left-to-right vector (36 -> 45) and points down the face, so a
    mirrored part (anchors running right to left) is reflected rather than turned upside down."""
    frames, _ = frames_and_affines(landmarks)
    return {p.name: (frames[i, :, 0], frames[i, :, 1], frames[i, :, 2]) for i, p in enumerate(PARTS)}


def part_affines(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every part's frame -> patch affines from (N, 68, 2+) landmarks in frame px: name -> (N, 2, 3),
    ``patch = origin + ANCHOR_GAP * [ex | ey]^-1 (x - a)``."""
    _, affines = frames_and_affines(landmarks)
    return {p.name: affines[i] for i, p in enumerate(PARTS)}


def units_to_frame(units: np.ndarray, a: np.ndarray, ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """(N, P, 2) anchor units -> (N, P, 2) frame px for a part's (a, ex, ey) (``part_frames``): (N, 2) each, or
    (N, P, 2) to give every point its own part's frame (several parts at once)."""
    u = np.asarray(units, np.float64)
    if a.ndim == 2:
        a, ex, ey = a[:, None], ex[:, None], ey[:, None]
    return a + u[..., :1] * ex + u[..., 1:] * ey


def cut(gray: np.ndarray, affine: np.ndarray, spec: PartSpec) -> np.ndarray:
    """One patch (H, W) uint8 of a gray frame through a frame -> patch affine (2, 3)."""
    h, w = spec.size
    return cv2.warpAffine(gray, affine.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def to_units(points_px: np.ndarray, spec: PartSpec) -> np.ndarray:
    """Patch pixels (..., 2) -> anchor units (origin at the first anchor, ``ANCHOR_GAP`` px = 1)."""
    return (np.asarray(points_px, np.float64) - np.array(spec.origin)) / ANCHOR_GAP


def apply_affine(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2, 3) affines, (N, P, 2) points -> (N, P, 2)."""
    pts = np.asarray(pts, np.float64)
    return pts @ affine[:, :, :2].transpose(0, 2, 1) + affine[:, None, :, 2]
