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
MOUTH_SIZE = (48, 48)
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
MOUTH = PartSpec("mouth", tuple(range(48, 68)), (48, 54), MOUTH_SIZE, (10.0, 17.0))
PARTS = (RIGHT_EYE, LEFT_EYE, MOUTH)
# the mouth's mirror (subject's right <-> left), by position in MOUTH.points: used to flip mouth patches in training
MOUTH_MIRROR = np.array([6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 16, 15, 14, 13, 12, 19, 18, 17])


def part_basis(anchor_a: np.ndarray, anchor_b: np.ndarray, across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anchor units in the frame: (ex, ey) (N, 2) each, so that a point at units (ux, uy) is at frame px
    ``anchor_a + ux * ex + uy * ey``. ``ex = b - a``; ``ey`` is as long, perpendicular to ``across`` (the face's
    left-to-right vector in the frame: subject's right eye -> left eye), pointing down the face, so a mirrored part
    (anchors running right to left) is reflected rather than turned upside down."""
    a = np.asarray(anchor_a, np.float64).reshape(-1, 2)
    ex = np.asarray(anchor_b, np.float64).reshape(-1, 2) - a
    r = np.asarray(across, np.float64).reshape(-1, 2)
    down = np.stack([-r[:, 1], r[:, 0]], 1)
    ey = down * (np.sqrt((ex * ex).sum(1)) / np.maximum(np.sqrt((down * down).sum(1)), 1e-9))[:, None]
    return ex, ey


def basis_affine(anchor_a: np.ndarray, ex: np.ndarray, ey: np.ndarray, spec: PartSpec) -> np.ndarray:
    """Frame -> patch affine maps (N, 2, 3) of a part whose anchor units are (ex, ey) from ``anchor_a``:
    ``patch = origin + ANCHOR_GAP * [ex | ey]^-1 (x - a)``."""
    a = np.asarray(anchor_a, np.float64).reshape(-1, 2)
    det = ex[:, 0] * ey[:, 1] - ey[:, 0] * ex[:, 1]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    lin = np.stack([np.stack([ey[:, 1], -ey[:, 0]], 1), np.stack([-ex[:, 1], ex[:, 0]], 1)], 1) \
        * (ANCHOR_GAP / det)[:, None, None]
    off = np.array(spec.origin)[None] - np.einsum("nij,nj->ni", lin, a)
    return np.concatenate([lin, off[:, :, None]], axis=2)


def part_frames(landmarks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every part's anchor units in the frame from (N, 68, 2+) landmarks: name -> (a, ex, ey), (N, 2) each."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    n = len(lm)
    across = np.tile(lm[:, 45] - lm[:, 36], (len(PARTS), 1))
    a = np.concatenate([lm[:, p.anchors[0]] for p in PARTS])
    ex, ey = part_basis(a, np.concatenate([lm[:, p.anchors[1]] for p in PARTS]), across)
    return {p.name: (a[i * n:(i + 1) * n], ex[i * n:(i + 1) * n], ey[i * n:(i + 1) * n]) for i, p in enumerate(PARTS)}


def part_affines(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every part's frame -> patch affines from (N, 68, 2+) landmarks in frame px: name -> (N, 2, 3)."""
    frames = part_frames(landmarks)
    return {p.name: basis_affine(*frames[p.name], p) for p in PARTS}


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
    """``part_frames`` and ``basis_affine`` of every part in one pass (the stage's per-frame path): (N, 68, 2+)
    landmarks frame px -> frames (len(PARTS), N, 3, 2) (a, ex, ey) and affines (len(PARTS), N, 2, 3) frame -> patch,
    in ``PARTS`` order."""
    lm = np.ascontiguousarray(np.asarray(landmarks, np.float64)[..., :2])
    frames = np.empty((len(PARTS), len(lm), 3, 2))
    affines = np.empty((len(PARTS), len(lm), 2, 3))
    _frames_kernel(lm, _ANCHOR_A, _ANCHOR_B, _ORIGINS, ANCHOR_GAP, frames, affines)
    return frames, affines


def units_to_frame(units: np.ndarray, a: np.ndarray, ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """(N, P, 2) anchor units -> (N, P, 2) frame px for a part's (a, ex, ey) (``part_frames``)."""
    u = np.asarray(units, np.float64)
    return a[:, None] + u[..., :1] * ex[:, None] + u[..., 1:] * ey[:, None]


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
